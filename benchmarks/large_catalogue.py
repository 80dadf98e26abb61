"""Costs on a synthetic catalogue of 1,000,000 items, where a full softmax would not fit.

In fresh processes, each measured for wall time and peak resident memory:

1. ``tfrec data prepare``: 100,000 users x 20 interactions (items / 10 users); every item appears at least once
   (a shuffled pass over the catalogue), the rest drawn with Zipf-like popularity;
2. ``tfrec pretrain`` with the sampled softmax (``pretrain.num_sampled``, log-q corrected) for a
   fixed number of steps, validated on a sample of users (``valid_users``);
3. retrieval fine-tuning (``tfrs.tasks.Retrieval``, in-batch negatives with log-q correction) of
   the pretrained backbone for a fixed number of steps, through ``RecommenderModel`` and
   ``model.fit`` (this script's ``--stage retrieval``: the task runner would also rank all 1M
   items for every validation and test row, which is not what is measured here);
4. ``tfrec export`` of the pretrained model (brute-force scoring of all items, then top-k), and
   the latency of its ``serving_default`` signature, in process, one history per request.

    python benchmarks/large_catalogue.py [--items 1000000] [--steps 30] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import checked, machine, run_measured, tfrec, write_result  # noqa: E402

PER_USER = 20  # interactions per user; items / 10 users, so 2 interactions per item on average
SETTINGS = ["--set", "model.item_features=false", "--set", "pretrain.num_sampled=2000", "--set", "valid_users=500",
            "--set", "eval_batch_size=32", "--set", "pretrain.validate_every=1", "--batch-size", "256", "--epochs", "2"]


def synthetic(items: int, path: str, seed: int = 0) -> None:
    import pandas as pd

    rng = np.random.default_rng(seed)
    users = max(100, items // 10)
    rows = users * PER_USER
    weights = 1.0 / np.arange(1, items + 1) ** 0.9
    item = rng.choice(items, size=rows, p=weights / weights.sum())  # by popularity...
    item[rng.permutation(rows)[:items]] = rng.permutation(items)  # ...with every item placed once somewhere
    user = np.repeat(np.arange(users), PER_USER)
    ts = 1_600_000_000 + np.arange(rows, dtype=np.int64)
    pd.DataFrame({"uid": user.astype(str), "sku": item.astype(str), "ts": ts}).to_parquet(path, index=False)


def retrieval_stage(data: str, pretrained: str, steps: int) -> None:
    """Runs in its own process: `steps` steps of retrieval fine-tuning; prints seconds per step."""
    import tfrec  # noqa: F401
    import tensorflow as tf

    from tfrec.data import task_splits
    from tfrec.data.dataset import PreparedDataset
    from tfrec.models import persistence
    from tfrec.models.recommender import RecommenderModel
    from tfrec.training import task_trainer, trainer
    from tfrec.training.config import RunConfig

    config = RunConfig().updated({"model.item_features": False, "split": "loo", "tasks.batch_size": 512})
    dataset = PreparedDataset(data)
    split = task_splits.load(dataset, "loo")
    arguments = task_trainer.model_arguments("retrieval", config, dataset, split)
    backbone = trainer.build_backbone(config, dataset)
    model = RecommenderModel.built(backbone, **arguments)
    source, _ = persistence.load(persistence.resolve_model_dir(pretrained))
    backbone.set_weights(source.backbone.get_weights())
    model.head.set_weights(source.head.get_weights())
    features = task_trainer.features_of(split.train, config.model.max_len, False)
    train = task_trainer.task_dataset(features, config.tasks.batch_size, True, 0, repeat=True)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
    model.fit(train, epochs=1, steps_per_epoch=3, verbose=0)  # tracing and warm-up, not timed
    start = time.perf_counter()
    history = model.fit(train, epochs=1, steps_per_epoch=steps, verbose=0)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds_per_step": seconds / steps, "loss": float(history.history["loss"][-1]),
                      "candidates": int(len(model.candidate_ids))}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--workdir", help="where files go (default: a temporary folder, removed at the end)")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--pretrained", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage == "retrieval":
        return retrieval_stage(args.data, args.pretrained, args.steps)
    work = args.workdir or tempfile.mkdtemp(prefix="tfrec-large-")
    os.makedirs(work, exist_ok=True)
    log = lambda name: os.path.join(work, f"{name}.log")  # noqa: E731
    source, data = os.path.join(work, "interactions.parquet"), os.path.join(work, "data")
    synthetic(args.items, source)
    shutil.rmtree(data, ignore_errors=True)
    runs = {"prepare": checked(run_measured(tfrec("data", "prepare", "parquet", "--path", source, "--columns",
                                                  "user_id=uid,item_id=sku,timestamp=ts", "--out", data),
                                            log("prepare")), "prepare", log("prepare"))}
    stats = json.load(open(os.path.join(data, "stats.json")))
    pre = os.path.join(work, "pretrain")
    runs["pretrain"] = checked(run_measured(tfrec("pretrain", "--data", data, "--out", pre, "--overwrite",
                                                  "--set", f"pretrain.steps_per_epoch={args.steps}", *SETTINGS,
                                                  "--verbose", "2"), log("pretrain")), "pretrain", log("pretrain"))
    step_ms = [float(n) * (1 if unit == "ms" else 1000)
               for n, unit in re.findall(r"([\d.]+)(ms|s)/step", open(log("pretrain")).read())]
    runs["retrieval"] = checked(run_measured([sys.executable, os.path.abspath(__file__), "--stage", "retrieval",
                                              "--data", data, "--pretrained", pre, "--steps", str(args.steps)],
                                             log("retrieval")), "retrieval", log("retrieval"))
    retrieval = json.loads([ln for ln in open(log("retrieval")).read().splitlines() if ln.startswith("{")][-1])
    serving = os.path.join(work, "serving")
    shutil.rmtree(serving, ignore_errors=True)
    runs["export"] = checked(run_measured(tfrec("export", "--model", pre, "--serving-root", serving, "--name", "big",
                                                "--top-k", "10"), log("export")), "export", log("export"))

    __import__("tfrec")  # pins Keras 2 before TensorFlow loads (the name tfrec is the command helper here)
    import tensorflow as tf

    from tfrec.data import inputs, schema
    from tfrec.data.dataset import PreparedDataset

    ds = PreparedDataset(data)
    seqs = inputs.loo_sequences(ds, schema.TEST)
    histories = [[ds.item_vocab.token(int(i)) for i in h[-49:]] for h in seqs.histories[:500]]
    fn = tf.saved_model.load(os.path.join(serving, "big", "1")).signatures["serving_default"]
    fn(history=tf.constant([histories[0]]))
    latency = []
    for h in histories[:300]:
        start = time.perf_counter()
        fn(history=tf.constant([h]))
        latency.append((time.perf_counter() - start) * 1000)
    export_mb = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(serving) for f in fs) / 2**20
    result = {"items": stats["num_items"], "users": stats["num_users"], "interactions": stats["num_interactions"],
              "runs": {k: {"seconds": v["seconds"], "peak_rss_mb": v["peak_rss_mb"]} for k, v in runs.items()},
              "pretrain_ms_per_step": step_ms[-1] if step_ms else None, "retrieval": retrieval,
              "serving_p50_ms": float(np.percentile(latency, 50)), "serving_p99_ms": float(np.percentile(latency, 99)),
              "export_mb": export_mb, "steps": args.steps}
    path = write_result("large_catalogue", "synthetic-1m", result)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(f"## A catalogue of {stats['num_items']:,} items ({stats['num_interactions']:,} interactions, "
          f"{stats['num_users']:,} users; {machine()})\n")
    print("| stage | wall s | peak RSS MB | per step |")
    print("|---|---:|---:|---:|")
    print(f"| prepare | {runs['prepare']['seconds']:.0f} | {runs['prepare']['peak_rss_mb']:.0f} | |")
    print(f"| pretrain, sampled softmax (2,000 negatives), batch 256, 2 epochs of {args.steps} steps, validation on 500 users"
          " (per step: the second epoch) | "
          f"{runs['pretrain']['seconds']:.0f} | {runs['pretrain']['peak_rss_mb']:.0f} | "
          f"{result['pretrain_ms_per_step']} ms |")
    print(f"| retrieval fine-tuning, in-batch negatives, batch 512, {args.steps} steps | "
          f"{runs['retrieval']['seconds']:.0f} | {runs['retrieval']['peak_rss_mb']:.0f} | "
          f"{retrieval['seconds_per_step'] * 1000:.0f} ms |")
    print(f"| export (brute-force top 10 over every item), checked | {runs['export']['seconds']:.0f} | "
          f"{runs['export']['peak_rss_mb']:.0f} | |")
    print(f"\nserved top-10 latency, in process, one history per request: p50 {result['serving_p50_ms']:.1f} ms, "
          f"p99 {result['serving_p99_ms']:.1f} ms; export {export_mb:.0f} MB")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
