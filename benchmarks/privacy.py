"""What differential privacy costs: next-item fine-tuning with DP-SGD at several epsilons against the same
fine-tuning without it, from scratch and from a pretrained backbone, with time and memory.

    python benchmarks/privacy.py ml-100k --workdir W --reuse [--epsilons 1 3 8] [--seeds 0 1 2]
                                          [--dp-epochs 60] [--dp-learning-rate 0.003] [--set KEY=VALUE ...]
    python benchmarks/privacy.py ml-100k --task ranking --workdir W2 --dp-epochs 10 --dp-learning-rate 0.002

``--task ranking``: the rating task (``configs/ml-100k-tasks.yaml``, the random split; the backbone pretrained
on that split's training rows) with its test RMSE and MAE, scored once at the end of each run; the private
arms keep the encoder fixed, as the non-private ones do.

The backbone is pretrained once without privacy on the training sequences (the dataset's config); its
fine-tuning then protects each user's training sequence at the epsilon asked (``privacy.target_epsilon``,
``privacy.stages: [finetune]``, user-level, delta 1/users), so the pretrained arms answer "how much of the
utility does private fine-tuning keep when the backbone came from data treated as public" (here the same
users' training sequences: a stand-in for a public corpus, not a guarantee for them; say so beside the
figure). The non-private arms train with the config's settings; the private arms sample users at
``finetune.batch_size / users`` for ``--dp-epochs`` epochs of ``1 / rate`` steps at
``--dp-learning-rate`` (fixed, not searched: DP-SGD's noisy steps usually want a larger rate than the
config's), validating every 5 epochs.  Each model's test split is read once at its end (NDCG@10, HR@10); the table gives the mean and
standard deviation over seeds, the epsilon each run recorded, its fit time per step and its peak memory.
JSON: ``benchmarks/results/privacy_<dataset>.json``.

``--public-corpus`` adds the arms that answer it with another corpus: the backbone pretrained on a different
dataset's users alone (ML-100K: MovieLens latest-small, 610 other people, movies linked by title and year;
``pretrain --data TARGET --data PUBLIC --set pretrain.with_target=false``, so none of the target's sequences
is read; the target's validation items still choose its epoch), then fine-tuned on the target as the other
arms are (``public`` rows). ``--starts`` picks the arms' starts (default: scratch and pretrained, with public
when a corpus is given); with ``--reuse`` in an earlier work folder the finished arms are kept, their test
reads too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, measured_run, prepared_data, read_test, tfrec, write_result  # noqa: E402

DATASETS = {"ml-100k": (["movielens-100k"], "ml-100k", "configs/ml-100k.yaml"),
            "beauty": (["amazon-s3rec", "--name", "Beauty"], "amazon-beauty", "configs/beauty.yaml")}
# --task ranking: the TFRS rating task on the tutorials' random split, with benchmarks/tasks_quality.py's
# ranking settings for the non-private arms (a fixed pretrained encoder, 20 epochs, patience 3, rate .002).
RANKING_CONFIGS = {"ml-100k": "configs/ml-100k-tasks.yaml"}
# --public-corpus: (prepare arguments, data folder) of a corpus of other users whose items link to the target's
PUBLIC = {"ml-100k": {"ml-latest-small": (["movielens-latest-small"], "ml-latest-small")}}
RANKING = ["--set", "tasks.freeze_backbone=true", "--set", "tasks.epochs=20", "--set", "tasks.patience=3",
           "--learning-rate", "0.002"]


def spread(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def shared_start(dataset: str, work: str, reuse: bool, settings=(), config: str | None = None) -> tuple[str, list[str], dict]:
    """(prepared data, the commands' common arguments, the pretraining run) of a work folder: what this
    benchmark and ``benchmarks/federated.py`` share (the same commands, so ``--reuse`` keeps them)."""
    prepare, folder, default = DATASETS[dataset]
    config = config or default
    data = prepared_data(work, prepare, folder, reuse)
    common = ["--data", data, "--config", config] + [x for kv in settings for x in ("--set", kv)]
    pre = measured_run("pretrain", tfrec("pretrain", *common, "--out", os.path.join(work, "pretrain")), work, reuse)
    return data, common, pre


def corpus_pretrain(dataset: str, corpus: str, work: str, common: list[str], reuse: bool,
                    with_target: bool) -> dict:
    """The pretraining on `corpus` (a dataset of other users, :data:`PUBLIC`) beside the target's item space:
    alone (``public-pretrain``, none of the target's sequences) or pooled with the target's training
    sequences (``pooled-pretrain``)."""
    data = prepared_data(work, *PUBLIC[dataset][corpus], reuse, name="public-data")
    name = "pooled-pretrain" if with_target else "public-pretrain"
    return measured_run(name, tfrec("pretrain", *common, "--data", data,
                                    *([] if with_target else ["--set", "pretrain.with_target=false"]),
                                    "--out", os.path.join(work, name)), work, reuse)


def arm_run(work: str, common: list[str], start: str, eps: float | None, seed: int,
            task: str = "next-item") -> tuple[str, list[str]]:
    """(run name, fine-tuning command) of an arm before its privacy settings: `start` "pretrained" (from the
    work folder's pretraining) or "scratch"."""
    name = f"{start}-{'none' if eps is None else f'eps{eps:g}'}-s{seed}"
    task_args = [] if task == "next-item" else ["--task", task]  # next-item's command lines as recorded before
    backbone = {"pretrained": "pretrain", "public": "public-pretrain", "pooled": "pooled-pretrain"}.get(start)
    return name, tfrec("finetune", *task_args, *common, "--out", os.path.join(work, name), "--set", f"seed={seed}",
                       *(["--pretrained", os.path.join(work, backbone)] if backbone else ["--from-scratch"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 3.0, 8.0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--dp-epochs", type=int, default=60)
    ap.add_argument("--dp-learning-rate", type=float, default=0.003)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="every run's config")
    ap.add_argument("--task", choices=("next-item", "ranking"), default="next-item",
                    help="ranking: the rating task's test RMSE and MAE (datasets with ratings)")
    ap.add_argument("--public-corpus", help="pretrain also on this corpus alone (other users; for ml-100k: "
                                            "ml-latest-small) and fine-tune from it: the public rows")
    ap.add_argument("--starts", nargs="+", choices=("scratch", "pretrained", "public"),
                    help="the arms' starts (default: scratch pretrained, and public with --public-corpus)")
    ap.add_argument("--workdir")
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--name", help="the results' name (default: the dataset's, with -ranking for --task ranking)")
    args = ap.parse_args()
    starts = args.starts or ["scratch", "pretrained"] + (["public"] if args.public_corpus else [])
    if args.public_corpus and args.public_corpus not in PUBLIC.get(args.dataset, {}):
        sys.exit(f"no public corpus {args.public_corpus!r} for {args.dataset}; known: "
                 f"{', '.join(PUBLIC.get(args.dataset, {})) or 'none'}")
    if "public" in starts and not args.public_corpus:
        sys.exit("the public start needs --public-corpus")
    ranking = args.task == "ranking"
    if ranking and args.dataset not in RANKING_CONFIGS:
        sys.exit(f"{args.dataset} has no ratings: the ranking task needs them (ranking runs on "
                 f"{', '.join(RANKING_CONFIGS)})")
    work = args.workdir or tempfile.mkdtemp(prefix="tfrec-privacy-")
    os.makedirs(work, exist_ok=True)
    data, common, pre = shared_start(args.dataset, work, args.reuse, args.set,
                                     RANKING_CONFIGS[args.dataset] if ranking else None)
    stage = "tasks" if ranking else "finetune"
    public = None
    if "public" in starts:  # the encoder and the linked items learnt from the other users alone
        public = corpus_pretrain(args.dataset, args.public_corpus, work, common, args.reuse, with_target=False)
    arms = [(None, s) for s in starts] + [(e, s) for e in args.epsilons for s in starts]
    rows = {}
    for eps, start in arms:
        for seed in args.seeds:
            name, command = arm_run(work, common, start, eps, seed, args.task)
            if ranking and eps is None:
                command += RANKING
            if eps is not None:
                command += ["--set", f"privacy.target_epsilon={eps:g}", "--set", "privacy.stages=[finetune]",
                            "--set", f"{stage}.epochs={args.dp_epochs}",
                            "--set", f"{stage}.learning_rate={args.dp_learning_rate:g}",
                            "--set", f"{stage}.patience={args.dp_epochs}"]
                command += ["--set", "tasks.freeze_backbone=true"] if ranking else \
                    ["--set", "finetune.validate_every=5"]
            run = measured_run(name, command, work, args.reuse)
            summary = json.load(open(os.path.join(work, name, "run.json")))["summary"]
            if ranking:  # the run scored its test rows once, at its end
                figures = {k: summary["test"]["ranking"][k] for k in ("rmse", "mae")}
            else:
                report = read_test(work, name, ["--model", os.path.join(work, name), "--data", data],
                                   bool(run.get("reused")))
                figures = {k: report["metrics"][k] for k in ("ndcg@10", "hr@10")}
            steps = summary.get("privacy", {}).get("steps") or None
            rows.setdefault(f"{start} {'no DP' if eps is None else f'eps {eps:g}'}", []).append({
                **figures,
                "epsilon": summary.get("privacy", {}).get("epsilon"),
                "noise_multiplier": summary.get("privacy", {}).get("noise_multiplier"),
                "fit_seconds": summary["fit_seconds_this_process"], "steps": steps,
                "peak_rss_mb": run["peak_rss_mb"], "best_epoch": summary["best_epoch"]})
    names = ("rmse", "mae") if ranking else ("ndcg@10", "hr@10")
    cells = {arm: {**{k: spread([r[k] for r in runs]) for k in names}, "runs": runs} for arm, runs in rows.items()}
    path = write_result("privacy", args.name or args.dataset + ("-ranking" if ranking else ""),
                        {"cells": cells, "pretrain": pre, "public_pretrain": public,
                         "public_corpus": args.public_corpus, "seeds": args.seeds, "task": args.task,
                         "dp_epochs": args.dp_epochs, "command": sys.argv[1:]})
    print(f"## Private {args.task} fine-tuning: {args.dataset} ({machine()}; seeds {args.seeds})\n")
    print(f"| arm | {' | '.join(n.upper() for n in names)} | epsilon (delta 1/users) | noise | fit s | s per step | "
          "peak MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for arm, cell in cells.items():
        r0 = cell["runs"][0]
        per_step = f"{r0['fit_seconds'] / r0['steps']:.2f}" if r0["steps"] else "-"
        eps = "-" if r0["epsilon"] is None else f"{r0['epsilon']:.2f}"
        noise = "-" if r0["noise_multiplier"] is None else f"{r0['noise_multiplier']:.3f}"
        print(f"| {arm} | {cell[names[0]]['mean']:.4f} ± {cell[names[0]]['sd']:.4f} | "
              f"{cell[names[1]]['mean']:.4f} ± {cell[names[1]]['sd']:.4f} | {eps} | {noise} | "
              f"{r0['fit_seconds']:.0f} | {per_step} | {r0['peak_rss_mb']:.0f} |")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
