"""Backbones side by side: GRU4Rec-style, LSTM, SASRec-style and BERT4Rec-style, each from scratch and
pretrained with its natural objective, beside RecBole's GRU4Rec and SASRec measured in the same run.

    python benchmarks/backbones.py ml-100k --peer-python /work/peers-venv/bin/python [--workdir W]
    python benchmarks/backbones.py beauty  --peer-python ... [--backbones gru transformer] [--no-peers]
    python benchmarks/backbones.py ml-100k --workdir W --reuse   (keep the runs an earlier call finished in W
        with the same command lines, with the wall time and memory measured then, and their test figures:
        a kept model's test split is not read again)

Every tfrec row runs the real commands (`tfrec pretrain`, `tfrec finetune`, `tfrec evaluate`) in fresh
processes with the dataset's committed config and one change, `model.backbone`, plus what the backbone's
kind implies:
- bidirectional (`transformer`): pretraining `pretrain.objective: cloze` (with the config's segment
  continuation), fine-tuning with the config's `finetune.examples`;
- causal and recurrent (`causal-transformer`, `gru`, `lstm`): pretraining `pretrain.objective:
  autoregressive` (every position predicts the next item, the config's pretraining epochs), fine-tuning
  `finetune.examples: causal` with `--causal-epochs` and `--causal-patience` (one budget for all three).
"From scratch" is the same fine-tuning from fresh weights.  Settings and epochs are chosen on validation
only (early stopping); each model's test split is read once, at the end.

The peers (`benchmarks/peers/recbole_run.py`, in RecBole's own virtual environment: see
`benchmarks/peers/README.md`) train on the same split: an atomic file written from tfrec's prepared
data, each user's last item tfrec's test item and the one before it the validation item.  Same
evaluator protocol (full ranking, history excluded); their runs stop at `--peer-max-seconds`.
Wall time and peak memory of every process are measured here; the JSON goes to
`benchmarks/results/backbones_<dataset>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, machine, measured_run, prepared_data, read_test, tfrec, write_result  # noqa: E402

DATASETS = {
    # name: (prepare arguments, local folder, config, RecBole dropout as in ../shared/ANCHORS.md)
    "beauty": (["amazon-s3rec", "--name", "Beauty"], "amazon-beauty", "configs/beauty.yaml", 0.5),
    "ml-100k": (["movielens-100k"], "ml-100k", "configs/ml-100k.yaml", 0.2),
}
BACKBONES = {  # name: (row label, bidirectional)
    "gru": ("GRU4Rec-style (gru)", False),
    "lstm": ("LSTM (lstm)", False),
    "causal-transformer": ("SASRec-style (causal-transformer)", False),
    "transformer": ("BERT4Rec-style (transformer)", True),
}
PEERS = ("GRU4Rec", "SASRec")
METRICS = ("hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20")


def settings(backbone: str, stage: str, args) -> list[str]:
    """The `--set` arguments of one backbone's run; `stage` is pretrain or finetune."""
    out = ["--set", f"model.backbone={backbone}"]
    if BACKBONES[backbone][1]:
        return out + (["--set", "pretrain.objective=cloze"] if stage == "pretrain" else [])
    if stage == "pretrain":
        return out + ["--set", "pretrain.objective=autoregressive"]
    return out + ["--set", "finetune.examples=causal", "--set", f"finetune.epochs={args.causal_epochs}",
                  "--set", f"finetune.patience={args.causal_patience}", "--set", "finetune.validate_every=1"]


