"""Which history items to occlude: how often a cheap choice of M candidates holds the item whose removal
lowers a recommendation most (exact occlusion over the whole history), for several ways of choosing them.

    python benchmarks/explain_candidates.py --model RUN --data PREPARED [--users 300] [--sizes 5 8 10 12]

For validation users drawn at random (seeded), the model's top 10 are explained by exact occlusion (every
history item left out in turn); then, for each way of choosing M candidates per request (one set for all
10 recommendations, since every candidate costs a forward pass shared by them), the share of
recommendations whose exact top item is among the candidates, which is the share an occlusion of those
candidates names correctly (its weights are exact).  The choices: the newest M items (what the export's
``explain`` window does); gradient norm and gradient x input of the sum of the 10 scores with respect to
each position's input embedding (one backward pass); the cosine between a history item's and the
recommended items' output vectors (the best over the 10).  Exploration on the validation split only; the
JSON goes to ``benchmarks/results/explain_candidates_<name>.json``.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, machine, write_result  # noqa: E402

EXPLAINED = 10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a next-item run folder (tfrec finetune)")
    ap.add_argument("--data", required=True, help="the prepared dataset the model was trained on")
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--sizes", type=int, nargs="+", default=[3, 5, 8, 10, 12, 16])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", help="the results file's name (default: the dataset folder's name)")
    args = ap.parse_args()
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    sys.path.insert(0, REPO)
    import numpy as np
    import tensorflow as tf

    from tfrec.data import inputs, schema
    from tfrec.data.dataset import PreparedDataset
    from tfrec.export import signatures as sig
    from tfrec.models import persistence

    model, _ = persistence.load(persistence.resolve_model_dir(args.model), for_serving=True)
    if not hasattr(model, "_last_position_hidden") or hasattr(model, "query_tower"):
        sys.exit("--model must be a next-item run")
    dataset = PreparedDataset(args.data)
    vocab = os.path.join(dataset.path, schema.VOCAB_DIR, schema.ITEM_VOCAB_FILE)
    module = sig.SequenceServing(model, vocab, None, model.backbone.max_len, 100, explain_window=0)
    seqs = inputs.loo_sequences(dataset, schema.VALID)
    rng = np.random.default_rng(args.seed)
    users = rng.choice(len(seqs.histories), size=min(args.users, len(seqs.histories)), replace=False)
    rows = [list(seqs.histories[u][-(model.backbone.max_len - 1):]) for u in users]
    width = max(len(r) for r in rows)
    packed = np.zeros((len(rows), width + 1), np.int32)
    for i, r in enumerate(rows):
        packed[i, width - len(r):width] = r
    packed[:, width] = schema.MASK_ID
    packed = tf.constant(packed)
    history = packed[:, :width]
    best, rec = tf.math.top_k(module._masked(module.scores(packed), history, history > 0), k=EXPLAINED)
    # exact occlusion, one request at a time: variant p is the row without slot p
    slot, place = tf.range(width)[:, tf.newaxis], tf.range(width + 1)[tf.newaxis, :]
    source = tf.where(place <= slot, place - 1, place) + 1
    drops = []
    for i in range(len(rows)):
        variants = tf.gather(tf.pad(packed[i:i + 1], [[0, 0], [1, 0]]), source, axis=1)[0]  # [W, W + 1]
        scored = module.item_scores(variants, None, tf.repeat(rec[i:i + 1], width, axis=0))  # [W, E]
        drops.append((best[i][tf.newaxis, :] - scored).numpy().T)
    present = (history > 0).numpy()
    drops = np.where(present[:, np.newaxis, :], np.stack(drops), -np.inf)  # [B, E, W]
    top = drops.argmax(-1)  # [B, E] each recommendation's exact top slot
    # the choices' per-slot scores, [B, W], higher first
    table = model.backbone.token_embedding.embeddings
    with tf.GradientTape() as tape:
        hidden = model._last_position_hidden(packed)
        total = tf.reduce_sum(tf.einsum("nd,ned->ne", hidden, tf.gather(module.candidates, rec)))
    grad = tape.gradient(total, table)
    if not isinstance(grad, tf.IndexedSlices) or grad.values.shape[0] != packed.shape[0] * packed.shape[1]:
        sys.exit("the backbone reads its item embedding other than by one lookup of the packed ids")
    grad = tf.reshape(grad.values, [len(rows), width + 1, -1]).numpy()[:, :width]
    embedded = table.numpy()[history.numpy()]
    out = module.candidates.numpy()
    hv, rv = out[history.numpy()], out[rec.numpy()]
    cosine = np.einsum("bwd,bed->bew", hv, rv) / (
        np.linalg.norm(hv, axis=-1)[:, np.newaxis, :] * np.linalg.norm(rv, axis=-1)[:, :, np.newaxis] + 1e-9)
    choices = {"newest items (the explain window)": np.broadcast_to(np.arange(width, dtype=float), present.shape),
               "gradient norm": np.linalg.norm(grad, axis=-1),
               "gradient x input": (grad * embedded).sum(-1),
               "|gradient x input|": np.abs((grad * embedded).sum(-1)),
               "output-vector cosine to the recommendations": cosine.max(1)}
    shares = {}
    for name, score in choices.items():
        order = np.argsort(-np.where(present, score, -np.inf), axis=-1, kind="stable")
        shares[name] = {str(m): float(np.mean((order[:, np.newaxis, :m] == top[..., np.newaxis]).any(-1)))
                        for m in args.sizes}
    lengths = present.sum(1)
    result = {"model": os.path.abspath(args.model), "data": os.path.abspath(args.data), "users": len(rows),
              "history_items": {"median": float(np.median(lengths)), "min": int(lengths.min())},
              "recommendations": int(top.size), "split": "valid", "shares": shares, "machine": machine()}
    path = write_result("explain_candidates", args.name or os.path.basename(os.path.abspath(args.data)), result)
    print(f"\n## share of recommendations whose exact occlusion top item is among M candidates ({len(rows)} "
          f"validation users, median history {np.median(lengths):.0f} items)\n")
    print("| candidates chosen by | " + " | ".join(f"M = {m}" for m in args.sizes) + " |")
    print("|---|" + "---:|" * len(args.sizes))
    for name, by in shares.items():
        print(f"| {name} | " + " | ".join(f"{by[str(m)]:.1%}" for m in args.sizes) + " |")
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
