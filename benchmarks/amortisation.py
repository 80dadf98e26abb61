"""What one pretraining saves over every task: the wall time of the pretrainings plus each task's fine-tuning
until its validation figure first reaches the from-scratch run's best, against training each task from
scratch, at one share of the labels.

    python benchmarks/amortisation.py benchmarks/results/pretraining_value_ml-100k.json \
        benchmarks/results/pretraining_value_ml-100k-ranking.json [--fraction 1]

It runs nothing: it reads what ``benchmarks/pretraining_value.py`` measured (each task's runs, over its
seeds: the median per seed of the seconds to the from-scratch best, ``seconds_to_scratch_best``, and the
runs' whole wall times) and adds them up.  The pretrained side counts each pretraining once per split it
serves (leave-one-out for next-item, the random split for the TFRS tasks: a backbone must not have read a
task's test rows, so the two splits cannot share one) at its first seed's wall time; the scratch side
counts each task's from-scratch run until it reached its own best validation figure (the least a
from-scratch run could cost, had it known when to stop) and, beside it, its whole run.  A task whose
pretrained runs did not all reach the from-scratch best is named, its whole fine-tuning counted instead.
JSON: ``benchmarks/results/amortisation_<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, write_result  # noqa: E402
from pretraining_value import DATASETS  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="pretraining_value JSON files of one dataset")
    ap.add_argument("--fraction", type=float, default=1.0, help="the share of the labels (default: every label)")
    ap.add_argument("--name", help="the results' name (default: the dataset's)")
    args = ap.parse_args()
    tasks, pretrainings, datasets = {}, {}, set()
    for path in args.results:
        try:
            with open(path) as f:
                result = json.load(f)
        except (OSError, ValueError) as e:
            sys.exit(f"cannot read {path}: {e}")
        if not (isinstance(result, dict) and {"dataset", "cells", "runs", "seeds"} <= set(result)):
            sys.exit(f"{path} is not a result of benchmarks/pretraining_value.py")
        # the results' name is the dataset's, or the dataset's followed by a --name suffix
        datasets.add(max((d for d in DATASETS if result["dataset"].startswith(d)), key=len, default=result["dataset"]))
        for task, cells in result["cells"].items():
            cell = cells.get(str(float(args.fraction)))
            if cell is None:
                sys.exit(f"{path} has no {task} cell at the share {args.fraction:g}; it has "
                         f"{', '.join(cells)}")
            if task in tasks:
                sys.exit(f"{task} is in two of the files; give each task once")
            pre = "pretrain-loo" if task == "next-item" else f"pretrain-random-s{result['seeds'][0]}"
            pretrainings[pre] = result["runs"][pre]["seconds"]
            pretrained, scratch = cell["pretrained"], cell["scratch"]
            reached = pretrained["seconds_to_scratch_best"]
            all_reached = reached["reached"] == len(reached["values"])
            tasks[task] = {
                "pretraining": pre, "seeds": result["seeds"], "source": os.path.basename(path),
                "pretrained_to_scratch_best_s": reached["median"] if all_reached else pretrained["seconds"]["mean"],
                "pretrained_reached": f"{reached['reached']}/{len(reached['values'])}",
                "pretrained_whole_s": pretrained["seconds"]["mean"],
                "scratch_to_best_s": scratch["seconds_to_scratch_best"]["median"],
                "scratch_whole_s": scratch["seconds"]["mean"]}
    if len(datasets) != 1:
        sys.exit(f"the files are of {len(datasets)} datasets ({', '.join(sorted(datasets))}); give one dataset's")
    pretrained_total = sum(pretrainings.values()) + sum(t["pretrained_to_scratch_best_s"] for t in tasks.values())
    scratch_to_best = sum(t["scratch_to_best_s"] for t in tasks.values())
    scratch_whole = sum(t["scratch_whole_s"] for t in tasks.values())
    dataset = datasets.pop()
    result = {"dataset": dataset, "fraction": args.fraction, "tasks": tasks, "pretrainings_s": pretrainings,
              "pretrained_total_s": pretrained_total, "scratch_to_best_total_s": scratch_to_best,
              "scratch_whole_total_s": scratch_whole, "sources": args.results, "machine": machine()}
    path = write_result("amortisation", args.name or dataset, result)
    print(f"## {dataset}: one pretraining per split and every task's fine-tuning, against every task from "
          f"scratch, with {args.fraction:.0%} of the labels ({machine()})\n")
    print("| task | pretrained: seconds to scratch's best (seeds reaching it) | scratch: seconds to its best | "
          "scratch: whole run |\n|---|---:|---:|---:|")
    for task, t in tasks.items():
        print(f"| {task} | {t['pretrained_to_scratch_best_s']:.0f} ({t['pretrained_reached']}) | "
              f"{t['scratch_to_best_s']:.0f} | {t['scratch_whole_s']:.0f} |")
    for pre, seconds in pretrainings.items():
        print(f"| {pre} (once) | {seconds:.0f} | | |")
    print(f"| **total** | **{pretrained_total:.0f}** | **{scratch_to_best:.0f}** | **{scratch_whole:.0f}** |")
    print(f"\npretrained / scratch: {pretrained_total / scratch_to_best:.2f} of scratch's time to its best, "
          f"{pretrained_total / scratch_whole:.2f} of its whole runs (medians over seeds, seconds on this machine)")
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
