"""What an explanation costs and whether it names what matters: the export's ``explain`` signature beside
``serving_default``, on histories of 50 items, one request at a time, in a TensorFlow-only process (as
TensorFlow Serving runs the graph).

    python benchmarks/explain_latency.py --model RUN --data PREPARED [--windows 0 10] [--requests 200]

The model is exported once per explain window (``tfrec export --explain-window N``: the last N history
items are left out in turn, one forward pass each; 0 leaves out every item, exact occlusion over the whole
history).  Requests are the last 50 items of validation users with at least 50 (fewer users: the longest
histories).  The signatures are called in turn on each request, after a warm-up call each, and the median
latency of each and its ratio to ``serving_default`` are reported.

What a window names, beside exact occlusion (window 0): for each of the 10 explained recommendations of each
request, whether the history item it names first is the one whose removal lowers that recommendation most
(its weights are exact score drops either way, so only the choice of candidates can differ).  And what
that means for the request's first recommendation: its score drop without the item named first, beside the
drop without a history item drawn at random (both measured with ``serving_default``; an item pushed out of
the top K counts the drop to the K-th score, a lower bound).  The JSON goes to
``benchmarks/results/explain_latency_<name>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, machine, write_result  # noqa: E402

LENGTH = 50


def export(model: str, data: str, window: int, root: str) -> str:
    name = f"w{window}"
    proc = subprocess.run([sys.executable, "-m", "tfrec", "export", "--model", model, "--data", data,
                           "--serving-root", root, "--name", name, "--explain-window", str(window)],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"exporting with --explain-window {window} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return os.path.join(root, name, "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a next-item run folder (tfrec finetune)")
    ap.add_argument("--data", required=True, help="the prepared dataset the model was trained on")
    ap.add_argument("--windows", type=int, nargs="+", default=[0, 10],
                    help="explain windows to export and measure (0, exact occlusion, is always included)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", help="the results file's name (default: the dataset folder's name)")
    args = ap.parse_args()
    windows = sorted(set(args.windows) | {0})
    if any(w < 0 for w in windows):
        sys.exit("--windows must be 0 or positive")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import numpy as np

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
    root = tempfile.mkdtemp(prefix="tfrec-explain-")
    exports = {w: export(args.model, args.data, w, root) for w in windows}
    import tensorflow as tf  # after the exports: this process only loads them

    loaded = {w: tf.saved_model.load(path) for w, path in exports.items()}
    default = loaded[0].signatures["serving_default"]
    fns = {"serving_default": default, **{f"explain_{w}": loaded[w].signatures["explain"] for w in windows}}

    def batch(h):
        return tf.constant([[""] * (width - len(h)) + h])

    for fn in fns.values():
        fn(history=batch(histories[0]))
    times = {name: [] for name in fns}
    answers = {w: [] for w in windows}
    for h in histories:
        for name, fn in fns.items():
            start = time.perf_counter()
            out = fn(history=batch(h))
            times[name].append(time.perf_counter() - start)
            if name != "serving_default":
                answers[int(name.split("_")[1])].append({k: v.numpy() for k, v in out.items()})
    rng = np.random.default_rng(args.seed)
    randoms = [h[int(rng.integers(len(h)))] for h in histories]

    def drop(h, out, item):
        top, score = out["item_ids"][0, 0], float(out["scores"][0, 0])
        rest = list(h)
        rest.remove(item)
        answer = default(history=batch(rest))
        ids = answer["item_ids"][0].numpy().tolist()
        left = answer["scores"][0].numpy()
        return score - float(left[ids.index(top)] if top in ids else left[-1])

    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    methods = {}
    for w in windows:
        exact, mine = answers[0], answers[w]
        same = [a["item_ids"][0].tolist() == b["item_ids"][0].tolist() for a, b in zip(exact, mine)]
        named = np.concatenate([b["because_item_ids"][0, :, 0] for b in mine])
        truth = np.concatenate([a["because_item_ids"][0, :, 0] for a in exact])
        firsts = [(h, out, out["because_item_ids"][0, 0, 0].decode()) for h, out in zip(histories, mine)]
        named_drop = [drop(h, out, first) for h, out, first in firsts if first]
        random_drop = [drop(h, out, r) for (h, out, first), r in zip(firsts, randoms) if first]
        methods[str(w)] = {
            "median_ms": med[f"explain_{w}"], "ratio": med[f"explain_{w}"] / med["serving_default"],
            "same_recommendations": float(np.mean(same)),
            "names_occlusions_top_item": float(np.mean(named == truth)), "recommendations": int(len(named)),
            "score_drop": {"named_first": statistics.mean(named_drop), "random_item": statistics.mean(random_drop),
                           "named_first_larger_share": float(np.mean(np.array(named_drop) >= np.array(random_drop)))}}
    result = {"model": os.path.abspath(args.model), "data": os.path.abspath(args.data), "requests": len(histories),
              "history_items": {"median": statistics.median(lengths), "min": min(lengths)},
              "serving_default_median_ms": med["serving_default"], "windows": methods, "machine": machine()}
    name = args.name or os.path.basename(os.path.abspath(args.data))
    path = write_result("explain_latency", name, result)
    print(f"\n## explain beside serving_default, {len(histories)} requests of {min(lengths)}-{max(lengths)} history "
          f"items, batch 1 ({machine()})\n")
    print("| signature | median ms | / serving_default | names exact occlusion's top item | score drop: named "
          "first / random item |\n|---|---:|---:|---:|---:|")
    print(f"| serving_default | {med['serving_default']:.1f} | 1.0 | | |")
    for w, m in methods.items():
        label = "explain, exact occlusion (window 0)" if w == "0" else f"explain, window {w}"
        print(f"| {label} | {m['median_ms']:.1f} | {m['ratio']:.1f}x | {m['names_occlusions_top_item']:.1%} | "
              f"{m['score_drop']['named_first']:.3f} / {m['score_drop']['random_item']:.3f} |")
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
