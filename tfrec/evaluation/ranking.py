"""Full-ranking metrics: every item is ranked, items of the history excluded (configurable).

A scorer is any callable ``histories -> scores``: ``histories`` is a list of int32
item-index arrays (oldest first), ``scores`` a ``[batch, vocabulary_size]`` float
array.  The same code judges a Keras model, an export and a baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tfrec.data import schema

Scorer = Callable[[list[np.ndarray]], np.ndarray]
Reranker = Callable[[np.ndarray, list[np.ndarray], int], np.ndarray]
HR_KS = (1, 5, 10, 20)
NDCG_KS = (5, 10, 20)
RERANKED = max(HR_KS + NDCG_KS)  # how long a re-ranked list the evaluation reads


def target_ranks(scores: np.ndarray, targets: np.ndarray, histories: Sequence[np.ndarray] | None) -> np.ndarray:
    """0-based rank of each target among all real items.

    Reserved ids (padding, mask, OOV) never rank; with `histories`, their items are
    excluded too (the target itself never is).  Ties go to the lower item index,
    as a stable sort would order them.
    """
    s = np.array(scores, dtype=np.float32, copy=True)
    targets = np.asarray(targets)
    s[:, : schema.NUM_ITEM_RESERVED] = -np.inf
    rows = np.arange(len(s))
    t_score = s[rows, targets].copy()
    if histories is not None and len(histories):
        lengths = np.fromiter((len(h) for h in histories), np.int64, len(histories))
        if lengths.sum():
            s[np.repeat(rows, lengths), np.concatenate([np.asarray(h, np.int64) for h in histories])] = -np.inf
    s[rows, targets] = t_score  # the target stays even if it was in the history
    ahead = (s > t_score[:, None]).sum(axis=1)
    index = np.arange(s.shape[1])[np.newaxis, :]
    ties = ((s == t_score[:, None]) & (index < targets[:, None])).sum(axis=1)
    return ahead + ties


def metrics_from_ranks(ranks: np.ndarray) -> dict[str, float]:
    """HR@{1,5,10,20}, NDCG@{5,10,20} and MRR of 0-based ranks of one target each."""
    ranks = np.asarray(ranks)
    out = {f"hr@{k}": float(np.mean(ranks < k)) for k in HR_KS}
    gain = 1.0 / np.log2(ranks + 2.0)
    out.update({f"ndcg@{k}": float(np.mean(np.where(ranks < k, gain, 0.0))) for k in NDCG_KS})
    out["mrr"] = float(np.mean(1.0 / (ranks + 1.0)))
    return out


def pooled_metrics(metrics: dict[str, float], all_sum) -> dict[str, float]:
    """The figures of :func:`evaluate` over several parts of the users (the workers of a multi-worker job),
    from each part's `metrics`: `all_sum` sums a vector over the parts.  Equal to scoring every user at
    once, up to float rounding."""
    names = [k for k in metrics if k not in ("users", "seconds")]
    n = float(metrics.get("users", 0))
    local = [metrics[k] * n if n else 0.0 for k in names]
    total = all_sum(local + [n])
    users = float(total[-1])
    out = {k: float(v) / users if users else 0.0 for k, v in zip(names, total[:-1])}
    out["users"] = int(round(users))
    return out


def masked_scores(scores: np.ndarray, histories: Sequence[np.ndarray] | None) -> np.ndarray:
    """A float32 copy of ``[batch, V]`` `scores` with reserved ids and, with `histories`, each row's
    history items at -inf."""
    s = np.array(scores, dtype=np.float32, copy=True)
    s[:, : schema.NUM_ITEM_RESERVED] = -np.inf
    if histories is not None and len(histories):
        rows = np.arange(len(s))
        lengths = np.fromiter((len(h) for h in histories), np.int64, len(histories))
        if lengths.sum():
            s[np.repeat(rows, lengths), np.concatenate([np.asarray(h, np.int64) for h in histories])] = -np.inf
    return s


def top_items(scores: np.ndarray, histories: Sequence[np.ndarray] | None, k: int) -> np.ndarray:
    """The `k` best item indices per row, best first (ties to the lower index), reserved ids and, with
    `histories`, the rows' history items excluded: ``[batch, k]`` int64."""
    s = masked_scores(scores, histories)
    k = min(k, s.shape[1])
    part = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < s.shape[1] else np.tile(np.arange(s.shape[1]), (len(s), 1))
    # sort the k by score descending, then index ascending
    order = np.lexsort((part, -np.take_along_axis(s, part, axis=1)), axis=1)
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def ranked(
    scorer: Scorer,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    exclude_history: bool = True,
    batch_size: int = 512,
    top_k: int = 0,
    reranker: Reranker | None = None,
    users: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Ranks every target with `scorer`: (per-user 0-based ranks, and with `top_k` the ``[users, top_k]``
    lists the scorer recommends, else None), in the given order.

    With a `reranker` (``(masked scores, histories, length) -> [batch, length]`` item lists) the lists
    are its lists, and a target's rank is its place in the re-ranked top :data:`RERANKED` (exact for
    every HR@k and NDCG@k reported), or, when re-ranking left it out, the larger of that length and its
    rank by score (so MRR is a bound there).

    Users are scored in batches of similar history length, so a scorer that trims padding does less work.
    With `users` (one user index per history), the scorer is called as ``scorer(histories, users)``.
    """
    targets = np.asarray(targets)
    users = None if users is None else np.asarray(users)
    order = np.argsort(np.fromiter((len(h) for h in histories), np.int64, len(histories)), kind="stable")
    ranks = np.zeros(len(targets), np.int64)
    lists = np.zeros((len(targets), top_k), np.int64) if top_k else None
    for start in range(0, len(targets), batch_size):
        idx = order[start:start + batch_size]
        h = [histories[i] for i in idx]
        scores = np.asarray(scorer(h) if users is None else scorer(h, users[idx]))
        ranks[idx] = target_ranks(scores, targets[idx], h if exclude_history else None)
        if reranker is not None:
            length = max(top_k, RERANKED)
            chosen = reranker(masked_scores(scores, h if exclude_history else None), h, length)
            hit = chosen == targets[idx][:, None]
            ranks[idx] = np.where(hit.any(axis=1), hit.argmax(axis=1), np.maximum(ranks[idx], length))
            if top_k:
                lists[idx] = chosen[:, :top_k]
        elif top_k:
            lists[idx] = top_items(scores, h if exclude_history else None, top_k)
    return ranks, lists


def evaluate(
    scorer: Scorer,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    exclude_history: bool = True,
    batch_size: int = 512,
) -> tuple[dict[str, float], np.ndarray]:
    """Ranks every target with `scorer` (:func:`ranked`); returns (mean metrics, per-user 0-based ranks)."""
    ranks, _ = ranked(scorer, histories, targets, exclude_history, batch_size)
    metrics = metrics_from_ranks(ranks)
    metrics["users"] = int(len(ranks))
    return metrics, ranks


def popularity_scorer(train_sequences: Sequence[np.ndarray], vocabulary_size: int) -> Scorer:
    """Scores every item by its count in the training sequences, for every user."""
    counts = np.bincount(np.concatenate(list(train_sequences)), minlength=vocabulary_size).astype(np.float32)

    def score(histories: list[np.ndarray]) -> np.ndarray:
        return np.broadcast_to(counts, (len(histories), vocabulary_size))

    return score


def model_scorer(model, max_len: int, batch_size: int = 1024) -> Scorer:
    """A scorer for :func:`evaluate` from a task model: histories end in the mask slot, as its inputs do."""
    from tfrec.data import inputs

    return lambda histories: model.score(inputs.with_mask_slot(histories, max_len), batch_size=batch_size)


def retrieval_scorer(model, max_len: int, batch_size: int = 1024):
    """A scorer of (histories, user indices) from a two-tower retrieval model: its query vectors (the
    history, and the user's features where its query tower reads them) against every candidate."""
    from tfrec.contract import ITEM_INDICES, USER_INDEX
    from tfrec.data import inputs

    candidates = model.candidate_matrix()

    def score(histories, users):
        features = {ITEM_INDICES: inputs.with_mask_slot(histories, max_len)}
        if model.query_tower.uses_user:
            features[USER_INDEX] = np.asarray(users, np.int32)
        return model.query_vectors(features, batch_size=batch_size) @ candidates.T

    return score
