"""Re-ranking a model's scores for diversity and for popularity, in core TensorFlow ops.

The export's serving signatures, ``tfrec evaluate --rerank`` and the Python API call :func:`rerank`, so a
client that sets the knobs on a request gets exactly the lists the evaluation measured.  Two knobs, each
one value per request row (0 = off; both 0 = the model's own top-K, unchanged):

- ``diversity`` (λ in [0, 1]): maximal marginal relevance (Carbonell & Goldstein, 1998).  From the best
  ``pool`` items by score, items are chosen one at a time, each maximising
  ``(1 - λ) rel(i) - λ max_{j chosen} cos(v_i, v_j)``: ``rel`` the score min-max scaled to [0, 1] over the
  pool, ``v`` the item vectors the model scores with.  λ = 1 picks the items least like those chosen.
- ``popularity_penalty`` (p >= 0): a popularity penalty calibrated to the user.  An item's popularity
  ``pop(i)`` is ``log(1 + n_i) / log(1 + max n)`` (``n_i`` its training interactions); the history's level
  ``pop(u)`` is the mean over its known items (an empty history: the mean over all interactions, an
  average user's).  The relevance becomes ``rel(i) - p max(0, pop(i) - pop(u))``: items more popular than
  the user's own taste lose rank, items at or below it keep theirs, so a user of niche items is steered
  away from the blockbusters a popularity-biased model pushes while a user of blockbusters keeps them.

The returned scores stay the model's scores of the chosen items; the order is the re-ranker's.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

MIN_POOL = 100  # the candidates MMR chooses from: the best max(4 K, MIN_POOL) items by score
POOL_PER_SLOT = 4


def pool_size(k: int, vocabulary: int) -> int:
    """How many of the best-scored items the re-ranker chooses `k` from."""
    return int(min(vocabulary, max(POOL_PER_SLOT * k, MIN_POOL)))


def popularity_levels(interactions: np.ndarray) -> tuple[np.ndarray, float]:
    """``log(1 + n_i) / log(1 + max n)`` per item (``[V]`` float32, 0 for items never interacted with), and
    the level of an average interaction (the mean over interactions: what an empty history is given)."""
    n = np.asarray(interactions, np.float64)
    top = np.log1p(n.max()) if len(n) and n.max() > 0 else 1.0
    levels = np.log1p(n) / top
    average = float((n * levels).sum() / n.sum()) if n.sum() > 0 else 0.0
    return levels.astype(np.float32), average


def knob(values, rows) -> tf.Tensor:
    """A request's knob as ``[rows]`` float32: one value per row, or one value for every row."""
    values = tf.reshape(tf.cast(values, tf.float32), [-1])
    return tf.broadcast_to(values, tf.reshape(rows, [1]))


def check_knobs(diversity, popularity_penalty) -> list:
    """Assertions that fail the request with one sentence when a knob is out of range."""
    return [
        tf.debugging.assert_greater_equal(diversity, 0.0, message="diversity must be between 0 and 1"),
        tf.debugging.assert_less_equal(diversity, 1.0, message="diversity must be between 0 and 1"),
        tf.debugging.assert_greater_equal(popularity_penalty, 0.0, message="popularity_penalty must be at least 0"),
    ]


def rerank(scores, item_vectors, popularity, average_level, history_ids, history_known, k: int, diversity,
           popularity_penalty):
    """The top `k` items of ``[B, V]`` `scores` re-ranked, history items and reserved ids already at -inf.

    `item_vectors` ``[V, D]``, `popularity` ``[V]`` and `average_level` (:func:`popularity_levels`),
    `history_ids`/`history_known`
    ``[B, T]`` (the history's item indices and which are real), `diversity`/`popularity_penalty` ``[B]``.
    Returns ``(indices [B, k] int32, model scores [B, k])``; with both knobs 0 on every row, exactly
    ``tf.math.top_k(scores, k)``."""
    rows = tf.shape(scores)[0]
    diversity, popularity_penalty = knob(diversity, rows), knob(popularity_penalty, rows)
    with tf.control_dependencies(check_knobs(diversity, popularity_penalty)):
        on = tf.reduce_any(tf.logical_or(diversity > 0, popularity_penalty > 0))

    def plain():
        best, index = tf.math.top_k(scores, k=k)
        return index, best

    def reranked():
        return _greedy(scores, item_vectors, popularity, average_level, history_ids, history_known, k, diversity,
                       popularity_penalty)

    return tf.cond(on, reranked, plain)


