"""One RecBole model on a leave-one-out split written by ``benchmarks/backbones.py``; runs in RecBole's own
virtual environment (see ``benchmarks/peers/README.md``), not tfrec's.

    PEER_PYTHON benchmarks/peers/recbole_run.py --data DIR --name NAME --model SASRec --out result.json
        [--dropout 0.2] [--max-seconds 1200] [--epochs 300] [--seed 0]

DIR/NAME/NAME.inter is RecBole's atomic file (user_id, item_id, timestamp), written so that each user's
last item is tfrec's test item and the one before it tfrec's validation item.  The protocol is the one
of ``../shared/ANCHORS.md``: RecBole's ``LS: valid_and_test`` in time order, full ranking over every item
with the user's history excluded, HR and NDCG at 5, 10 and 20, early stopping on validation NDCG@10
(10 validations without gain), max sequence length 50, hidden 64, 2 layers (SASRec: 2 heads, inner 256),
Adam 1e-3, batch 256, cross-entropy over the whole catalogue.  Training also stops at the first
validation after ``--max-seconds`` of wall time; the test split is read once, with the best validation
epoch's weights.  The JSON it writes holds the test and best validation figures, epochs, seconds per
epoch and the parameter count.
"""

from __future__ import annotations

import argparse
import json
import os
import time


class _OutOfTime(Exception):
    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder holding NAME/NAME.inter")
    ap.add_argument("--name", required=True)
    ap.add_argument("--model", required=True, choices=["SASRec", "GRU4Rec"])
    ap.add_argument("--out", required=True, help="result JSON")
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--max-seconds", type=float, default=1200.0)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    args.data, args.out = os.path.abspath(args.data), os.path.abspath(args.out)
    os.chdir(args.data)  # RecBole writes its log/ and log_tensorboard/ folders into the working directory
    import torch

    torch.set_num_threads(args.threads)
    # RecBole 1.2.1 saves its config beside the weights; PyTorch 2.6+ loads weights only by default.
    _load = torch.load
    torch.load = lambda *a, **k: _load(*a, **dict(k, weights_only=False))

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from recbole.utils import get_model, init_seed

    settings = {
        "data_path": args.data, "dataset": args.name, "checkpoint_dir": os.path.join(args.data, "saved"),
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": 50, "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Hit", "NDCG"], "topk": [5, 10, 20], "valid_metric": "NDCG@10",
        "train_neg_sample_args": None, "loss_type": "CE", "epochs": args.epochs, "stopping_step": 10,
        "learning_rate": 1e-3, "train_batch_size": 256, "eval_batch_size": 4096, "seed": args.seed,
        "reproducibility": True, "device": "cpu", "use_gpu": False, "show_progress": False,
        "hidden_size": 64, "embedding_size": 64, "num_layers": 2, "n_layers": 2, "n_heads": 2, "inner_size": 256,
        "hidden_dropout_prob": args.dropout, "attn_dropout_prob": args.dropout, "dropout_prob": args.dropout,
    }
    config = Config(model=args.model, config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train.dataset).to(config["device"])
    trainer = Trainer(config, model)
    started = time.time()
    curve = []

    def after_validation(epoch: int, score: float) -> None:
        curve.append({"epoch": epoch + 1, "seconds": time.time() - started, "ndcg@10": float(score)})
        if time.time() - started > args.max_seconds:
            raise _OutOfTime

    capped = False
    try:
        best_valid, best_valid_result = trainer.fit(train, valid, saved=True, show_progress=False,
                                                    callback_fn=after_validation)
    except _OutOfTime:
        capped = True
        best_valid_result = trainer.best_valid_result
    train_seconds = time.time() - started
    test_result = trainer.evaluate(test, load_best_model=True, model_file=trainer.saved_model_file,
                                   show_progress=False)
    best = max(curve, key=lambda p: p["ndcg@10"]) if curve else None
    names = {"hit": "hr", "ndcg": "ndcg"}

    def renamed(result) -> dict:
        return {f"{names[k.split('@')[0]]}@{k.split('@')[1]}": float(v) for k, v in dict(result).items()}

    out = {"model": args.model, "dataset": args.name, "test": renamed(test_result),
           "valid": renamed(best_valid_result or {}), "epochs_run": len(curve), "best_epoch": best and best["epoch"],
           "capped": capped, "max_seconds": args.max_seconds, "train_seconds": train_seconds,
           "seconds_per_epoch": train_seconds / max(len(curve), 1), "validation_curve": curve,
           "parameters": sum(p.numel() for p in model.parameters()), "dropout": args.dropout,
           "settings": {k: v for k, v in settings.items() if k not in ("data_path", "checkpoint_dir")},
           "torch": torch.__version__}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps({k: out[k] for k in ("model", "test", "epochs_run", "best_epoch", "capped", "train_seconds")}))


if __name__ == "__main__":
    main()
