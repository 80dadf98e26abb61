"""A dataset's next-item settings chosen by `tfrec tune` on validation, then its test split read once.

    python benchmarks/tuned.py ml-100k --trials 12 [--workdir W [--reuse]]
    python benchmarks/tuned.py beauty  --trials 8 --workdir W --reuse   (long: run it over several calls)

The script runs the real commands in fresh processes, each measured (wall time, peak memory):
1. `tfrec data prepare` of the dataset;
2. `tfrec pretrain` with the dataset's committed config (the backbone every trial fine-tunes from);
3. `tfrec tune --pretrained` over the fine-tuning space in `benchmarks/spaces/<dataset>.yaml` (Optuna TPE,
   median pruning on the per-epoch validation NDCG@10). The committed config's own settings are trial 0,
   so the search reports how far its best is from what ships, on validation;
4. `tfrec evaluate --split test` of the best trial's run, once, and of the popularity baseline.
No trial reads the test split. The dataset folder's `test_reads.jsonl` is summarised in the JSON, so the
result says how many test reads stand behind it. With `--reuse` a finished step is kept (a killed search
resumes from its study), and a test figure already read is not read again.
JSON: `benchmarks/results/tuned_<dataset>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, machine, measured_run, prepared_data, read_test, tfrec, write_result  # noqa: E402

DATASETS = {  # name: (prepare arguments, local folder, config)
    "beauty": (["amazon-s3rec", "--name", "Beauty"], "amazon-beauty", "configs/beauty.yaml"),
    "ml-100k": (["movielens-100k"], "ml-100k", "configs/ml-100k.yaml"),
}
METRICS = ("hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--trials", type=int, default=12, help="finished trials of the search (default 12)")
    ap.add_argument("--space", help="search space (default benchmarks/spaces/<dataset>.yaml)")
    ap.add_argument("--workdir", help="where runs go (default: a temporary folder)")
    ap.add_argument("--reuse", action="store_true", help="keep what an earlier call finished in WORKDIR")
    args = ap.parse_args()
    prep_args, folder, config_file = DATASETS[args.dataset]
    config = os.path.join(REPO, config_file)
    space = os.path.abspath(args.space or os.path.join(REPO, "benchmarks", "spaces", f"{args.dataset}.yaml"))
    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix=f"tfrec-tuned-{args.dataset}-"))
    os.makedirs(work, exist_ok=True)
    data = prepared_data(work, prep_args, folder, args.reuse)
    common = ["--data", data, "--config", config, "--verbose", "2"]
    runs = {"pretrain": measured_run("pretrain", tfrec("pretrain", "--out", f"{work}/pretrain", "--overwrite",
                                                       *common), work, args.reuse)}
    runs["tune"] = measured_run("tune", tfrec("tune", "--task", "next-item", "--data", data, "--config", config,
                                              "--space", space, "--trials", str(args.trials), "--study",
                                              f"{work}/tune", "--pretrained", f"{work}/pretrain"),
                                work, args.reuse)
    report = json.load(open(os.path.join(work, "tune", "tuning.json")))
    best_run = report["best"]["run"]
    base = next((t for t in report["trials"] if t["number"] == 0), None)
    best_summary = json.load(open(os.path.join(best_run, "run.json")))["summary"]
    # named by the trial, so that a search resumed with more trials and a new best reads that one's test split
    test = {"tuned": read_test(work, f"tuned-trial{report['best']['number']}", ["--model", best_run, "--data", data],
                               args.reuse)["metrics"],
            "popularity": read_test(work, "popularity", ["--baseline", "popularity", "--data", data],
                                    args.reuse)["metrics"]}
    sys.path.insert(0, REPO)
    from tfrec.evaluation import test_reads

    reads = test_reads.summary(data)
    result = {"config": config_file, "space": report["space"], "trials_asked": args.trials,
              "base_trial": base, "best": report["best"], "best_epoch": best_summary.get("best_epoch"),
              "valid": {"tuned": best_summary["valid"]}, "trials": report["trials"], "test": test,
              "test_reads": reads, "runs": runs, "workdir": work}
    path = write_result("tuned", args.dataset, result)
    done = [t for t in report["trials"] if t["state"] == "COMPLETE"]
    pruned = [t for t in report["trials"] if t["state"] == "PRUNED"]
    print(f"\n## {args.dataset}: fine-tuning settings chosen by tfrec tune on validation ({machine()})\n")
    print(f"{len(done)} trials completed, {len(pruned)} pruned; search {runs['tune']['seconds']:.0f} s, "
          f"pretraining {runs['pretrain']['seconds']:.0f} s.")
    if base is not None and base["value"] is not None:
        print(f"validation NDCG@10: committed config (trial 0) {base['value']:.4f}, best (trial "
              f"{report['best']['number']}) {report['best']['value']:.4f}: {json.dumps(report['best']['params'])}")
    print("\n| model (test split, read once) | " + " | ".join(m.upper().replace("NDCG", "NDCG") for m in METRICS) + " |")
    print("|---|" + "---:|" * len(METRICS))
    for name, label in (("popularity", "popularity"), ("tuned", "tfrec, pretrained + fine-tuned with the tuned settings")):
        print(f"| {label} | " + " | ".join(f"{test[name][m]:.4f}" for m in METRICS) + " |")
    print(f"\ntest reads of this dataset folder: {reads['reads']} (configs: {reads['configs']})")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