def write_atomic(data: str, folder: str, name: str) -> str:
    """RecBole's .inter file of tfrec's leave-one-out split, so that RecBole's own leave-one-out
    (time order) gives the same training, validation and test items."""
    import pandas as pd

    parts = [pd.read_parquet(os.path.join(data, "splits", "loo", f"{p}.parquet")).assign(part=i)
             for i, p in enumerate(("train", "valid", "test"))]
    df = pd.concat(parts, ignore_index=True)
    df["position"] = range(len(df))
    df = df.sort_values(["user_index", "part", "position"], kind="stable")
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    path = os.path.join(folder, name, f"{name}.inter")
    with open(path, "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for t, (u, i) in enumerate(zip(df["user_id"], df["item_id"])):
            f.write(f"{u}\t{i}\t{t}\n")
    return path


def summary(work: str, name: str) -> dict:
    run = json.load(open(os.path.join(work, name, "run.json")))["summary"]
    state = json.load(open(os.path.join(work, name, "validation.json")))
    epochs = state.get("last_epoch") or max(int(e) for e in state["epochs"])
    params = json.load(open(os.path.join(work, name, "model", "config.json")))["parameters"]
    return {"best_epoch": run["best_epoch"], "epochs_run": epochs, "valid": run["valid"], "parameters": params}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    ap.add_argument("--config", help="run config (default: the dataset's committed config)")
    ap.add_argument("--workdir", help="where runs go (default: a temporary folder)")
    ap.add_argument("--reuse", action="store_true", help="keep runs finished in WORKDIR with the same command line")
    ap.add_argument("--causal-epochs", type=int, default=100, help="most fine-tuning epochs of causal backbones")
    ap.add_argument("--causal-patience", type=int, default=10, help="their early stopping patience (validations)")
    ap.add_argument("--peer-python", help="python of RecBole's virtual environment (benchmarks/peers/README.md)")
    ap.add_argument("--no-peers", action="store_true", help="tfrec rows only")
    ap.add_argument("--peer-max-seconds", type=float, default=1200.0, help="wall-clock cap of each peer run")
    args = ap.parse_args()
    if not args.no_peers and not (args.peer_python and os.path.exists(args.peer_python)):
        sys.exit("the peers need --peer-python, the python of RecBole's virtual environment "
                 "(benchmarks/peers/README.md), or pass --no-peers")
    prep_args, folder, config_file, peer_dropout = DATASETS[args.dataset]
    config_file = args.config or config_file
    config = os.path.join(REPO, config_file)
    work = args.workdir or tempfile.mkdtemp(prefix=f"tfrec-backbones-{args.dataset}-")
    os.makedirs(work, exist_ok=True)
    data = prepared_data(work, prep_args, folder, args.reuse)
    common = ["--data", data, "--config", config, "--verbose", "2", "--overwrite"]
    runs, tests, info = {}, {}, {}
    for backbone in args.backbones:
        pre, fine, scratch = f"{backbone}-pretrain", f"{backbone}-pretrained", f"{backbone}-scratch"
        runs[scratch] = measured_run(scratch, tfrec("finetune", "--task", "next-item", "--from-scratch", "--out",
                                                    f"{work}/{scratch}", *common, *settings(backbone, "finetune", args)),
                                     work, args.reuse)
        runs[pre] = measured_run(pre, tfrec("pretrain", "--out", f"{work}/{pre}", *common,
                                            *settings(backbone, "pretrain", args)), work, args.reuse)
        runs[fine] = measured_run(fine, tfrec("finetune", "--task", "next-item", "--pretrained", f"{work}/{pre}",
                                              "--out", f"{work}/{fine}", *common, *settings(backbone, "finetune", args)),
                                  work, args.reuse)
        for name in (pre, scratch, fine):
            info[name] = summary(work, name)
    for name in [k for k in runs if not k.endswith("-pretrain")]:  # a kept model keeps its one test read
        tests[name] = read_test(work, name, ["--model", f"{work}/{name}", "--data", data],
                                bool(runs[name].get("reused")))["metrics"]
    peers = {}
    if not args.no_peers:
        name = {"ml-100k": "ml100k"}.get(args.dataset, args.dataset)
        write_atomic(data, os.path.join(work, "recbole"), name)
        for model in PEERS:
            out = os.path.join(work, f"peer_{model}.json")
            run = measured_run(f"peer-{model}", [args.peer_python, os.path.join(REPO, "benchmarks", "peers",
                                                                                 "recbole_run.py"),
                                                 "--data", os.path.join(work, "recbole"), "--name", name, "--model",
                                                 model, "--dropout", str(peer_dropout), "--max-seconds",
                                                 str(args.peer_max_seconds), "--out", out], work, args.reuse)
            peers[model] = dict(json.load(open(out)), seconds=run["seconds"], peak_rss_mb=run["peak_rss_mb"])

    result = {"config": config_file, "causal_epochs": args.causal_epochs, "causal_patience": args.causal_patience,
              "peer_max_seconds": args.peer_max_seconds, "test": tests, "runs": runs, "runs_info": info,
              "peers": peers, "workdir": work}
    path = write_result("backbones", args.dataset + (
        f"-{os.path.splitext(os.path.basename(config_file))[0]}" if args.config else ""), result)
    print(f"\n## {args.dataset}: leave-one-out, full ranking, history excluded, test split ({machine()})\n")
    print("| model | HR@5 | NDCG@5 | HR@10 | NDCG@10 | HR@20 | NDCG@20 | epochs (best) | wall s | peak RSS MB | params |")
    print("|---|" + "---:|" * 10)
    for model, p in peers.items():
        print(f"| RecBole {model}{' (capped)' if p['capped'] else ''} | "
              + " | ".join(f"{p['test'][m]:.4f}" for m in METRICS)
              + f" | {p['epochs_run']} ({p['best_epoch']}) | {p['seconds']:.0f} | {p['peak_rss_mb']:.0f} | "
                f"{p['parameters']:,} |")
    for backbone in args.backbones:
        label = BACKBONES[backbone][0]
        for kind, name in (("from scratch", f"{backbone}-scratch"), ("pretrained + fine-tuned", f"{backbone}-pretrained")):
            t, i = tests[name], info[name]
            seconds = runs[name]["seconds"] + (runs[f"{backbone}-pretrain"]["seconds"] if kind != "from scratch" else 0)
            peak = max(runs[name]["peak_rss_mb"], runs[f"{backbone}-pretrain"]["peak_rss_mb"]
                       if kind != "from scratch" else 0)
            pre = info[f"{backbone}-pretrain"]
            epochs = f"{i['epochs_run']} ({i['best_epoch']})" if kind == "from scratch" else \
                f"{pre['epochs_run']} + {i['epochs_run']} ({i['best_epoch']})"
            print(f"| tfrec {label}, {kind} | " + " | ".join(f"{t[m]:.4f}" for m in METRICS)
                  + f" | {epochs} | {seconds:.0f} | {peak:.0f} | {i['parameters']:,} |")
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
