"""What pretraining buys as labels get scarce: fine-tuning on a share of the labels, pretrained against from
scratch, each cell over several seeds.

    python benchmarks/pretraining_value.py ml-100k --workdir W --reuse
    python benchmarks/pretraining_value.py beauty --tasks next-item --workdir W --reuse     (hours: resumable)
    python benchmarks/pretraining_value.py ml-100k --tasks ranking retrieval --name ml-100k-tasks --workdir W
    python benchmarks/pretraining_value.py ml-100k --fractions 0.1 1 --seeds 0 --set model.hidden_dim=16 ...
        (a smoke run: --set changes every run's config)

For each task the backbone is pretrained on every training sequence of the task's split, labels unseen
(next-item: once, seed 0, leave-one-out validating on fixed items; ranking and retrieval: once per seed,
since the seed draws the random split's validation rows); then, for each fraction of the labels (`finetune.fraction`: by user for next-item, by
training row for ranking and retrieval) and each seed, the task is fine-tuned from that backbone and from
scratch with the same settings, epochs chosen on validation by early stopping.  At a fraction f an epoch
holds f of the examples, so the most epochs grow as 1/f (capped at 20x), giving every cell about the same
number of steps; next-item validates every ceil(1/4f) epochs, the TFRS tasks every epoch with a patience
grown as 1/f.  Each model's test split is read once:
- next-item (leave-one-out, the dataset's config): NDCG@10 and HR@10 over all users, and over the users
  fine-tuning never saw (`metrics_by_users` of `tfrec evaluate`); popularity beside them;
- ranking (random 80/20, `configs/ml-100k-tasks.yaml` with the frozen-encoder settings of
  `tasks_quality.py`): RMSE, R² and the share of the training mean's RMSE removed;
- retrieval (random 80/20): top-100 accuracy.
`--trainable head adapters` adds arms that fine-tune the pretrained backbone frozen, training the head only
(`pretrained-head`) or low-rank adapters and the head (`pretrained-adapters`), with the same settings.
Cells report the mean and standard deviation over seeds and each pretrained arm's ratio to scratch; the JSON goes to
`benchmarks/results/pretraining_value_<dataset>.json` and a plot to `docs/figures/`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, machine, measured_run, prepared_data, read_test, tfrec, write_result  # noqa: E402

DATASETS = {  # name: (prepare arguments, local folder, next-item config, random-split task config or None)
    "beauty": (["amazon-s3rec", "--name", "Beauty"], "amazon-beauty", "configs/beauty.yaml", None),
    "ml-100k": (["movielens-100k"], "ml-100k", "configs/ml-100k.yaml", "configs/ml-100k-tasks.yaml"),
}
TASK_SETTINGS = {  # per task: extra settings (those of tasks_quality.py), the figure, higher is better
    "next-item": ([], "ndcg@10", True),
    "ranking": (["--set", "tasks.freeze_backbone=true", "--set", "tasks.epochs=20", "--set", "tasks.patience=3",
                 "--set", "tasks.learning_rate=0.002"], "rmse_gap", True),
    "retrieval": ([], "top_100_accuracy", True),
}
FRACTIONS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
MAX_SCALE = 20  # the most epochs and validation interval grow as 1/fraction, at most this many times


def scaled(fraction: float, config_file: str, settings: list[str]) -> list[str]:
    """Settings that give a run on `fraction` of the labels about the steps of a full run: its config's
    (with `settings`, ``--set`` pairs, on top) most epochs and validation interval times 1/fraction (the
    TFRS tasks validate every epoch, so their patience grows instead)."""
    import yaml

    scale = min(MAX_SCALE, math.ceil(1 / fraction))
    if scale == 1:
        return []
    sys.path.insert(0, REPO)
    from tfrec.training.config import RunConfig

    pairs = dict(kv.split("=", 1) for kv in settings[1::2])
    config = RunConfig.from_file(os.path.join(REPO, config_file)).updated(
        {k: yaml.safe_load(v) for k, v in pairs.items()})
    if config.split == "loo":  # validated four times as often as the epochs grow, so that early stopping
        # can still catch a pretrained model that a few labelled users pull away from its best quickly
        return ["--set", f"finetune.epochs={config.finetune.epochs * scale}",
                "--set", f"finetune.validate_every={config.finetune.validate_every * math.ceil(scale / 4)}"]
    return ["--set", f"tasks.epochs={config.tasks.epochs * scale}", "--set", f"tasks.patience={config.tasks.patience * scale}"]


def figures(task: str, work: str, name: str, data: str, reuse: bool) -> dict:
    """The test figures of one finished run, its test split read once (`reuse`: the run was kept from an
    earlier call, so the test figures that call read are kept too)."""
    run = os.path.join(work, name)
    if task != "next-item":  # the TFRS run scored its test rows at its end
        summary = json.load(open(os.path.join(run, "metrics.json")))
        if task == "ranking":
            test, mean = summary["test"]["ranking"], summary["baselines"]["train_mean"]["rmse"]
            return {"rmse": test["rmse"], "r2": test["r2"], "rmse_gap": (mean - test["rmse"]) / mean,
                    "train_mean_rmse": mean}
        test = summary["test"]["retrieval"]
        return {"top_100_accuracy": test["top_100_accuracy"], "ndcg@10": test["ndcg@10"],
                "popularity_top_100": summary["baselines"]["popularity"]["top_100_accuracy"]}
    report = read_test(work, name, ["--model", run, "--data", data], reuse)
    result = {"ndcg@10": report["metrics"]["ndcg@10"], "hr@10": report["metrics"]["hr@10"]}
    unseen = report.get("metrics_by_users", {}).get("users fine-tuning never saw")
    if unseen:
        result.update({"unseen_ndcg@10": unseen["ndcg@10"], "unseen_hr@10": unseen["hr@10"],
                       "unseen_users": unseen["users"]})
    return result


def validation_curve(run: str) -> tuple[str, bool, list[tuple[float, float]]]:
    """(monitored key, lower is better, [(seconds since the run started, validation figure)]) of a finished
    run, from its ``validation.json`` (each validated epoch's figures and time) and ``run.json``."""
    state = json.load(open(os.path.join(run, "validation.json")))
    started = json.load(open(os.path.join(run, "run.json")))["started"]
    best = state["epochs"][str(state["best_epoch"])]
    key = next(k for k, v in sorted(best.items(), key=lambda kv: not kv[0].startswith("val_"))
               if isinstance(v, float) and v == state["best"])
    lower = "rmse" in key or "loss" in key
    epochs = sorted(state["epochs"].items(), key=lambda kv: int(kv[0]))
    return key, lower, [(e["time"] - started, e[key]) for _, e in epochs if key in e]


def seconds_to(curve: list[tuple[float, float]], target: float, lower: bool) -> float | None:
    """When a validation curve first reaches `target` (None: never)."""
    for seconds, value in curve:
        if (value <= target) if lower else (value >= target):
            return seconds
    return None


def time_to_scratch_best(work: str, task: str, fraction: float, seed: int, arms: list[str]) -> dict:
    """Seconds from each arm's start until its validation figure first reaches the from-scratch run's best
    (the same seed and fraction), what "reaches the from-scratch result in a third of the time" measures."""
    key, lower, scratch = validation_curve(os.path.join(work, f"{task}-scratch-f{fraction:g}-s{seed}"))
    target = min(v for _, v in scratch) if lower else max(v for _, v in scratch)
    out = {}
    for arm in arms:
        _, _, curve = validation_curve(os.path.join(work, f"{task}-{arm}-f{fraction:g}-s{seed}"))
        out[arm] = seconds_to(curve, target, lower)
    return out


def spread(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def plot(result: dict, path: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    tasks = list(result["cells"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        key = TASK_SETTINGS[task][1]
        cells = result["cells"][task]
        xs = sorted(float(f) for f in cells)
        arms = [a for a in cells[str(xs[0])] if not a.startswith("ratio")]
        for arm, style in zip(arms, ("o-", "s--", "^:", "v-.")):
            ys = [cells[str(x)][arm][key]["mean"] for x in xs]
            sds = [cells[str(x)][arm][key]["sd"] for x in xs]
            ax.errorbar(xs, ys, yerr=sds, fmt=style, capsize=3, label=arm)
        ax.set_xscale("log")
        ax.set_xlabel("share of the labels fine-tuning learns from")
        ax.set_ylabel(key)
        ax.set_title(f"{result['dataset']}: {task}")
        ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--tasks", nargs="+", choices=list(TASK_SETTINGS), help="default: every task the data has")
    ap.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--trainable", nargs="+", choices=("all", "head", "adapters"), default=["all"],
                    help="what the pretrained arms train (finetune.trainable): each of head and adapters adds an "
                         "arm pretrained-head / pretrained-adapters beside the fully fine-tuned one")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting on every run")
    ap.add_argument("--workdir", help="where runs go (default: a temporary folder)")
    ap.add_argument("--reuse", action="store_true", help="keep runs and test figures an earlier call finished")
    ap.add_argument("--name", help="the results' name (default: the dataset's, with -custom after --set and "
                                   "-trainable after --trainable), so that tasks run apart keep apart")
    args = ap.parse_args()
    prep_args, folder, loo_config, task_config = DATASETS[args.dataset]
    tasks = args.tasks or (["next-item", "ranking", "retrieval"] if task_config else ["next-item"])
    if any(t != "next-item" for t in tasks) and not task_config:
        sys.exit(f"{args.dataset} has no ratings split config: run --tasks next-item")
    if any(not 0 < f <= 1 for f in args.fractions):
        sys.exit("--fractions are shares of the labels, above 0 and at most 1")
    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix=f"tfrec-value-{args.dataset}-"))
    os.makedirs(work, exist_ok=True)
    data = prepared_data(work, prep_args, folder, args.reuse)
    extra = [x for kv in args.set for x in ("--set", kv)]
    runs, cells = {}, {}
    for task in tasks:
        config = loo_config if task == "next-item" else task_config
        common = ["--data", data, "--config", os.path.join(REPO, config), "--verbose", "2", "--overwrite", *extra]
        settings, key, _ = TASK_SETTINGS[task]
        cells[task] = {}
        for fraction in args.fractions:
            cell = {"pretrained": [], "scratch": [], **{f"pretrained-{t}": [] for t in args.trainable if t != "all"}}
            for seed in args.seeds:
                # leave-one-out validates on fixed items, so one pretraining serves every seed; the random
                # split draws its validation rows with the seed, so each seed pretrains on its own draw
                pre = "pretrain-loo" if task == "next-item" else f"pretrain-random-s{seed}"
                if pre not in runs:
                    runs[pre] = measured_run(pre, tfrec("pretrain", "--out", f"{work}/{pre}", *common,
                                                        *([] if task == "next-item" else ["--seed", str(seed)])),
                                             work, args.reuse)
                for arm in cell:
                    name = f"{task}-{arm}-f{fraction:g}-s{seed}"
                    start = ["--from-scratch"] if arm == "scratch" else ["--pretrained", f"{work}/{pre}"]
                    if arm.startswith("pretrained-"):  # the backbone frozen, the head (and adapters) trained
                        start += ["--set", f"finetune.trainable={arm.split('-', 1)[1]}"]
                    runs[name] = measured_run(name, tfrec(
                        "finetune", "--task", task, "--out", f"{work}/{name}", *start, *common, *settings,
                        "--seed", str(seed), "--set", f"finetune.fraction={fraction:g}",
                        *scaled(fraction, config, [*extra, *settings])), work, args.reuse)
                    kept = bool(runs[name].get("reused"))
                    cell[arm].append(dict(figures(task, work, name, data, kept), seconds=runs[name]["seconds"]))
                reached = time_to_scratch_best(work, task, fraction, seed, list(cell))
                for arm in cell:
                    cell[arm][-1]["seconds_to_scratch_best"] = reached[arm]
            summary = {arm: {k: spread([r[k] for r in rows]) for k in rows[0] if k != "seconds_to_scratch_best"}
                       for arm, rows in cell.items()}
            for arm, rows in cell.items():  # None where a seed's run never reached it
                times = [r["seconds_to_scratch_best"] for r in rows]
                summary[arm]["seconds_to_scratch_best"] = {"values": times, "reached": sum(t is not None for t in times),
                                                           "median": statistics.median(t for t in times if t is not None)
                                                           if any(t is not None for t in times) else None}
            base = summary["scratch"][key]["mean"]
            for arm in list(cell):
                if arm != "scratch":
                    summary["ratio" + arm[len("pretrained"):]] = summary[arm][key]["mean"] / base if base else None
            cells[task][str(fraction)] = summary
            print(f"{task} at {fraction:g}: {key} " + ", ".join(
                f"{arm} {summary[arm][key]['mean']:.4f} ± {summary[arm][key]['sd']:.4f}" for arm in cell), flush=True)
    popularity = None
    if "next-item" in tasks:
        popularity = read_test(work, "popularity", ["--baseline", "popularity", "--data", data],
                               args.reuse)["metrics"]
    sys.path.insert(0, REPO)
    from tfrec.evaluation import test_reads

    name = args.name or (args.dataset + ("-custom" if extra else "")
                         + ("-trainable" if set(args.trainable) - {"all"} else ""))
    result = {"dataset": args.dataset, "tasks": tasks, "fractions": args.fractions, "seeds": args.seeds,
              "settings": args.set, "cells": cells, "popularity": popularity, "runs": runs,
              "test_reads": test_reads.summary(data), "workdir": work}
    figure = plot(result, os.path.join(REPO, "docs", "figures", f"pretraining_value_{name}.png"))
    result["figure"] = os.path.relpath(figure, REPO) if figure else None
    path = write_result("pretraining_value", name, result)
    print(f"\n## {args.dataset}: pretrained against from scratch as labels get scarce ({machine()})\n")
    for task in tasks:
        key = TASK_SETTINGS[task][1]
        print(f"\n{task}, test {key} (mean ± sd over seeds {args.seeds}):\n")
        arms = [a for a in cells[task][str(args.fractions[0])] if not a.startswith("ratio")]
        ratios = [a for a in arms if a != "scratch"]
        print("| share of labels | " + " | ".join(arms) + " | " + " | ".join(f"{a} / scratch" for a in ratios)
              + " |\n|---:|" + "---|" * len(arms) + "---:|" * len(ratios))
        for fraction in args.fractions:
            c = cells[task][str(fraction)]
            shown = [f"{c[a][key]['mean']:.4f} ± {c[a][key]['sd']:.4f}" for a in arms]
            shown += [f"{r:.2f}" if r is not None else "n/a" for r in (c["ratio" + a[len("pretrained"):]] for a in ratios)]
            print(f"| {fraction:g} | " + " | ".join(shown) + " |")
        print(f"\n{task}: seconds until validation first reaches the from-scratch run's best (median over the seeds "
              "that reach it; the pretraining's own time not included):\n")
        print("| share of labels | " + " | ".join(arms) + " | pretrained / scratch |\n|---:|" + "---:|" * (len(arms) + 1))
        for fraction in args.fractions:
            c = cells[task][str(fraction)]
            shown = []
            for a in arms:
                t = c[a]["seconds_to_scratch_best"]
                shown.append("never" if t["median"] is None else
                             f"{t['median']:.0f} s ({t['reached']}/{len(t['values'])})")
            p, q = c["pretrained"]["seconds_to_scratch_best"]["median"], c["scratch"]["seconds_to_scratch_best"]["median"]
            ratio = f"{p / q:.2f}" if p and q else "n/a"
            print(f"| {fraction:g} | " + " | ".join(shown) + f" | {ratio} |")
        pre = "pretrain-loo" if task == "next-item" else f"pretrain-random-s{args.seeds[0]}"
        print(f"\n{task}: the pretraining itself took {runs[pre]['seconds']:.0f} s")
    if popularity:
        print(f"\npopularity, next-item test NDCG@10 {popularity['ndcg@10']:.4f}, HR@10 {popularity['hr@10']:.4f}")
    print(f"\nresults: {path}" + (f"; figure: {figure}" if figure else ""))


if __name__ == "__main__":
    main()
