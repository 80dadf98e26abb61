"""Quality of the TFRS tasks: retrieval, ranking, multitask and cold start, pretrained against from scratch.

Runs the real commands (`tfrec pretrain`, `tfrec finetune --task ...`) in fresh processes
with a committed config, measuring each one's wall time and peak memory, and prints
the test figures beside the TFRS tutorials' figures and the baselines.  Every run
picks its best epoch on rows held back from its own training split; the test rows are
scored once, at the end of the run.

MovieLens-100K, the tutorials' protocol (random 80/20 split of the ratings):

    python benchmarks/tasks_quality.py ml-100k [--workdir DIR] [--only retrieval,ranking,...]
        [--set KEY=VALUE ...] [--name NAME]   (settings of every fine-tuning run; the results file's name)

  - retrieval: top-100 categorical accuracy over all items (tutorial ~0.233, deep ~0.29; target >= 0.30)
  - ranking: rating RMSE (tutorial ~1.10, DCN 0.933; target <= 0.91), MAE and R^2
  - multitask: both figures from one model
  - cold-start: 10% of the items held out of training; their test rows ranked among the cold items
  - loo-retrieval: leave-one-out HR@10/NDCG@10 of the retrieval model beside the next-item model

Amazon Beauty (implicit feedback; no rating task):

    python benchmarks/tasks_quality.py beauty [--only loo-retrieval,cold-start]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, RESULTS, checked, data_dir, machine, run_measured, tfrec, write_result  # noqa: E402

DATASETS = {
    # name: (prepare arguments, local folder, config of the task runs, config of the leave-one-out runs)
    "ml-100k": (["movielens-100k"], "ml-100k", "configs/ml-100k-tasks.yaml", "configs/ml-100k.yaml"),
    "beauty": (["amazon-s3rec", "--name", "Beauty"], "amazon-beauty", "configs/beauty-tasks.yaml", "configs/beauty.yaml"),
}
# The ranking runs keep the pretrained encoder fixed (a feature extractor: 2.5x faster
# epochs, and the rating network overfits less); chosen on validation RMSE.
RANKING = ("--set", "tasks.freeze_backbone=true", "--set", "tasks.epochs=20", "--set", "tasks.patience=3",
           "--learning-rate", "0.002")
# What each dataset runs by default: (name, task, split, extra settings).
EXPERIMENTS = {
    "ml-100k": [("retrieval", "retrieval", "random", ()), ("ranking", "ranking", "random", RANKING),
                ("multitask", "multitask", "random", ()), ("cold-start", "cold-start", "cold", ()),
                ("loo-retrieval", "retrieval", "loo", ())],
    "beauty": [("loo-retrieval", "retrieval", "loo", ()), ("cold-start", "cold-start", "cold", ())],
}
TUTORIALS = {
    "retrieval": [("TFRS basic retrieval tutorial", "top-100 ~0.233"), ("TFRS deep retrieval tutorial", "top-100 ~0.29")],
    "ranking": [("TFRS basic ranking tutorial", "RMSE ~1.10"), ("TFRS DCN tutorial", "RMSE 0.933")],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--workdir", help="where runs go (default: a temporary folder); finished runs there are reused")
    ap.add_argument("--only", help="comma-separated experiments to run (default: all of the dataset's)")
    ap.add_argument("--no-scratch", action="store_true", help="skip the from-scratch runs")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting of every fine-tuning run (e.g. tasks.user_params=false); repeatable")
    ap.add_argument("--name", help="results file: benchmarks/results/tasks_quality_NAME.json (default: the dataset)")
    args = ap.parse_args()
    prep_args, folder, task_config, loo_config = DATASETS[args.dataset]
    work = args.workdir or tempfile.mkdtemp(prefix=f"tfrec-tasks-{args.dataset}-")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    log = lambda name: os.path.join(work, f"{name}.log")  # noqa: E731
    experiments = EXPERIMENTS[args.dataset]
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - {e[0] for e in experiments})
        if unknown:
            sys.exit(f"unknown experiment {unknown[0]!r} for {args.dataset}; known: {', '.join(e[0] for e in experiments)}")
        experiments = [e for e in experiments if e[0] in wanted]

    if not os.path.isfile(os.path.join(data, "dataset.json")):
        checked(run_measured(tfrec("data", "prepare", *prep_args, "--path", os.path.join(data_dir(), folder), "--out",
                                   data), log("prepare")), "prepare", log("prepare"))
    runs: dict[str, dict] = {}

    def run(name: str, *command: str) -> dict:
        out = os.path.join(work, name)
        done = os.path.isfile(os.path.join(out, "run.json")) and \
            json.load(open(os.path.join(out, "run.json"))).get("status") == "done"
        result = checked(run_measured(tfrec(*command, "--out", out, "--verbose", "2"), log(name)), name, log(name))
        if done:  # a finished run is reused: keep the time and memory it was measured with
            previous = os.path.join(out, "benchmark_measure.json")
            if os.path.isfile(previous):
                result = json.load(open(previous))
        else:
            json.dump(result, open(os.path.join(out, "benchmark_measure.json"), "w"))
        runs[name] = {"seconds": result["seconds"], "peak_rss_mb": result["peak_rss_mb"]}
        return json.load(open(os.path.join(out, "run.json")))["summary"]

    results: dict[str, dict] = {}
    for name, task, split, extra in experiments:
        config = os.path.join(REPO, loo_config if split == "loo" else task_config)
        pre = f"pretrain-{split}"
        if pre not in runs:
            run(pre, "pretrain", "--data", data, "--config", config, "--split", split)
        extra = (*extra, *(x for pair in args.set for x in ("--set", pair)))
        common = ("finetune", "--task", task, "--data", data, "--config", config, "--split", split, *extra)
        results[name] = {"task": task, "split": split, "config": os.path.relpath(config, REPO), "settings": list(extra),
                         "pretrained": run(f"{name}-pretrained", *common, "--pretrained", os.path.join(work, pre))}
        if not args.no_scratch:
            results[name]["scratch"] = run(f"{name}-scratch", *common, "--from-scratch")
    if any(e[2] == "loo" for e in experiments):
        previous = os.path.join(RESULTS, f"sequential_quality_{args.dataset}.json")
        if os.path.isfile(previous):
            results["next-item (sequential_quality.py)"] = {"test": json.load(open(previous))["test"]}

    payload = {"experiments": results, "runs": runs, "tutorials": TUTORIALS, "workdir": work}
    path = write_result("tasks_quality", args.name or args.dataset, payload)
    print(report(args.dataset, results, runs))
    print(f"wrote {path}")


def _retrieval_row(label: str, m: dict) -> str:
    return (f"| {label} | {m['top_10_accuracy']:.4f} | {m['ndcg@10']:.4f} | {m['top_50_accuracy']:.4f} | "
            f"{m['top_100_accuracy']:.4f} | {m['rows']} |")


def report(dataset: str, results: dict, runs: dict) -> str:
    lines = [f"## {dataset}: TFRS tasks, test split ({machine()})", ""]
    for name, r in results.items():
        if "task" not in r:
            continue
        lines += [f"### {name} ({r['task']}, {r['split']} split, {r['config']} {' '.join(r['settings'])})".rstrip(), ""]
        variants = [(v, r[v]) for v in ("pretrained", "scratch") if v in r]
        first = variants[0][1]
        if "retrieval" in first["test"]:
            where = "among the cold items" if r["split"] == "cold" else "among all items" + (
                ", history excluded" if r["split"] == "loo" else "")
            lines += [f"Retrieval, full ranking {where}:", "",
                      "| model | HR@10 (top-10 acc.) | NDCG@10 | top-50 acc. | top-100 acc. | rows |",
                      "|---|---:|---:|---:|---:|---:|"]
            for v, s in variants:
                lines.append(_retrieval_row(f"tfrec {r['task']}, {v}", s["test"]["retrieval"]))
            for b in ("popularity", "random"):
                if b in first["baselines"]:
                    label = "popularity (oracle: counted on other users' test rows)" if r["split"] == "cold" and \
                        b == "popularity" else b
                    lines.append(_retrieval_row(label, first["baselines"][b]))
            if r["split"] == "random":
                lines += [f"| {n} | | | | {f} | |" for n, f in TUTORIALS["retrieval"]]
            lines.append("")
        if "ranking" in first["test"]:
            lines += ["Ranking (rating regression):", "", "| model | RMSE | MAE | R² |", "|---|---:|---:|---:|"]
            for v, s in variants:
                m = s["test"]["ranking"]
                lines.append(f"| tfrec {r['task']}, {v} | {m['rmse']:.4f} | {m['mae']:.4f} | {m['r2']:.4f} |")
            m = first["baselines"]["train_mean"]
            lines.append(f"| training mean | {m['rmse']:.4f} | {m['mae']:.4f} | {m['r2']:.4f} |")
            lines += [f"| {n} | {f.split()[-1]} | | |" for n, f in TUTORIALS["ranking"]]
            lines.append("")
        lines += ["| run | wall s | peak RSS MB | epochs (best) |", "|---|---:|---:|---|"]
        for v, s in variants:
            key = f"{name}-{v}"
            lines.append(f"| {key} | {runs[key]['seconds']:.0f} | {runs[key]['peak_rss_mb']:.0f} | "
                         f"{s['epochs_run']} ({s['best_epoch']}) |")
        pre = f"pretrain-{r['split']}"
        lines += [f"| {pre} | {runs[pre]['seconds']:.0f} | {runs[pre]['peak_rss_mb']:.0f} | |", ""]
    if "next-item (sequential_quality.py)" in results:
        m = results["next-item (sequential_quality.py)"]["test"]["finetune"]
        lines += [f"Next-item model on the same leave-one-out test split (benchmarks/sequential_quality.py): "
                  f"HR@10 {m['hr@10']:.4f}, NDCG@10 {m['ndcg@10']:.4f}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
