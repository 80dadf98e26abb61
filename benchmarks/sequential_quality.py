"""Next-item quality on the leave-one-out protocol: popularity, from scratch, pretrained + fine-tuned.

Runs the real commands (`tfrec pretrain`, `tfrec finetune`, `tfrec evaluate`) in fresh
processes with a committed config, measuring each one's wall time and peak memory,
and prints the test figures beside the published and measured rows of
``../shared/ANCHORS.md``.  Model selection reads the validation split only; the test
split is read once per model, at the end.  The time to reach the peer's NDCG@10 is read
from the per-epoch validation curve (validation is what a run may look at).

    python benchmarks/sequential_quality.py beauty    [--config configs/beauty.yaml]
    python benchmarks/sequential_quality.py ml-100k   [--config configs/ml-100k.yaml]
    python benchmarks/sequential_quality.py beauty --refit   (final models also trained on the validation items)
    python benchmarks/sequential_quality.py beauty --workdir W --reuse pretrain   (new fine-tuning settings over
        the pretraining run an earlier benchmark left in W, with the wall time and memory measured then)
    python benchmarks/sequential_quality.py beauty --scratch-only --config C   (a config meant to train from
        scratch: the from-scratch run alone, its test figure read once after its whole wall time)

    python benchmarks/sequential_quality.py beauty --no-scratch --with-scratch configs/beauty-causal-scratch.yaml:0
        --ensemble-weights 1 1   (one more model trained from scratch with another config and seed, for the
        ensemble, and the members' weights in it)
    python benchmarks/sequential_quality.py beauty ... --ensemble-weights ... --distill configs/beauty-distill.yaml
        (then the pretrained model fine-tuned once more with that config, learning from the ensemble:
        `tfrec finetune --teacher`, one model)
    python benchmarks/sequential_quality.py beauty ... --ensemble-search   (members and weights chosen on
        validation by tfrec ensemble --search instead of --ensemble-weights)

With the from-scratch run, the pretrained + fine-tuned and the from-scratch models are also combined
(`tfrec ensemble`, the mean of their log-probabilities) and the ensemble is tested as one more row.
Each `--with-scratch CONFIG:SEED` trains one more from-scratch model with that config and seed; it is
tested alone and joins the ensemble.  `--distill CONFIG` fine-tunes the pretrained backbone once more with
CONFIG, the ensemble as its teacher (knowledge distillation), and tests that single model too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, checked, data_dir, machine, run_measured, tfrec, write_result  # noqa: E402

DATASETS = {
    # name: (prepare arguments, local folder, default config)
    "beauty": (["amazon-s3rec", "--name", "Beauty"], "amazon-beauty", "configs/beauty.yaml"),
    "ml-100k": (["movielens-100k"], "ml-100k", "configs/ml-100k.yaml"),
}

# Rows of ../shared/ANCHORS.md: (model, HR@5, NDCG@5, HR@10, NDCG@10, source).
ANCHORS = {
    "beauty": [
        ("GRU4Rec", .0164, .0099, .0283, .0137, "P5 paper"),
        ("BERT4Rec", .0203, .0124, .0347, .0170, "P5 paper"),
        ("SASRec", .0387, .0249, .0605, .0318, "P5 paper"),
        ("S3-Rec (pretrained)", .0387, .0244, .0647, .0327, "P5 paper"),
        ("P5-B", .0508, .0379, .0664, .0429, "P5 paper"),
        ("T5-small, CID+IID", .0512, .0356, .0732, .0427, "Hua et al."),
        ("SASRec CE, RecBole (2 cores, 2112 s, 2.4 GB)", .0542, .0317, .0810, .0403, "measured peer"),
    ],
    "ml-100k": [
        ("SASRec CE, RecBole (2 cores, 2051 s, 1.3 GB)", .0806, .0461, .1357, .0636, "measured peer"),
    ],
}
PEER = {"beauty": (0.0403, 2112.0), "ml-100k": (0.0636, 2051.0)}


def curve(run_dir: str, offset: float, started: float) -> list[dict]:
    """Per-epoch validation NDCG@10/HR@10 with seconds since the whole pipeline began."""
    state = json.load(open(os.path.join(run_dir, "validation.json")))
    out = []
    for epoch, e in sorted(state["epochs"].items(), key=lambda kv: int(kv[0])):
        out.append({"epoch": int(epoch), "seconds": offset + e["time"] - started,
                    "ndcg@10": e["val_ndcg@10"], "hr@10": e["val_hr@10"]})
    return out


MEASURED = "measured.json"


def reusable(stage: str, run_dir: str, config_path: str, data: str, refit: bool,
             pretrained: str | None = None, seed: int | None = None,
             teacher: dict | None = None) -> tuple[dict | None, str]:
    """The measurements of the finished run in `run_dir` when it can stand for this
    benchmark's `stage` (``pretrain``, ``finetune``, ``scratch`` or a ``--with-scratch`` member,
    trained with `seed` when given), else None; and why not.

    It can when the benchmark that ran it left its wall time and peak memory in
    ``measured.json``, and it trained the same prepared data with the same settings (for
    pretraining, apart from the fine-tuning ones, ``finetune`` and ``tasks``) and, for
    fine-tuning, from the same pretrained run; for distillation (`teacher`: the ensemble's
    members and weights), from the same teacher."""
    from tfrec.data.dataset import PreparedDataset
    from tfrec.training.config import RunConfig
    from tfrec.models.persistence import resolve_model_dir
    from tfrec.training.trainer import data_fingerprint

    try:
        record = json.load(open(os.path.join(run_dir, "run.json")))
        measured = json.load(open(os.path.join(run_dir, MEASURED)))
    except (OSError, ValueError) as e:
        return None, f"no finished run with its measurements there ({e})"
    identity = record.get("identity", {})
    kind = "pretrain" if stage == "pretrain" else "finetune:next-item"
    if record.get("status") != "done" or identity.get("stage") != kind:
        return None, f"the run there is not a finished {kind} run"
    wanted = RunConfig.from_file(config_path).updated({"refit": refit, "seed": seed}).to_dict()
    # Read through the current RunConfig, so a setting added since that run counts at its default
    # (which is how the run trained) rather than as a difference.
    used = RunConfig.from_record(identity["config"]).to_dict()
    if teacher is not None:  # the teacher comes from --teacher, checked below
        wanted["finetune"]["teacher"] = used.get("finetune", {}).get("teacher")
    ignored = ("finetune", "tasks") if stage == "pretrain" else ()
    differing = sorted(k for k in set(wanted) | set(used) if k not in ignored and wanted.get(k) != used.get(k))
    if differing:
        return None, f"its settings differ in: {', '.join(differing)}"
    if identity["data"] != data_fingerprint(PreparedDataset(data)):
        return None, "it trained on other data"
    if stage != "pretrain" and identity.get("pretrained") != (
            os.path.abspath(resolve_model_dir(pretrained)) if pretrained else None):
        return None, "it started from other weights"
    if teacher is not None and (measured.get("teacher") != teacher or identity.get("teacher") != os.path.abspath(
            resolve_model_dir(os.path.join(os.path.dirname(os.path.abspath(run_dir)), "ensemble")))):
        return None, "it learnt from another teacher"
    return dict(measured, reused=True), ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--config", help="run config (default: the dataset's committed config)")
    ap.add_argument("--workdir", help="where runs go (default: a temporary folder)")
    ap.add_argument("--refit", action="store_true",
                    help="train the final models on the training and validation items (refit: true), with the "
                         "epochs the config chose on validation; results go to <dataset>-refit.json")
    ap.add_argument("--no-scratch", action="store_true", help="skip the from-scratch run")
    ap.add_argument("--scratch-only", action="store_true",
                    help="only the from-scratch run (no pretraining): for configs meant to train from scratch")
    ap.add_argument("--with-scratch", action="append", default=[], metavar="CONFIG:SEED",
                    help="one more model trained from scratch with this config and seed, tested alone and added "
                         "to the ensemble (repeatable)")
    ap.add_argument("--ensemble-weights", nargs="+", type=float, metavar="W",
                    help="one positive weight per ensemble member, in the order pretrained + fine-tuned, from "
                         "scratch, then the --with-scratch runs (default: equal); choose them on validation")
    ap.add_argument("--ensemble-search", action="store_true",
                    help="choose the ensemble's members and weights on validation (tfrec ensemble --search) "
                         "instead of giving --ensemble-weights")
    ap.add_argument("--distill", metavar="CONFIG",
                    help="after the ensemble, fine-tune the pretrained model once more with this config, the "
                         "ensemble as its teacher (tfrec finetune --teacher), and test that single model too")
    ap.add_argument("--reuse", default="", metavar="STAGES",
                    help="comma-separated stages (pretrain, finetune, scratch, members: the --with-scratch runs, "
                         "distilled: the --distill run, kept when its teacher is the same ensemble) "
                         "to keep from an earlier benchmark in WORKDIR when they ran on the same data and settings "
                         "(a kept pretraining run may have had other fine-tuning settings); their wall time and peak "
                         "memory are those measured then")
    args = ap.parse_args()
    if args.no_scratch and args.scratch_only:
        sys.exit("--no-scratch and --scratch-only leave nothing to run; pass one of them")
    reuse = {name for name in args.reuse.split(",") if name}
    unknown = reuse - {"pretrain", "finetune", "scratch", "members", "distilled"}
    if unknown:
        sys.exit(f"unknown stage {sorted(unknown)[0]!r} in --reuse; stages: pretrain, finetune, scratch, members, "
                 "distilled")
    members = {}  # stage name -> (config path, seed)
    for spec in args.with_scratch:
        path, _, seed = spec.rpartition(":")
        if not path or not seed.isdigit():
            sys.exit(f"--with-scratch {spec!r}: expected CONFIG:SEED, e.g. configs/beauty-causal-scratch.yaml:0")
        if not os.path.isfile(os.path.join(REPO, path)):
            sys.exit(f"--with-scratch {spec!r}: no config file {path}")
        name = f"member-{os.path.splitext(os.path.basename(path))[0]}-s{int(seed)}"
        if name in members:
            sys.exit(f"--with-scratch {spec!r} is given twice")
        members[name] = (os.path.join(REPO, path), int(seed))
    if members and args.scratch_only:
        sys.exit("--with-scratch adds members to the pretrained model's ensemble; it does not go with --scratch-only")
    stages = ["scratch"] if args.scratch_only else ["pretrain", "finetune"] + ([] if args.no_scratch else ["scratch"])
    stages += list(members)
    ensemble_members = [k for k in stages if k != "pretrain"]
    has_ensemble = "finetune" in stages and len(ensemble_members) > 1
    if args.ensemble_weights:
        if not has_ensemble:
            sys.exit("--ensemble-weights needs an ensemble: the pretrained run with --with-scratch runs or the "
                     "from-scratch run")
        if len(args.ensemble_weights) != len(ensemble_members) or min(args.ensemble_weights) <= 0:
            sys.exit(f"--ensemble-weights: give {len(ensemble_members)} positive weights, one per ensemble member")
    if args.ensemble_search and (args.ensemble_weights or not has_ensemble):
        sys.exit("--ensemble-search chooses the weights itself, and needs an ensemble: the pretrained run with "
                 "--with-scratch runs or the from-scratch run")
    if args.distill:
        if not has_ensemble:
            sys.exit("--distill needs an ensemble to learn from: the pretrained run with --with-scratch runs or the "
                     "from-scratch run")
        if not os.path.isfile(os.path.join(REPO, args.distill)):
            sys.exit(f"--distill: no config file {args.distill}")
    extra = ["--set", "refit=true"] if args.refit else []
    prep_args, folder, default_config = DATASETS[args.dataset]
    config = os.path.join(REPO, args.config or default_config)
    work = args.workdir or tempfile.mkdtemp(prefix=f"tfrec-bench-{args.dataset}-")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    log = lambda name: os.path.join(work, f"{name}.log")  # noqa: E731

    checked(run_measured(tfrec("data", "prepare", *prep_args, "--path", os.path.join(data_dir(), folder), "--out", data),
                         log("prepare")), "prepare", log("prepare"))
    commands = {
        "pretrain": ["pretrain", "--data", data, "--out", f"{work}/pretrain"],
        "finetune": ["finetune", "--task", "next-item", "--data", data, "--pretrained", f"{work}/pretrain", "--out",
                     f"{work}/finetune"],
        "scratch": ["finetune", "--task", "next-item", "--data", data, "--from-scratch", "--out", f"{work}/scratch"],
    }
    for name, (_, seed) in members.items():
        commands[name] = ["finetune", "--task", "next-item", "--data", data, "--from-scratch",
                          "--out", f"{work}/{name}", "--seed", str(seed)]
    runs = {}
    for name in stages:
        run_config, seed = members.get(name, (config, None))
        if name == "finetune" and name in reuse and not runs["pretrain"].get("reused"):
            print("finetune: not reusing it, since pretraining ran again; running it", flush=True)
        elif name in reuse or (name in members and "members" in reuse):
            kept, why = reusable(name, f"{work}/{name}", run_config, data, args.refit,
                                 f"{work}/pretrain" if name == "finetune" else None, seed)
            print(f"{name}: reusing {work}/{name}, measured when it ran" if kept else
                  f"{name}: not reusing {work}/{name}: {why}; running it", flush=True)
            if kept:
                runs[name] = kept
                continue
        runs[name] = checked(run_measured(tfrec(*commands[name], "--config", run_config, "--verbose", "2", "--overwrite",
                                                *extra), log(name)), name, log(name))
        with open(os.path.join(work, name, MEASURED), "w") as f:
            json.dump({k: runs[name][k] for k in ("seconds", "peak_rss_mb", "started")}, f)
    ensemble = None
    if has_ensemble:
        # The pretrained + fine-tuned and the from-scratch models start from different weights; their
        # mean log-probabilities rank better than either (tfrec ensemble, which also scores them on validation).
        weights = ["--weights", *map(str, args.ensemble_weights)] if args.ensemble_weights else []
        if args.ensemble_search:  # members and weights chosen on validation (greedy forward selection)
            weights = ["--search", "--data", data]
        ens = run_measured(tfrec("ensemble", "--models", *(f"{work}/{k}" for k in ensemble_members), *weights, "--out",
                                 f"{work}/ensemble", "--overwrite"), log("ensemble"))
        checked(ens, "ensemble", log("ensemble"))
        if not os.path.isfile(os.path.join(work, "ensemble", "validation.json")):
            sys.exit(f"the ensemble search kept one model (no other raised validation NDCG@10; "
                     f"{work}/ensemble/search.json): there is no ensemble to test or distil from")
        ensemble = json.load(open(os.path.join(work, "ensemble", "validation.json")))
        ensemble.update(seconds=ens["seconds"], peak_rss_mb=ens["peak_rss_mb"])
        stages_tested = stages + ["ensemble"]
    else:
        stages_tested = stages
    if args.distill:
        # One model that learns the ensemble's item distribution on every training example.
        teacher = {"members": ensemble["members"], "weights": ensemble["member_weights"]}
        distill_config = os.path.join(REPO, args.distill)
        kept, why = None, "not asked to"
        if "distilled" in reuse:
            kept, why = reusable("distilled", f"{work}/distilled", distill_config, data, args.refit,
                                 f"{work}/pretrain", teacher=teacher)
            print(f"distilled: reusing {work}/distilled, measured when it ran" if kept else
                  f"distilled: not reusing {work}/distilled: {why}; running it", flush=True)
        if kept:
            runs["distilled"] = kept
        else:
            runs["distilled"] = checked(run_measured(tfrec(
                "finetune", "--task", "next-item", "--data", data, "--pretrained", f"{work}/pretrain",
                "--teacher", f"{work}/ensemble", "--out", f"{work}/distilled", "--config", distill_config,
                "--verbose", "2", "--overwrite", *extra), log("distilled")), "distilled", log("distilled"))
            with open(os.path.join(work, "distilled", MEASURED), "w") as f:
                json.dump(dict({k: runs["distilled"][k] for k in ("seconds", "peak_rss_mb", "started")},
                               teacher=teacher), f)
        stages = stages + ["distilled"]
        stages_tested = stages_tested + ["distilled"]
    tests = {}
    for name, target in (("popularity", None), ("finetune", f"{work}/finetune"), ("scratch", f"{work}/scratch"),
                         ("pretrain", f"{work}/pretrain"), *((k, f"{work}/{k}") for k in members),
                         ("ensemble", f"{work}/ensemble"), ("distilled", f"{work}/distilled")):
        if name not in stages_tested + ["popularity"]:
            continue
        which = ["--baseline", "popularity"] if target is None else ["--model", target]
        out = os.path.join(work, f"test_{name}")
        checked(run_measured(tfrec("evaluate", *which, "--data", data, "--split", "test", "--out", out), log(f"eval_{name}")),
                f"evaluate {name}", log(f"eval_{name}"))
        tests[name] = json.load(open(f"{out}.json"))["metrics"]

    curves = {}
    if "finetune" in runs:
        curves["pretrained"] = curve(f"{work}/finetune", runs["pretrain"]["seconds"], runs["finetune"]["started"])
    if "scratch" in runs:
        curves["scratch"] = curve(f"{work}/scratch", 0.0, runs["scratch"]["started"])
    peer_ndcg, peer_seconds = PEER[args.dataset]
    # A refit trains on the validation items: its validation curve is not held out, so no time-to-reach.
    reach = {k: None if args.refit else next((p["seconds"] for p in c if p["ndcg@10"] >= peer_ndcg), None)
             for k, c in curves.items()}
    main_run = "finetune" if "finetune" in runs else "scratch"  # the run the config is for
    params = json.load(open(os.path.join(work, main_run, "model", "config.json")))["parameters"]
    summaries = {k: json.load(open(os.path.join(work, k, "run.json")))["summary"] for k in stages}
    for k, s in summaries.items():  # epochs trained (validation may run every few epochs)
        state = json.load(open(os.path.join(work, k, "validation.json")))
        s["epochs_run"] = state.get("last_epoch") or max(int(e) for e in state["epochs"])

    result = {
        "config": os.path.relpath(config, REPO), "config_settings": json.load(open(os.path.join(work, main_run, "run.json")))["identity"]["config"],
        "test": tests, "runs": {k: {kk: v[kk] for kk in ("seconds", "peak_rss_mb")} for k, v in runs.items()},
        "reused": sorted(k for k, v in runs.items() if v.get("reused")),
        "ensemble_weights_chosen_by": ("tfrec ensemble --search (validation)" if args.ensemble_search else
                                       "--ensemble-weights" if args.ensemble_weights else "equal"),
        "best_epochs": {k: s["best_epoch"] for k, s in summaries.items()},
        "epochs_run": {k: s["epochs_run"] for k, s in summaries.items()},
        "valid": {k: s["valid"] for k, s in summaries.items()},
        "validation_curves": curves, "seconds_to_peer_ndcg10_on_valid": reach,
        "peer": {"ndcg@10": peer_ndcg, "seconds": peer_seconds, "third_of_seconds": peer_seconds / 3},
        "parameters": params, "anchors": ANCHORS[args.dataset], "machine": machine(), "workdir": work,
        "refit": args.refit, "scratch_only": args.scratch_only,
    }
    if members:
        result["members"] = {k: {"config": os.path.relpath(c, REPO), "seed": sd} for k, (c, sd) in members.items()}
    if args.distill:
        result["distilled"] = {"config": args.distill, "teacher": f"{work}/ensemble",
                               "seconds_whole_pipeline": sum(r["seconds"] for r in runs.values())
                               + ensemble["seconds"]}
    if ensemble is not None:
        result["ensemble"] = {"members": ensemble_members, "weights": ensemble.get("member_weights"),
                              "valid": ensemble.get("valid_metrics"),
                              "member_valid": dict(zip(ensemble_members, ensemble.get("member_valid_metrics", []))),
                              "seconds": ensemble["seconds"], "peak_rss_mb": ensemble["peak_rss_mb"]}
    name = args.dataset + ("-refit" if args.refit else "") + \
        (f"-{os.path.splitext(os.path.basename(config))[0]}" if args.config else "") + ("-ensemble" if members else "") + \
        ("-distilled" if args.distill else "")
    path = write_result("sequential_quality", name, result)

    refit = ", models refit on training + validation items" if args.refit else ""
    print(f"## {args.dataset}: leave-one-out, full ranking, history excluded, test split{refit} ({machine()})\n")
    print("| model | HR@5 | NDCG@5 | HR@10 | NDCG@10 | HR@20 | NDCG@20 | MRR | source |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, h5, n5, h10, n10, src in ANCHORS[args.dataset]:
        print(f"| {name} | {h5:.4f} | {n5:.4f} | {h10:.4f} | {n10:.4f} | | | | {src} |")
    labels = {"popularity": "popularity", "pretrain": "tfrec pretrained only (cloze head, no fine-tuning)",
              "scratch": "tfrec next-item, from scratch", "finetune": "tfrec pretrained + fine-tuned",
              "ensemble": "tfrec ensemble: " + " + ".join(
                  {"finetune": "pretrained + fine-tuned", "scratch": "from scratch"}.get(k, k) for k in ensemble_members),
              "distilled": f"tfrec pretrained + fine-tuned with {args.distill}, distilled from the ensemble (one model)"}
    for k, (c, sd) in members.items():
        labels[k] = f"tfrec next-item, from scratch with {os.path.relpath(c, REPO)}, seed {sd}"
    for name in ("popularity", "pretrain", "scratch", "finetune", *members, "ensemble", "distilled"):
        if name not in tests:
            continue
        m = tests[name]
        print(f"| {labels[name]} | {m['hr@5']:.4f} | {m['ndcg@5']:.4f} | {m['hr@10']:.4f} | {m['ndcg@10']:.4f} | "
              f"{m['hr@20']:.4f} | {m['ndcg@20']:.4f} | {m['mrr']:.4f} | this run |")
    print("\n| stage | wall s | peak RSS MB | epochs (best) |")
    print("|---|---:|---:|---|")
    for k in stages:
        r = runs[k]
        label = f"{k} (reused: measured when it ran)" if r.get("reused") else k
        print(f"| {label} | {r['seconds']:.0f} | {r['peak_rss_mb']:.0f} | {summaries[k]['epochs_run']} ({summaries[k]['best_epoch']}) |")
    total = runs["scratch"]["seconds"] if args.scratch_only else runs["pretrain"]["seconds"] + runs["finetune"]["seconds"]
    what = "from scratch" if args.scratch_only else "pretrain + fine-tune"
    print(f"\nparameters: {params:,}; {what}: {total:.0f} s; peer: {peer_seconds:.0f} s "
          f"(a third: {peer_seconds / 3:.0f} s)")
    if args.distill:
        print(f"the distilled model's whole pipeline (pretraining, every ensemble member, the ensemble, "
              f"distillation): {result['distilled']['seconds_whole_pipeline']:.0f} s")
    if args.refit or args.scratch_only:
        model = "refit " * args.refit + ("from-scratch" if args.scratch_only else "pretrained + fine-tuned")
        print(f"test NDCG@10 of the {model} model, read once after the whole "
              f"{total:.0f} s: {tests[main_run]['ndcg@10']:.4f} (peer: {peer_ndcg} in {peer_seconds:.0f} s)")
    for k, s in reach.items():
        if args.refit:
            print(f"validation NDCG@10 ({k}): not held out in a refit, no time-to-reach figure")
            continue
        print(f"validation NDCG@10 >= {peer_ndcg} ({k}): " + (f"after {s:.0f} s ({s / peer_seconds:.2f} of the peer's time)"
                                                               if s is not None else "not reached"))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
