"""What an explanation costs and whether it names what matters: the export's ``explain`` signature
(occlusion: every history item left out in turn, all variants scored in one batched call) beside
``serving_default``, on histories of 50 items, one request at a time, in a TensorFlow-only process (as
TensorFlow Serving runs the graph).

    python benchmarks/explain_latency.py --export SERVING_ROOT/NAME/VERSION --data PREPARED [--requests 50]

Requests are the last 50 items of validation users with at least 50 (fewer users: the longest
histories).  The two signatures are called alternately, after a warm-up call each, and the median
latency of each and their ratio are reported.  Faithfulness: occlusion's weights are the score drops
themselves, so the check is what they mean: for each request's first recommendation, the score drop when
the history item the explanation names first is left out, beside the drop for a history item drawn at
random (both measured with serving_default; an item pushed out of the top K counts the drop to the K-th
score, a lower bound).  The JSON goes to ``benchmarks/results/explain_latency_<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, machine, write_result  # noqa: E402

LENGTH = 50


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", required=True, help="an export version folder (tfrec export)")
    ap.add_argument("--data", required=True, help="the prepared dataset the model was trained on")
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", help="the results file's name (default: the export's model name)")
    args = ap.parse_args()
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, REPO)
    from tfrec.data import inputs, schema
    from tfrec.data.dataset import PreparedDataset

    dataset = PreparedDataset(args.data)
    seqs = inputs.loo_sequences(dataset, schema.VALID)
    order = np.argsort([-len(h) for h in seqs.histories], kind="stable")[:args.requests]
    token = dataset.item_vocab.token
    histories = [[token(int(i)) for i in seqs.histories[u][-LENGTH:]] for u in order]
    lengths = [len(h) for h in histories]
    width = max(lengths)
    model = tf.saved_model.load(args.export)
    default, explain = model.signatures["serving_default"], model.signatures["explain"]

    def batch(h):
        return tf.constant([[""] * (width - len(h)) + h])

    default(history=batch(histories[0]))
    explain(history=batch(histories[0]))
    times = {"serving_default": [], "explain": []}
    answers = []
    for h in histories:
        for name, fn in (("serving_default", default), ("explain", explain)):
            start = time.perf_counter()
            out = fn(history=batch(h))
            times[name].append(time.perf_counter() - start)
            if name == "explain":
                answers.append({k: v.numpy() for k, v in out.items()})
    rng = np.random.default_rng(args.seed)
    named, random_drop = [], []
    for h, out in zip(histories, answers):
        top, score = out["item_ids"][0, 0], float(out["scores"][0, 0])

        def drop(item):
            rest = list(h)
            rest.remove(item)
            answer = default(history=batch(rest))
            ids = answer["item_ids"][0].numpy().tolist()
            left = answer["scores"][0].numpy()
            return score - float(left[ids.index(top)] if top in ids else left[-1])

        first = out["because_item_ids"][0, 0, 0].decode()
        if first:
            named.append(drop(first))
            random_drop.append(drop(h[int(rng.integers(len(h)))]))
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    result = {"export": os.path.abspath(args.export), "data": os.path.abspath(args.data), "requests": len(histories),
              "history_items": {"median": statistics.median(lengths), "min": min(lengths)},
              "median_ms": med, "ratio": med["explain"] / med["serving_default"],
              "score_drop": {"named_first": statistics.mean(named), "random_item": statistics.mean(random_drop),
                             "named_first_larger_share": float(np.mean(np.array(named) >= np.array(random_drop)))},
              "method": "occlusion", "machine": machine()}
    name = args.name or os.path.basename(os.path.dirname(os.path.abspath(args.export)))
    path = write_result("explain_latency", name, result)
    print(f"\n## explain beside serving_default, {len(histories)} requests of {min(lengths)}-{max(lengths)} history "
          f"items, batch 1 ({machine()})\n")
    print("| signature | median latency (ms) |\n|---|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.1f} |")
    print(f"\nexplain / serving_default: {result['ratio']:.1f}x")
    print(f"score drop of the first recommendation without the history item named first: "
          f"{result['score_drop']['named_first']:.3f}; without a random history item: "
          f"{result['score_drop']['random_item']:.3f} (named >= random in "
          f"{result['score_drop']['named_first_larger_share']:.0%} of requests)")
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
