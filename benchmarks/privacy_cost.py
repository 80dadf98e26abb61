"""What a DP-SGD step costs: time per step and memory of private fine-tuning with per-example gradients kept
dense (a copy of every embedding table per example) and kept sparse (the rows each example read,
``privacy.sparse_gradients``, the default), against the same steps without privacy.

    python benchmarks/privacy_cost.py ml-100k --task ranking --workdir W
    python benchmarks/privacy_cost.py ml-100k --task next-item --workdir W
    python benchmarks/privacy_cost.py beauty --task next-item --set finetune.num_sampled=1000 --workdir W

Each arm is its own process (so its peak memory is its own): it fine-tunes from scratch with the dataset's
config for ``--steps`` steps (one epoch; the private arms at a fixed noise multiplier of 1, user-level
Poisson sampling at the config's batch size, so the expected batch is the non-private batch), times every
step with a Keras callback, and reports the median step after the first ``--warmup`` (which trace and
compile), the process's resident memory when training starts and its peak during the steps.  No model is
kept and no test split is read.  With ``--set finetune.num_sampled=N`` the next-item loss is a sampled
softmax, so the item table's per-example gradient is sparse too; with the full softmax every item's output
row has a gradient and only the input-side tables stay sparse.  JSON:
``benchmarks/results/privacy_cost_<dataset>-<task>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, machine, prepared_data, write_result  # noqa: E402

DATASETS = {"ml-100k": (["movielens-100k"], "ml-100k", {"next-item": "configs/ml-100k.yaml",
                                                         "ranking": "configs/ml-100k-tasks.yaml"}),
            "beauty": (["amazon-s3rec", "--name", "Beauty"], "amazon-beauty", {"next-item": "configs/beauty.yaml"})}
ARMS = {  # name: settings on top of the config
    "non-private": [],
    "dp-dense": ["privacy.noise_multiplier=1.0", "privacy.stages=[finetune]", "privacy.sparse_gradients=false"],
    "dp-sparse": ["privacy.noise_multiplier=1.0", "privacy.stages=[finetune]", "privacy.sparse_gradients=true"],
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def one_arm(args) -> None:
    """The child: one arm's steps, its figures as one JSON line on stdout."""
    sys.path.insert(0, REPO)
    import yaml

    import tfrec  # noqa: F401  (Keras 2, before TensorFlow)
    import tensorflow as tf
    from tfrec.training import task_trainer, trainer
    from tfrec.training.config import RunConfig

    class Steps(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times, self.start_rss = [], None

        def on_train_begin(self, logs=None):
            self.start_rss = rss_mb()
            self.last = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            self.times.append(now - self.last)
            self.last = now

    stage = "tasks" if args.task == "ranking" else "finetune"
    pairs = [*args.set, *ARMS[args.arm], f"{stage}.epochs=1", f"{stage}.steps_per_epoch={args.steps}",
             f"{stage}.patience=0"]
    config = RunConfig.from_file(os.path.join(REPO, args.config)).updated(
        {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in pairs)})
    timer = Steps()
    with tempfile.TemporaryDirectory() as out:
        if args.task == "ranking":
            summary = task_trainer.finetune_task(args.data, out, config, task="ranking", overwrite=True, verbose=0,
                                                 callbacks=[timer], score_test=False)
        else:
            summary = trainer.finetune(args.data, out, config, overwrite=True, verbose=0, callbacks=[timer])
    steps = timer.times[args.warmup:]
    print(json.dumps({"arm": args.arm, "steps": len(timer.times), "median_step_s": statistics.median(steps),
                      "step_s": timer.times, "rss_at_start_mb": timer.start_rss,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "sparse_tables": (summary.get("privacy") or {}).get("sparse_tables"),
                      "batch": config.tasks.batch_size if args.task == "ranking" else config.finetune.batch_size}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--task", choices=("next-item", "ranking"), default="next-item")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2, help="processes per arm, in turn (the median step of each)")
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="every arm's config")
    ap.add_argument("--workdir")
    ap.add_argument("--name", help="the results' name (default: <dataset>-<task>)")
    ap.add_argument("--arm", help=argparse.SUPPRESS)  # the child process
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:
        one_arm(args)
        return 0
    prepare, folder, configs = DATASETS[args.dataset]
    if args.task not in configs:
        sys.exit(f"{args.dataset} has no {args.task} config here; known: {', '.join(configs)}")
    if args.steps <= args.warmup:
        sys.exit("--steps must exceed --warmup")
    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="tfrec-privacy-cost-"))
    os.makedirs(work, exist_ok=True)
    data = prepared_data(work, prepare, folder, True)
    config = configs[args.task]
    rows = {arm: [] for arm in args.arms}
    for repeat in range(args.repeats):  # arms in turn, so drifting load on a shared machine hits each alike
        for arm in args.arms:
            command = [sys.executable, os.path.abspath(__file__), args.dataset, "--task", args.task, "--arm", arm,
                       "--data", data, "--config", config, "--steps", str(args.steps), "--warmup", str(args.warmup),
                       *[x for kv in args.set for x in ("--set", kv)]]
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode or not lines:
                sys.stderr.write(done.stderr[-3000:])
                sys.exit(f"the {arm} arm failed (exit {done.returncode}); its error is above")
            rows[arm].append(json.loads(lines[-1]))
            print(f"{arm} (repeat {repeat + 1}): median step {rows[arm][-1]['median_step_s'] * 1000:.1f} ms, "
                  f"peak {rows[arm][-1]['peak_rss_mb']:.0f} MB", flush=True)
    arms = {}
    for arm, runs in rows.items():
        arms[arm] = {"median_step_s": statistics.median(r["median_step_s"] for r in runs),
                     "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
                     "added_rss_mb": statistics.median(r["peak_rss_mb"] - r["rss_at_start_mb"] for r in runs),
                     "sparse_tables": runs[0]["sparse_tables"], "batch": runs[0]["batch"], "runs": runs}
    base = arms.get("non-private")
    name = args.name or f"{args.dataset}-{args.task}"
    result = {"dataset": args.dataset, "task": args.task, "config": config, "settings": args.set,
              "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "arms": arms,
              "machine": machine(), "workdir": work}
    path = write_result("privacy_cost", name, result)
    print(f"\n## {args.dataset} {args.task}: a DP-SGD step against a plain one ({machine()})\n")
    print(f"{config} {' '.join('--set ' + kv for kv in args.set)}; {args.steps} steps, the first {args.warmup} "
          f"left out; median over {args.repeats} processes per arm\n")
    print("| arm | median step (ms) | x non-private | peak RSS (MB) | added during the steps (MB) | tables kept sparse |")
    print("|---|---:|---:|---:|---:|---|")
    for arm, a in arms.items():
        ratio = f"{a['median_step_s'] / base['median_step_s']:.1f}" if base else "n/a"
        short = sorted({t.split("/")[-2] if "/" in t else t.split(":")[0] for t in a["sparse_tables"] or []})
        tables = f"{len(short)}: " + ", ".join(short) if short else "none"
        print(f"| {arm} | {a['median_step_s'] * 1000:.1f} | {ratio} | {a['peak_rss_mb']:.0f} | "
              f"{a['added_rss_mb']:.0f} | {tables} |")
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
