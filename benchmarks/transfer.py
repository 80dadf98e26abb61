"""Transfer from a wider corpus: next-item fine-tuning on a dataset from a backbone pretrained on its own
training sequences, on them pooled with another dataset's users (items linked by title and year), and on
the other dataset's users alone, against from scratch.

    python benchmarks/transfer.py ml-100k --corpus ml-latest-small --workdir W --reuse [--seeds 0 1 2]

The pretrainings (``tfrec pretrain``, the dataset's config): ``own`` on the target's training sequences;
``pooled`` with ``--data TARGET --data CORPUS`` (the corpus's whole histories added, the encoder shared,
linked movies one item); ``other`` the same without the target's sequences (``pretrain.with_target:
false``: the corpus alone, the target lending its vocabulary and validation split).  Each is fine-tuned on
the target with the config's settings, epochs chosen on validation, and each model's test split read once
(leave-one-out, full ranking).  The commands are those of ``benchmarks/privacy.py`` (its non-private arms
and ``--public-corpus`` pretraining), so a work folder of that benchmark keeps its runs and their test
reads under ``--reuse``.  JSON: ``benchmarks/results/transfer_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, measured_run, read_test, write_result  # noqa: E402
from privacy import PUBLIC, arm_run, corpus_pretrain, shared_start  # noqa: E402  (the same commands)

STARTS = {"scratch": "scratch", "own": "pretrained", "pooled": "pooled", "other": "public"}  # row: arm_run start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(PUBLIC))
    ap.add_argument("--corpus", required=True, help="the other dataset (ml-100k: ml-latest-small)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--workdir")
    ap.add_argument("--reuse", action="store_true")
    args = ap.parse_args()
    if args.corpus not in PUBLIC[args.dataset]:
        sys.exit(f"no corpus {args.corpus!r} for {args.dataset}; known: {', '.join(PUBLIC[args.dataset])}")
    work = args.workdir or tempfile.mkdtemp(prefix="tfrec-transfer-")
    os.makedirs(work, exist_ok=True)
    data, common, own = shared_start(args.dataset, work, args.reuse)
    pretrainings = {"own": own,
                    "pooled": corpus_pretrain(args.dataset, args.corpus, work, common, args.reuse, with_target=True),
                    "other": corpus_pretrain(args.dataset, args.corpus, work, common, args.reuse, with_target=False)}
    rows = {}
    for row, start in STARTS.items():
        for seed in args.seeds:
            name, command = arm_run(work, common, start, None, seed)
            run = measured_run(name, command, work, args.reuse)
            report = read_test(work, name, ["--model", os.path.join(work, name), "--data", data],
                               bool(run.get("reused")))
            summary = json.load(open(os.path.join(work, name, "run.json")))["summary"]
            rows.setdefault(row, []).append({
                "ndcg@10": report["metrics"]["ndcg@10"], "hr@10": report["metrics"]["hr@10"],
                "valid_ndcg@10": summary["valid"]["ndcg@10"], "best_epoch": summary["best_epoch"],
                "seconds": run["seconds"]})
    cells = {row: {k: {"mean": statistics.mean(r[k] for r in runs),
                       "sd": statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0}
                   for k in ("ndcg@10", "hr@10", "valid_ndcg@10")} | {"runs": runs} for row, runs in rows.items()}
    for row in ("own", "pooled", "other"):
        cells[row]["pretraining_seconds"] = pretrainings[row]["seconds"]
    path = write_result("transfer", args.dataset, {
        "dataset": args.dataset, "corpus": args.corpus, "seeds": args.seeds, "cells": cells,
        "pretrainings": pretrainings, "workdir": os.path.abspath(work), "command": sys.argv[1:],
        "machine": machine()})
    base = cells["scratch"]["ndcg@10"]["mean"]
    print(f"## {args.dataset} next-item from backbones pretrained on other data: {args.corpus} "
          f"({machine()}; seeds {args.seeds})\n")
    print("| backbone pretrained on | test NDCG@10 | test HR@10 | valid NDCG@10 | x scratch | pretraining s |")
    print("|---|---:|---:|---:|---:|---:|")
    for row, c in cells.items():
        pre = f"{c['pretraining_seconds']:.0f}" if "pretraining_seconds" in c else ""
        print(f"| {row} | {c['ndcg@10']['mean']:.4f} ± {c['ndcg@10']['sd']:.4f} | {c['hr@10']['mean']:.4f} ± "
              f"{c['hr@10']['sd']:.4f} | {c['valid_ndcg@10']['mean']:.4f} | {c['ndcg@10']['mean'] / base:.2f} | {pre} |")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
