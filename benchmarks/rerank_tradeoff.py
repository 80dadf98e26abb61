"""What re-ranking costs and buys: NDCG@10 against intra-list diversity, coverage and tail share as the
export's re-ranking knobs move (``diversity``: MMR; ``popularity_penalty``: popularity calibration).

    python benchmarks/rerank_tradeoff.py ml-100k --workdir W --reuse
    python benchmarks/rerank_tradeoff.py beauty --workdir W --reuse         (trains the shipped config: hours)
    python benchmarks/rerank_tradeoff.py ml-100k --model RUN --data DATA    (a next-item run trained already)

Without ``--model`` the dataset's shipped config is pretrained and fine-tuned in the work folder (kept
with ``--reuse``).  Every grid point is ``tfrec evaluate --rerank`` on the **validation** split (the
same re-ranker the export's ``rerank`` signature runs); the setting is chosen there by a fixed rule:
of the points that lose at most ``--max-loss`` (2%) of the plain list's validation NDCG@10, the one
with the largest sum of relative gains in intra-list diversity (item embeddings) and coverage@10.  Then
the test split is read once, for the plain list and for the chosen setting.  The JSON goes to
``benchmarks/results/rerank_tradeoff_<dataset>.json``, the trade-off plot to ``docs/figures/``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, machine, measured_run, prepared_data, read_test, tfrec, write_result  # noqa: E402

DATASETS = {  # name: (prepare arguments, local folder, shipped next-item config)
    "beauty": (["amazon-s3rec", "--name", "Beauty"], "amazon-beauty", "configs/beauty.yaml"),
    "ml-100k": (["movielens-100k"], "ml-100k", "configs/ml-100k.yaml"),
}
DIVERSITY = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)
PENALTY = (0.0, 0.25, 0.5, 1.0, 2.0)
SHOWN = ("ndcg@10", "hr@10", "coverage@10", "gini@10", "diversity_embeddings", "diversity_attributes", "novelty",
         "tail_share")


def figures(report: dict) -> dict:
    b = report["beyond_accuracy"]
    return {"ndcg@10": report["metrics"]["ndcg@10"], "hr@10": report["metrics"]["hr@10"],
            "coverage@10": b["coverage@10"], "gini@10": b["gini@10"], "diversity_embeddings": b.get("diversity_embeddings"),
            "diversity_attributes": b.get("diversity_attributes"), "novelty": b["novelty"],
            "average_popularity": b["average_popularity"], "tail_share": b["tail_share"]}


def knobs_args(diversity: float, penalty: float) -> list[str]:
    return ["--rerank", f"diversity={diversity:g}", f"popularity_penalty={penalty:g}"]


def choose(points: list[dict], plain: dict, max_loss: float) -> dict:
    """The rule: within `max_loss` of the plain validation NDCG@10, the largest relative gain in embedding
    diversity plus coverage@10 (the plain list itself when no point gains)."""
    def gain(p):
        return (p["valid"]["diversity_embeddings"] / plain["diversity_embeddings"] - 1
                + p["valid"]["coverage@10"] / plain["coverage@10"] - 1)

    allowed = [p for p in points if p["valid"]["ndcg@10"] >= (1 - max_loss) * plain["ndcg@10"]]
    return max(allowed, key=gain)


def plot(result: dict, path: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = [("diversity_embeddings", "intra-list diversity (embeddings)"), ("coverage@10", "coverage@10"),
              ("tail_share", "tail share of the lists")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8))
    for ax, (key, label) in zip(axes, panels):
        for penalty in result["grid"]["popularity_penalty"]:
            line = sorted((p for p in result["points"] if p["popularity_penalty"] == penalty),
                          key=lambda p: p["diversity"])
            ax.plot([p["valid"][key] for p in line], [p["valid"]["ndcg@10"] for p in line], "o-", ms=3,
                    label=f"popularity_penalty {penalty:g}")
        c = result["chosen"]
        ax.plot([c["valid"][key]], [c["valid"]["ndcg@10"]], "k*", ms=12, label="chosen on validation")
        ax.set_xlabel(label)
        ax.set_ylabel("validation NDCG@10")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{result['dataset']}: re-ranking trade-off (diversity 0 to "
                 f"{max(result['grid']['diversity']):g} along each line)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--model", help="a finished next-item run (default: train the shipped config in --workdir)")
    ap.add_argument("--data", help="the prepared dataset --model was trained on (with --model)")
    ap.add_argument("--diversity", nargs="+", type=float, default=list(DIVERSITY))
    ap.add_argument("--popularity-penalty", nargs="+", type=float, default=list(PENALTY))
    ap.add_argument("--max-loss", type=float, default=0.02, help="the most validation NDCG@10 to give up (share)")
    ap.add_argument("--no-test", action="store_true",
                    help="validation only: trace the grid and show the choice, read no test split (exploration)")
    ap.add_argument("--workdir", help="where runs and reports go (default: a temporary folder)")
    ap.add_argument("--reuse", action="store_true", help="keep runs and reports an earlier call finished")
    args = ap.parse_args()
    if bool(args.model) != bool(args.data):
        sys.exit("--model and --data go together")
    prep_args, folder, config = DATASETS[args.dataset]
    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix=f"tfrec-rerank-{args.dataset}-"))
    os.makedirs(work, exist_ok=True)
    runs = {}
    if args.model:
        model, data = os.path.abspath(args.model), os.path.abspath(args.data)
    else:
        data = prepared_data(work, prep_args, folder, args.reuse)
        common = ["--data", data, "--config", os.path.join(REPO, config), "--verbose", "2"]
        runs["pretrain"] = measured_run("pretrain", tfrec("pretrain", "--out", f"{work}/pretrain", *common, "--overwrite"),
                                        work, args.reuse)
        runs["finetune"] = measured_run("finetune", tfrec("finetune", "--task", "next-item", "--out", f"{work}/finetune",
                                                          "--pretrained", f"{work}/pretrain", *common, "--overwrite"),
                                        work, args.reuse)
        model = f"{work}/finetune"
    sys.path.insert(0, REPO)
    from tfrec.evaluation import sequential

    points = []
    for diversity, penalty in itertools.product(args.diversity, args.popularity_penalty):
        out = os.path.join(work, f"valid_d{diversity:g}_p{penalty:g}.json")
        if args.reuse and os.path.exists(out):
            report = json.load(open(out))
        else:
            start = time.perf_counter()
            report, _, _ = sequential.evaluate_saved(model, data, "valid", rerank={
                "diversity": diversity, "popularity_penalty": penalty})
            report["wall_seconds"] = time.perf_counter() - start
            with open(out, "w") as f:
                json.dump(report, f)
        points.append({"diversity": diversity, "popularity_penalty": penalty, "valid": figures(report),
                       "seconds": report.get("wall_seconds")})
        print(f"diversity {diversity:g}, popularity_penalty {penalty:g}: " + ", ".join(
            f"{k} {points[-1]['valid'][k]:.4f}" for k in SHOWN if points[-1]["valid"][k] is not None), flush=True)
    plain = next(p for p in points if p["diversity"] == 0 and p["popularity_penalty"] == 0)["valid"]
    chosen = choose(points, plain, args.max_loss)
    if args.no_test:
        print(f"\nchosen on validation: diversity {chosen['diversity']:g}, popularity_penalty "
              f"{chosen['popularity_penalty']:g}: " + ", ".join(
                  f"{k} {chosen['valid'][k] / plain[k] - 1:+.1%}" for k in SHOWN if plain[k]))
        with open(os.path.join(work, "validation_grid.json"), "w") as f:
            json.dump({"points": points, "chosen": chosen}, f, indent=1)
        return
    keep = bool(args.reuse)
    test_plain = figures(read_test(work, "plain", ["--model", model, "--data", data], keep))
    test_chosen = figures(read_test(work, "chosen", ["--model", model, "--data", data,
                                                     *knobs_args(chosen["diversity"], chosen["popularity_penalty"])],
                                    keep and os.path.exists(os.path.join(work, "chosen.json"))
                                    and json.load(open(os.path.join(work, "chosen.json"))) == chosen))
    with open(os.path.join(work, "chosen.json"), "w") as f:
        json.dump(chosen, f)
    from tfrec.evaluation import test_reads

    result = {"dataset": args.dataset, "model": model, "data": data, "runs": runs, "max_loss": args.max_loss,
              "grid": {"diversity": args.diversity, "popularity_penalty": args.popularity_penalty}, "points": points,
              "chosen": chosen, "rule": "within max_loss of the plain validation NDCG@10, the largest relative gain "
                                        "in embedding diversity plus coverage@10",
              "test": {"plain": test_plain, "chosen": test_chosen}, "test_reads": test_reads.summary(data),
              "machine": machine(), "workdir": work}
    figure = plot(result, os.path.join(REPO, "docs", "figures", f"rerank_tradeoff_{args.dataset}.png"))
    result["figure"] = os.path.relpath(figure, REPO) if figure else None
    path = write_result("rerank_tradeoff", args.dataset, result)
    print(f"\n## {args.dataset}: re-ranking chosen on validation (diversity {chosen['diversity']:g}, "
          f"popularity_penalty {chosen['popularity_penalty']:g}), test read once ({machine()})\n")
    print("| list | " + " | ".join(SHOWN) + " |\n|---|" + "---:|" * len(SHOWN))
    for name, row in (("plain top-10", test_plain), ("re-ranked", test_chosen)):
        print(f"| {name} | " + " | ".join("n/a" if row[k] is None else f"{row[k]:.4f}" for k in SHOWN) + " |")
    ratio = {k: test_chosen[k] / test_plain[k] - 1 for k in SHOWN if test_plain[k]}
    print("| change | " + " | ".join(f"{ratio[k]:+.1%}" if k in ratio else "n/a" for k in SHOWN) + " |")
    print(f"\nresults: {path}" + (f"; figure: {figure}" if figure else ""))


if __name__ == "__main__":
    main()
