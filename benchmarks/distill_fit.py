"""How closely next-item models match a distillation teacher on its own training examples.

Reads the teacher's targets that ``tfrec finetune --teacher`` cached in a run folder
(``teacher_targets.npz``: each training example's history and the teacher's top items with
their renormalised probabilities), draws a sample of the examples, and prints beside each
other, in nats per example:

- the teacher's entropy over its kept items (the least cross-entropy any model can reach);
- each model's cross-entropy against those targets (dropout off, full softmax);
- for the first model, the cross-entropy reached when its final state is replaced by a free
  vector per example, fitted to the targets with Adam while the item embeddings and bias stay
  as trained: how much of the gap the item side of the model leaves, whatever the encoder does.

    python benchmarks/distill_fit.py --targets W/distilled/teacher_targets.npz --models W/distilled W/finetune
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", required=True, help="a teacher_targets.npz from a tfrec finetune --teacher run")
    ap.add_argument("--models", nargs="+", required=True, help="next-item run or model folders trained on the same data")
    ap.add_argument("--sample", type=int, default=2048, help="training examples drawn (default 2048)")
    ap.add_argument("--steps", type=int, default=400, help="Adam steps of the free-state fit (default 400)")
    ap.add_argument("--name", default="beauty", help="suffix of the results file (default beauty)")
    args = ap.parse_args()

    import numpy as np
    import tensorflow as tf

    from tfrec.errors import TfrecError
    from tfrec.models import persistence
    from tfrec.models.tasks import teacher_cross_entropy, trim_leading_padding
    from tfrec.models.persistence import resolve_model_dir

    try:
        with np.load(args.targets) as cached:
            examples, ids, probs = cached["examples"], cached["ids"], cached["probs"]
    except (OSError, KeyError, ValueError) as e:
        sys.exit(f"distill_fit: {args.targets} is not a teacher_targets.npz of a tfrec run ({e})")
    if not len(examples) or args.sample < 1:
        sys.exit("distill_fit: no examples to sample")
    pick = np.random.default_rng(0).choice(len(examples), min(args.sample, len(examples)), replace=False)
    examples, ids, probs = examples[pick], ids[pick], probs[pick].astype(np.float32)
    entropy = float(np.mean(-np.sum(probs * np.log(np.maximum(probs, 1e-30)), axis=1)))

    def cross_entropy(logits, rows):
        return tf.reduce_sum(teacher_cross_entropy(logits, ids[rows], probs[rows]))

    rows_all = np.arange(len(examples))
    result = {"targets": os.path.abspath(args.targets), "sample": len(examples), "top_k": int(ids.shape[1]),
              "teacher_entropy": entropy, "models": {}}
    first = None
    for path in args.models:
        try:
            model, _ = persistence.load(resolve_model_dir(path))
        except TfrecError as e:
            sys.exit(f"distill_fit: {e}")
        width = model.backbone.max_len
        states, total = [], 0.0
        for i in range(0, len(examples), 512):
            rows = rows_all[i:i + 512]
            state = model._last_position_hidden(trim_leading_padding(tf.constant(examples[rows, -width:])))
            states.append(state)
            total += float(cross_entropy(model.head.project(state), rows))
        result["models"][os.path.abspath(path)] = {"cross_entropy": total / len(examples)}
        if first is None:
            first = (os.path.abspath(path), model, tf.concat(states, 0))

    path, model, states = first
    free = tf.Variable(states)
    optimizer = tf.keras.optimizers.Adam(0.05)
    for _ in range(args.steps):
        with tf.GradientTape() as tape:
            loss = cross_entropy(model.head.project(free), rows_all) / len(examples)
        optimizer.apply_gradients([(tape.gradient(loss, free), free)])
    result["models"][path]["free_state_cross_entropy"] = float(cross_entropy(model.head.project(free), rows_all)) / len(
        examples)
    out = write_result("distill_fit", args.name, result)

    print(f"## Fit to the teacher's top {result['top_k']} items, {len(examples):,} training examples ({machine()})\n")
    print("| model | cross-entropy (nats) | above the teacher's entropy |")
    print("|---|---:|---:|")
    print(f"| teacher's entropy (the floor) | {entropy:.3f} | |")
    for name, row in result["models"].items():
        print(f"| {name} | {row['cross_entropy']:.3f} | {row['cross_entropy'] - entropy:.3f} |")
        if "free_state_cross_entropy" in row:
            free_ce = row["free_state_cross_entropy"]
            print(f"| {name}, a free state per example, items as trained | {free_ce:.3f} | {free_ce - entropy:.3f} |")
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
