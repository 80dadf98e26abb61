"""Ablation of the extra pretraining objectives: validation NDCG@10 after the same fine-tuning.

Variants: the cloze objective alone, + masked-item attribute prediction, + segment
continuation, + both.  Each is pretrained and then fine-tuned with identical settings
(the dataset's committed config, fine-tuning shortened to `--finetune-epochs` epochs
of random-prefix examples to keep the four runs affordable on 2 cores); the
figure that decides is validation NDCG@10 (the test split is never read).

    python benchmarks/pretrain_ablation.py ml-100k [--pretrain-epochs 30 --finetune-epochs 10 --finetune-lr 0.002]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, data_dir, machine, run_measured, write_result  # noqa: E402
from sequential_quality import DATASETS, checked, tfrec  # noqa: E402

ATTR = "experimental.attribute_weight="
CONT = "pretrain.continuation_weight="
VARIANTS = {
    "cloze": ["--set", ATTR + "0", "--set", CONT + "0"],
    "cloze + attributes": ["--set", ATTR + "0.5", "--set", CONT + "0"],
    "cloze + continuation": ["--set", ATTR + "0", "--set", CONT + "0.5"],
    "cloze + attributes + continuation": ["--set", ATTR + "0.5", "--set", CONT + "0.5"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--finetune-lr", type=float, default=0.002)
    ap.add_argument("--pretrain-epochs", type=int, default=30)
    ap.add_argument("--workdir")
    args = ap.parse_args()
    prep_args, folder, config = DATASETS[args.dataset]
    config = os.path.join(REPO, config)
    work = args.workdir or tempfile.mkdtemp(prefix=f"tfrec-ablation-{args.dataset}-")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    checked(run_measured(tfrec("data", "prepare", *prep_args, "--path", os.path.join(data_dir(), folder), "--out", data),
                         os.path.join(work, "prepare.log")), "prepare", os.path.join(work, "prepare.log"))
    finetune = ["--set", "finetune.examples=random-prefix", "--epochs", str(args.finetune_epochs),
                "--set", "finetune.patience=0", "--set", f"finetune.learning_rate={args.finetune_lr}"]
    rows = {}
    for i, (name, extra) in enumerate(VARIANTS.items()):
        pre, ft = os.path.join(work, f"pre{i}"), os.path.join(work, f"ft{i}")
        r1 = checked(run_measured(tfrec("pretrain", "--data", data, "--out", pre, "--config", config, "--verbose", "2",
                                        "--epochs", str(args.pretrain_epochs), *extra), f"{pre}.log"),
                     f"pretrain {name}", f"{pre}.log")
        r2 = checked(run_measured(tfrec("finetune", "--data", data, "--pretrained", pre, "--out", ft, "--config", config,
                                        "--verbose", "2", *finetune), f"{ft}.log"), f"finetune {name}", f"{ft}.log")
        pre_valid = json.load(open(os.path.join(pre, "metrics.json")))["valid"]
        ft_valid = json.load(open(os.path.join(ft, "metrics.json")))["valid"]
        rows[name] = {"pretrain_valid_ndcg@10": pre_valid["ndcg@10"], "valid_ndcg@10": ft_valid["ndcg@10"],
                      "valid_hr@10": ft_valid["hr@10"], "pretrain_seconds": r1["seconds"], "finetune_seconds": r2["seconds"]}
        print(f"{name}: validation NDCG@10 {ft_valid['ndcg@10']:.4f}", flush=True)
    base = rows["cloze"]["valid_ndcg@10"]
    path = write_result("pretrain_ablation", args.dataset, {
        "variants": rows, "pretrain_epochs": args.pretrain_epochs, "finetune_epochs": args.finetune_epochs,
        "finetune_learning_rate": args.finetune_lr, "config": os.path.relpath(config, REPO)})
    print(f"\n## Pretraining objectives, {args.dataset} ({machine()}); validation split, after the same fine-tuning\n")
    print("| pretraining objectives | valid NDCG@10 after pretraining | valid NDCG@10 after fine-tuning | HR@10 | vs cloze | pretrain s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['pretrain_valid_ndcg@10']:.4f} | {r['valid_ndcg@10']:.4f} | {r['valid_hr@10']:.4f} | "
              f"{r['valid_ndcg@10'] / base:.3f}x | {r['pretrain_seconds']:.0f} |")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
