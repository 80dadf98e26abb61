"""How a trained next-item model serves new users: each test user's history cut to its last 0, 1, 2 and 3
items (as a user with that many interactions would be seen), beside popularity and, where the data has
demographics, popularity within the user's gender and age band.  With ``--retrieval``, a two-tower
retrieval model trained on the same leave-one-out split joins them: its query tower reads the cut history
and the user's features (demographics), so with no history at all it answers from demographics alone.

    python benchmarks/new_users.py ml-100k --model RUN --data PREPARED [--retrieval RUN]
    python benchmarks/new_users.py beauty --model RUN --data PREPARED

No setting is chosen here: each cut is one read of the test split (``tfrec evaluate --history-length N
--split test``), with the full history beside it; ``--keep`` keeps the figures an earlier call read.  The JSON goes to
``benchmarks/results/new_users_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, machine, write_result  # noqa: E402

LENGTHS = (0, 1, 2, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--model", required=True, help="a finished next-item run")
    ap.add_argument("--data", required=True, help="the prepared dataset it was trained on")
    ap.add_argument("--retrieval", help="a finished retrieval run on the same data's leave-one-out split")
    ap.add_argument("--lengths", nargs="+", type=int, default=list(LENGTHS))
    ap.add_argument("--keep", help="an earlier result of this benchmark for the same --model and --data: its "
                                   "figures are kept, not read again (a model's test split is read once)")
    args = ap.parse_args()
    kept = {}
    if args.keep:
        import json

        with open(args.keep) as f:
            earlier = json.load(f)
        if (earlier.get("model"), earlier.get("data")) != (os.path.abspath(args.model), os.path.abspath(args.data)):
            sys.exit(f"{args.keep} is a result for another --model or --data")
        kept = earlier["rows"]
    sys.path.insert(0, REPO)
    from tfrec.errors import TfrecError
    from tfrec.evaluation import sequential, test_reads

    rows = {}
    for length in [*args.lengths, None]:
        label = "full history" if length is None else f"{length} items"
        row = {}
        for name, kwargs in (("model", {"model": args.model}),
                             *((("retrieval", {"model": args.retrieval}),) if args.retrieval else ()),
                             ("popularity", {"baseline": sequential.POPULARITY}),
                             ("popularity by group", {"baseline": sequential.GROUP_POPULARITY})):
            if name in kept.get(label, {}):
                row[name] = kept[label][name]
                continue
            try:
                report, _, _ = sequential.evaluate_saved(data_dir=args.data, split="test", history_length=length,
                                                         **{"model": None, **kwargs})
            except TfrecError as e:  # no demographics: no group popularity
                print(f"{name}: {e}", file=sys.stderr)
                continue
            row[name] = {k: report["metrics"][k] for k in ("ndcg@10", "hr@10")}
        row["model / popularity"] = row["model"]["ndcg@10"] / row["popularity"]["ndcg@10"]
        if "retrieval" in row:
            row["retrieval / popularity"] = row["retrieval"]["ndcg@10"] / row["popularity"]["ndcg@10"]
        rows[label] = row
        print(f"{label}: " + ", ".join(f"{k} {v['ndcg@10']:.4f}" for k, v in row.items() if isinstance(v, dict))
              + f", model / popularity {row['model / popularity']:.2f}", flush=True)
    result = {"dataset": args.dataset, "model": os.path.abspath(args.model), "data": os.path.abspath(args.data),
              "retrieval": os.path.abspath(args.retrieval) if args.retrieval else None,
              "rows": rows, "test_reads": test_reads.summary(args.data), "machine": machine()}
    path = write_result("new_users", args.dataset, result)
    names = [n for n in ("model", "retrieval", "popularity", "popularity by group")
             if any(n in r for r in rows.values())]
    print(f"\n## {args.dataset}: new users, test NDCG@10 (HR@10) by how many interactions are known ({machine()})\n")
    ratios = [r for r in ("model / popularity", "retrieval / popularity") if any(r in row for row in rows.values())]
    print("| history | " + " | ".join(names + ratios) + " |\n|---|" + "---:|" * (len(names) + len(ratios)))
    for label, row in rows.items():
        cells = [f"{row[n]['ndcg@10']:.4f} ({row[n]['hr@10']:.4f})" if n in row else "n/a" for n in names]
        print(f"| {label} | " + " | ".join(cells + [f"{row[r]:.2f}" for r in ratios]) + " |")
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
