"""Next-item quality of an ensemble of trained models, beside each member and the published rows.

Combines finished next-item runs with `tfrec ensemble` (the mean of their log-probabilities;
it scores each member and the ensemble on the validation split), then reads the test split
once for each member and for the ensemble with `tfrec evaluate`, and prints the figures
beside the rows of ``../shared/ANCHORS.md``.  Choose the members on validation (the
figures `tfrec ensemble` prints), never on the test split.

    python benchmarks/ensemble_quality.py beauty --data W/data --models RUN RUN [RUN ...] [--workdir W2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import checked, machine, run_measured, tfrec, write_result  # noqa: E402
from sequential_quality import ANCHORS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(ANCHORS))
    ap.add_argument("--data", required=True, help="the prepared dataset folder the models were trained on")
    ap.add_argument("--models", nargs="+", required=True, help="two or more finished next-item run folders")
    ap.add_argument("--workdir", help="where the ensemble and the reports go (default: a temporary folder)")
    ap.add_argument("--name", default="", help="suffix of the results file (default: none)")
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix=f"tfrec-ensemble-{args.dataset}-")
    os.makedirs(work, exist_ok=True)
    log = lambda name: os.path.join(work, f"{name}.log")  # noqa: E731
    ensemble_dir = os.path.join(work, "ensemble")
    made = checked(run_measured(tfrec("ensemble", "--models", *args.models, "--out", ensemble_dir, "--overwrite",
                                      "--data", args.data), log("ensemble")), "ensemble", log("ensemble"))
    summary = json.load(open(os.path.join(ensemble_dir, "validation.json")))
    labels = [os.path.abspath(m) for m in args.models] + ["ensemble"]
    tests = {}
    for i, target in enumerate(args.models + [ensemble_dir]):
        out = os.path.join(work, f"test_{i}")
        checked(run_measured(tfrec("evaluate", "--model", target, "--data", args.data, "--split", "test", "--out", out),
                             log(f"eval_{i}")), f"evaluate {labels[i]}", log(f"eval_{i}"))
        tests[labels[i]] = json.load(open(f"{out}.json"))["metrics"]
    from tfrec.models.persistence import resolve_model_dir

    configs = []
    for m in args.models:
        config = json.load(open(os.path.join(resolve_model_dir(m), "config.json")))
        configs.append({"pretrained": config.get("pretrained"), "epoch": config.get("epoch"),
                        "finetune": config.get("run_config", {}).get("finetune")})
    valid = dict(zip(labels, summary.get("member_valid_metrics", []) + [summary.get("valid_metrics")]))
    result = {"members": labels[:-1], "member_settings": configs, "member_weights": summary["member_weights"],
              "valid": valid, "test": tests, "ensemble_seconds": made["seconds"],
              "ensemble_peak_rss_mb": made["peak_rss_mb"], "anchors": ANCHORS[args.dataset], "workdir": work}
    path = write_result("ensemble_quality", args.dataset + (f"-{args.name}" if args.name else ""), result)

    print(f"## {args.dataset}: leave-one-out, full ranking, history excluded ({machine()})\n")
    print("| model | valid NDCG@10 | test HR@5 | NDCG@5 | HR@10 | NDCG@10 | HR@20 | NDCG@20 | MRR | source |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, h5, n5, h10, n10, src in ANCHORS[args.dataset]:
        print(f"| {name} | | {h5:.4f} | {n5:.4f} | {h10:.4f} | {n10:.4f} | | | | {src} |")
    for label in labels:
        m, v = tests[label], valid.get(label) or {}
        vn = f"{v['ndcg@10']:.4f}" if v else ""
        print(f"| {label} | {vn} | {m['hr@5']:.4f} | {m['ndcg@5']:.4f} | {m['hr@10']:.4f} | {m['ndcg@10']:.4f} | "
              f"{m['hr@20']:.4f} | {m['ndcg@20']:.4f} | {m['mrr']:.4f} | this run |")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