def _greedy(scores, item_vectors, popularity, average_level, history_ids, history_known, k, diversity,
            popularity_penalty):
    pool = pool_size(k, int(scores.shape[1]) if scores.shape[1] is not None else k * POOL_PER_SLOT)
    pool = tf.minimum(pool, tf.shape(scores)[1])
    best, index = tf.math.top_k(scores, k=pool)  # [B, N], best first
    finite = tf.math.is_finite(best)
    low = tf.reduce_min(tf.where(finite, best, best[:, :1]), axis=1, keepdims=True)
    span = tf.maximum(best[:, :1] - low, 1e-9)
    rel = tf.where(finite, (best - low) / span, tf.zeros_like(best))
    # the popularity penalty: how far above the history's popularity level an item is
    pop = tf.gather(popularity, index)
    known = tf.cast(history_known, tf.float32)
    hist_pop = tf.gather(popularity, tf.maximum(tf.cast(history_ids, tf.int32), 0)) * known
    count = tf.reduce_sum(known, axis=1)
    level = tf.where(count > 0, tf.reduce_sum(hist_pop, axis=1) / tf.maximum(count, 1.0),
                     tf.cast(average_level, tf.float32))
    rel = rel - popularity_penalty[:, None] * tf.nn.relu(pop - level[:, None])
    # maximal marginal relevance over unit item vectors
    vectors = tf.math.l2_normalize(tf.cast(tf.gather(item_vectors, index), tf.float32), axis=-1)  # [B, N, D]
    lam = diversity[:, None]
    n = tf.shape(index)[1]

    def step(t, chosen, max_sim, taken):
        value = (1.0 - lam) * rel - lam * max_sim  # max_sim starts at -1 everywhere: no item favoured
        value = tf.where(taken, -np.inf * tf.ones_like(value), value)
        pick = tf.argmax(value, axis=1, output_type=tf.int32)  # first of equals: the better-scored
        picked = tf.gather(vectors, pick, batch_dims=1)  # [B, D]
        sim = tf.einsum("bnd,bd->bn", vectors, picked)
        taken = tf.logical_or(taken, tf.one_hot(pick, n, on_value=True, off_value=False))
        return t + 1, chosen.write(t, pick), tf.maximum(max_sim, sim), taken

    _, chosen, _, _ = tf.while_loop(
        lambda t, *_: t < k, step,
        (tf.constant(0), tf.TensorArray(tf.int32, size=k), tf.fill(tf.shape(rel), -1.0),
         tf.logical_not(finite)))  # excluded items (history, reserved ids) count as taken: never chosen
    slots = tf.transpose(chosen.stack())  # [B, k] positions in the pool
    return tf.gather(index, slots, batch_dims=1), tf.gather(best, slots, batch_dims=1)


def rerank_numpy(scores: np.ndarray, item_vectors: np.ndarray, interactions: np.ndarray, histories, k: int,
                 diversity: float = 0.0, popularity_penalty: float = 0.0) -> np.ndarray:
    """:func:`rerank` for the evaluation: ``[B, V]`` masked scores, each item's training interactions and
    a list of history index arrays -> ``[B, k]`` item indices."""
    width = max((len(h) for h in histories), default=0) or 1
    ids = np.zeros((len(histories), width), np.int32)
    known = np.zeros((len(histories), width), bool)
    for row, h in enumerate(histories):
        ids[row, :len(h)], known[row, :len(h)] = h, True
    rows = len(histories)
    levels, average = popularity_levels(interactions)
    index, _ = _rerank_fn(tf.constant(scores, tf.float32), tf.constant(item_vectors, tf.float32),
                          tf.constant(levels), tf.constant(average, tf.float32), tf.constant(ids), tf.constant(known), k,
                          tf.fill([rows], float(diversity)), tf.fill([rows], float(popularity_penalty)))
    return index.numpy().astype(np.int64)


_rerank_fn = tf.function(rerank, reduce_retracing=True)


def similarity_vectors(model) -> np.ndarray:
    """The item vectors a model scores with, which MMR compares items by: a retrieval model's candidate
    embeddings, a next-item head's item matrix, an ensemble's first member's item embeddings."""
    if hasattr(model, "candidate_matrix"):
        return np.asarray(model.candidate_matrix())
    if hasattr(model, "head"):
        return np.asarray(model.head.item_matrix())
    return np.asarray(model.backbone.output_item_embeddings())
