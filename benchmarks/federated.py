"""What federated fine-tuning costs: next-item fine-tuning on Flower, the users split across simulated clients
(FedAvg, optionally with client-level differential privacy), against the same fine-tuning on one machine after
the same number of passes over the data, with the bytes each round sends.

    python benchmarks/federated.py ml-100k --workdir W --reuse [--clients 10] [--rounds 8] [--local-epochs 1]
                                           [--dp NOISE:CLIP ...]

Run from the repository root with the same ``--workdir`` as ``benchmarks/privacy.py`` and both share the
pretrained backbone and the centralised arm (the same commands, kept with ``--reuse``): the backbone is
pretrained once on every training sequence (the dataset's config); the centralised arm fine-tunes it with
the config's settings (at most ``finetune.epochs`` passes, the best epoch chosen on validation); each
federated arm fine-tunes it on ``--clients`` clients for ``--rounds`` rounds of ``--local-epochs`` passes
each client over its own users (so rounds x local epochs passes over the data, the best round chosen on
validation).  Each model's test split is read once (NDCG@10, HR@10).  The JSON goes to
``benchmarks/results/federated_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, measured_run, read_test, tfrec, write_result  # noqa: E402
from privacy import DATASETS, arm_run, shared_start  # noqa: E402  (the privacy benchmark's backbone and arm)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--dp", nargs="*", default=[], metavar="NOISE:CLIP",
                    help="federated arms with client-level DP: noise multiplier and clipping norm of the updates")
    ap.add_argument("--workdir")
    ap.add_argument("--reuse", action="store_true")
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="tfrec-federated-")
    os.makedirs(work, exist_ok=True)
    data, common, pre = shared_start(args.dataset, work, args.reuse)
    pretrained = ["--pretrained", os.path.join(work, "pretrain")]
    federated = ["--federated", "--set", f"federated.clients={args.clients}", "--set",
                 f"federated.rounds={args.rounds}", "--set", f"federated.local_epochs={args.local_epochs}"]

    def federated_arm(name, *extra):
        return name, tfrec("finetune", *common, "--out", os.path.join(work, name), *pretrained, *federated, *extra)

    stem = f"federated-c{args.clients}-r{args.rounds}-e{args.local_epochs}"
    arms = {"centralised": arm_run(work, common, "pretrained", None, 0),
            f"federated, {args.clients} clients": federated_arm(stem)}
    for spec in args.dp:
        noise, clip = (float(x) for x in spec.split(":"))
        arms[f"federated, {args.clients} clients, DP noise {noise:g} clip {clip:g}"] = federated_arm(
            f"{stem}-dp{noise:g}-{clip:g}", "--set", f"federated.noise_multiplier={noise:g}",
            "--set", f"federated.clip_norm={clip:g}")
    rows = {}
    for label, (name, command) in arms.items():
        run = measured_run(name, command, work, args.reuse)
        summary = json.load(open(os.path.join(work, name, "run.json")))["summary"]
        report = read_test(work, name, ["--model", os.path.join(work, name), "--data", data], bool(run.get("reused")))
        fed = summary.get("federated", {})
        rows[label] = {"run": name, "ndcg@10": report["metrics"]["ndcg@10"], "hr@10": report["metrics"]["hr@10"],
                     "valid_ndcg@10": summary["valid"]["ndcg@10"], "best": summary["best_epoch"],
                     "passes": summary["epochs_run"] * (fed.get("local_epochs") or 1),
                     "seconds": run["seconds"], "peak_rss_mb": run["peak_rss_mb"],
                     "bytes_per_round": fed.get("bytes_per_round"), "privacy": summary.get("privacy")}
    path = write_result("federated", args.dataset, {"rows": rows, "pretrain": pre, "clients": args.clients,
                                                     "rounds": args.rounds, "local_epochs": args.local_epochs,
                                                     "command": sys.argv[1:]})
    print(f"\n## Federated next-item fine-tuning: {args.dataset} ({machine()})\n")
    print("| arm | test NDCG@10 | test HR@10 | valid NDCG@10 | best epoch / round | passes | MB a round | "
          "epsilon | wall s | peak MB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in rows.items():
        mb = "-" if r["bytes_per_round"] is None else f"{r['bytes_per_round'] / 1e6:.1f}"
        eps = "-" if not r["privacy"] else f"{r['privacy']['epsilon']:.2f}"
        print(f"| {label} | {r['ndcg@10']:.4f} | {r['hr@10']:.4f} | {r['valid_ndcg@10']:.4f} | {r['best']} | "
              f"{r['passes']} | {mb} | {eps} | {r['seconds']:.0f} | {r['peak_rss_mb']:.0f} |")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
