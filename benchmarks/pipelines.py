"""What a shipped pipeline reaches, run as a user runs it: the quickstart or a pipeline config, end to end.

    python benchmarks/pipelines.py quickstart        (tfrec quickstart: MovieLens-100K, tfrec/configs/quickstart.yaml)
    python benchmarks/pipelines.py movielens-100k    (tfrec pipeline --config pipelines/configs/movielens-100k.yaml)
    python benchmarks/pipelines.py beauty            (pipelines/configs/beauty.yaml: about 90 minutes on 2 CPUs)

Each runs the real command in a fresh process in a new work folder (wall time and peak memory measured
here), then reads the pipeline's manifest: every step's seconds, the evaluate step's test figures (each
fine-tuned task read once, beside popularity or the training mean) and the push decision.  A pipeline
whose run config already has test figures from `sequential_quality.py` reads the same config's test split
again; the JSON says so (`test_reads`).  JSON: `benchmarks/results/pipeline_<name>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, checked, data_dir, machine, run_measured, tfrec, write_result  # noqa: E402

PIPELINES = ("quickstart", "movielens-100k", "beauty")
METRICS = ("hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pipeline", choices=PIPELINES)
    ap.add_argument("--workdir", help="a new or empty folder for the run (default: a temporary folder)")
    args = ap.parse_args()
    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix=f"tfrec-pipeline-{args.pipeline}-"))
    if os.path.isdir(work) and os.listdir(work):
        sys.exit(f"{work} is not empty: the benchmark measures a whole run, so give it a new folder")
    os.makedirs(work, exist_ok=True)
    log = os.path.join(work, "run.log")
    if args.pipeline == "quickstart":
        command = tfrec("quickstart", "--data-dir", data_dir(), "--workdir", work)
        root = os.path.join(work, "pipeline")
    else:
        root = os.path.join(work, "pipeline")
        command = tfrec("pipeline", "--config", os.path.join("pipelines", "configs", f"{args.pipeline}.yaml"),
                        "--data-dir", data_dir(), "--pipeline-root", root, "--serving-root",
                        os.path.join(work, "serving"))
    measured = checked(run_measured(command, log), args.pipeline, log)
    manifest = json.load(open(os.path.join(root, "manifest.json")))
    steps = {s["step"]: s for s in manifest["steps"]}
    evaluation = json.load(open(steps["evaluate"]["outputs"]["evaluation"]))
    data = steps["ingest"]["outputs"]["data"]
    sys.path.insert(0, REPO)
    from tfrec.evaluation import test_reads

    result = {"pipeline": args.pipeline, "command": command[1:], "seconds": measured["seconds"],
              "peak_rss_mb": measured["peak_rss_mb"], "steps": {s: steps[s]["seconds"] for s in steps},
              "run_config": steps["finetune"]["settings"].get("run_config"), "evaluation": evaluation,
              "push": steps["push"]["outputs"]["decision"], "test_reads": test_reads.summary(data), "workdir": work}
    path = write_result("pipeline", args.pipeline, result)
    print(f"\n## pipeline {args.pipeline} ({machine()}): {measured['seconds']:.0f} s, peak "
          f"{measured['peak_rss_mb']:.0f} MB\n")
    print("| step | seconds |\n|---|---:|")
    for name, seconds in result["steps"].items():
        print(f"| {name} | {seconds:.0f} |")
    if "next-item" in evaluation:
        print("\n| next-item, test split | " + " | ".join(m.upper() for m in METRICS) + " |")
        print("|---|" + "---:|" * len(METRICS))
        for label, key in (("popularity", "popularity"), ("pretrained + fine-tuned", "test")):
            print(f"| {label} | " + " | ".join(f"{evaluation['next-item'][key][m]:.4f}" for m in METRICS) + " |")
    if "ranking" in evaluation:
        test, mean = evaluation["ranking"]["test"], evaluation["ranking"]["baselines"]
        print(f"\nranking, test: {json.dumps(test, default=float)}; baselines: {json.dumps(mean, default=float)}")
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
