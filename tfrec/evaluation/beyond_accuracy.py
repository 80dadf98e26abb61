"""What a list of recommendations is besides accurate: coverage, exposure inequality, diversity, novelty,
popularity bias, and how accuracy differs between groups of users.

Every function takes the top-K lists a model recommends (``lists`` ``[users, K]`` int item indices, history
items and reserved ids already excluded, as :func:`tfrec.evaluation.ranking.ranked` returns them) and
plain numpy arrays of the training data, so the same code judges a Keras model, an export, a re-ranker
and a baseline.  Definitions (``K`` the list length, ``I`` the real items, ``U`` the training users):

- **coverage@K**: the share of ``I`` that appears in at least one list;
- **Gini@K**: the Gini index of the items' exposure (how often each item of ``I`` is recommended, never
  recommended items counting 0): 0 when every item is shown equally often, towards 1 when a few items
  take every slot;
- **intra-list diversity**: per list, one minus the mean cosine similarity of its item pairs, averaged
  over lists; over item vectors (a model's item embeddings) or item attributes (the multi-hot of genres
  or categories; pairs with an item that has none are skipped);
- **novelty**: the mean self-information ``log2(|U| / n_i)`` of the recommended items, ``n_i`` the
  training users who interacted with item ``i`` (at least 1);
- **average popularity**: the mean share of training users who interacted with a recommended item;
- **popularity groups**: items sorted by training interactions; **head** the most popular ones holding
  the first 20% of interactions, **tail** the least popular ones holding the last 20% (and every item
  never interacted with), **middle** the rest; each group's share of the recommendations beside its
  share of the interactions; **tail share** is the tail's share of the recommendations.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tfrec.data import schema

HEAD, MIDDLE, TAIL = "head", "middle", "tail"
GROUP_SHARE = 0.2  # the head holds the first 20% of interactions, the tail the last 20%
MIN_GROUP_USERS = 20  # groups smaller than this are reported but left out of the largest gap


def exposure(lists: np.ndarray, num_items: int) -> np.ndarray:
    """How often each item index is recommended over all `lists` (``[num_items]`` int64)."""
    lists = np.asarray(lists, np.int64)
    return np.bincount(lists[lists >= 0].ravel(), minlength=num_items)


def coverage(lists: np.ndarray, num_items: int) -> float:
    """The share of real items (reserved ids excluded) recommended at least once."""
    counts = exposure(lists, num_items)[schema.NUM_ITEM_RESERVED:]
    return float((counts > 0).mean()) if len(counts) else 0.0


def gini(counts: np.ndarray) -> float:
    """The Gini index of non-negative `counts`: ``sum_i (2i - n - 1) x_i / (n sum x)`` over the counts
    sorted ascending (``i`` from 1); 0 for equal counts, ``1 - 1/n`` when one item holds everything."""
    x = np.sort(np.asarray(counts, np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * x).sum() / (n * total))


def exposure_gini(lists: np.ndarray, num_items: int) -> float:
    """:func:`gini` of the real items' exposure in `lists`."""
    return gini(exposure(lists, num_items)[schema.NUM_ITEM_RESERVED:])


def intra_list_diversity(lists: np.ndarray, vectors: np.ndarray) -> float | None:
    """Mean over lists of ``1 - mean pairwise cosine`` of the lists' item vectors (``vectors``
    ``[num_items, d]``); pairs with a zero vector are skipped, and so are lists with no pair left.
    None when no list has a pair."""
    lists = np.asarray(lists, np.int64)
    v = np.asarray(vectors, np.float64)
    norms = np.linalg.norm(v, axis=1)
    unit = np.divide(v, norms[:, None], out=np.zeros_like(v), where=norms[:, None] > 0)
    x = unit[lists]  # [users, K, d]
    sims = np.einsum("ukd,ujd->ukj", x, x)
    valid = (norms[lists] > 0)
    pair = valid[:, :, None] & valid[:, None, :]
    k = lists.shape[1]
    pair &= np.triu(np.ones((k, k), bool), 1)[None]
    pairs = pair.sum(axis=(1, 2))
    keep = pairs > 0
    if not keep.any():
        return None
    mean_sim = (sims * pair).sum(axis=(1, 2))[keep] / pairs[keep]
    return float(np.mean(1.0 - mean_sim))


def attribute_vectors(feature_table: np.ndarray, feature_space: int) -> np.ndarray:
    """Multi-hot ``[num_items, feature_space]`` vectors of the items' feature ids (``feature_table`` of
    :meth:`tfrec.data.dataset.PreparedDataset.item_feature_table`, 0 = none)."""
    table = np.asarray(feature_table, np.int64)
    out = np.zeros((len(table), feature_space), np.float32)
    rows = np.repeat(np.arange(len(table)), table.shape[1]) if table.size else np.zeros(0, np.int64)
    out[rows, table.ravel()] = 1.0
    out[:, 0] = 0.0  # id 0 is "none"
    return out


def interaction_counts(train_sequences, num_items: int) -> np.ndarray:
    """How many training interactions each item has (``[num_items]`` int64)."""
    return np.bincount(np.concatenate([np.asarray(s, np.int64) for s in train_sequences]), minlength=num_items)


def user_counts(train_sequences, num_items: int) -> np.ndarray:
    """How many training users interacted with each item (each user counted once per item)."""
    seen = [np.unique(np.asarray(s, np.int64)) for s in train_sequences if len(s)]
    return np.bincount(np.concatenate(seen), minlength=num_items) if seen else np.zeros(num_items, np.int64)


def novelty(lists: np.ndarray, counts: np.ndarray, num_users: int) -> float:
    """Mean ``log2(num_users / max(n_i, 1))`` over every recommended item (``counts``: :func:`user_counts`)."""
    n = np.maximum(np.asarray(counts, np.float64)[np.asarray(lists, np.int64)], 1.0)
    return float(np.mean(np.log2(num_users / n)))


def average_popularity(lists: np.ndarray, counts: np.ndarray, num_users: int) -> float:
    """Mean share of the training users who interacted with a recommended item."""
    return float(np.mean(np.asarray(counts, np.float64)[np.asarray(lists, np.int64)] / num_users))


def popularity_groups(interactions: np.ndarray, share: float = GROUP_SHARE) -> np.ndarray:
    """Each item's popularity group (``HEAD``, ``MIDDLE``, ``TAIL``; reserved ids ``""``) from its training
    interaction count: sorted most popular first (ties by index), an item is head while the interactions
    before it are under `share` of all, tail once those before it reach ``1 - share``."""
    counts = np.asarray(interactions, np.float64)
    groups = np.full(len(counts), TAIL, dtype=object)
    groups[: schema.NUM_ITEM_RESERVED] = ""
    real = np.arange(schema.NUM_ITEM_RESERVED, len(counts))
    total = counts[real].sum()
    if total == 0:
        return groups
    order = real[np.argsort(-counts[real], kind="stable")]
    before = (np.cumsum(counts[order]) - counts[order]) / total
    groups[order[before < share]] = HEAD
    groups[order[(before >= share) & (before < 1 - share) & (counts[order] > 0)]] = MIDDLE
    return groups


def group_exposure(lists: np.ndarray, interactions: np.ndarray, groups: np.ndarray) -> dict:
    """Per popularity group: its items, its share of the training interactions and of the recommendations."""
    counts = np.asarray(interactions, np.float64)
    shown = exposure(lists, len(counts)).astype(np.float64)
    out = {}
    for g in (HEAD, MIDDLE, TAIL):
        members = groups == g
        out[g] = {"items": int(members.sum()),
                  "interaction_share": float(counts[members].sum() / max(counts.sum(), 1)),
                  "recommendation_share": float(shown[members].sum() / max(shown.sum(), 1))}
    return out


def list_metrics(lists: np.ndarray, train_sequences, num_items: int, embeddings: np.ndarray | None = None,
                 attributes: np.ndarray | None = None) -> dict:
    """Every list-level measure above for top-K `lists`, against the training sequences they came from."""
    lists = np.asarray(lists, np.int64)
    k = lists.shape[1]
    interactions = interaction_counts(train_sequences, num_items)
    counts, users = user_counts(train_sequences, num_items), len(train_sequences)
    groups = group_exposure(lists, interactions, popularity_groups(interactions))
    out = {f"coverage@{k}": coverage(lists, num_items), f"gini@{k}": exposure_gini(lists, num_items),
           "novelty": novelty(lists, counts, users), "average_popularity": average_popularity(lists, counts, users),
           "tail_share": groups[TAIL]["recommendation_share"], "popularity_groups": groups}
    if embeddings is not None:
        out["diversity_embeddings"] = intra_list_diversity(lists, embeddings)
    if attributes is not None:
        out["diversity_attributes"] = intra_list_diversity(lists, attributes)
    return out


def slice_metrics(ranks: np.ndarray, labels: Mapping[str, np.ndarray], k: int = 10,
                  min_users: int = MIN_GROUP_USERS) -> dict:
    """Accuracy per group of users: for each grouping (name -> one label per user, aligned with
    `ranks`; "" = unknown, left out), NDCG@k and HR@k per label, and the largest NDCG@k gap between two
    labels of at least `min_users` users each (between any two when fewer than two are that large: a
    group of a handful of users differs by chance), with the labels that give it."""
    ranks = np.asarray(ranks)
    gain = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    out = {}
    for name, values in labels.items():
        values = np.asarray(values, dtype=object)
        groups = {}
        for label in sorted({v for v in values if v != ""}, key=str):
            mask = values == label
            groups[str(label)] = {f"ndcg@{k}": float(gain[mask].mean()), f"hr@{k}": float((ranks[mask] < k).mean()),
                                  "users": int(mask.sum())}
        if not groups:
            continue
        large = [g for g in groups if groups[g]["users"] >= min_users]
        compared = large if len(large) >= 2 else list(groups)
        best = max(compared, key=lambda g: groups[g][f"ndcg@{k}"])
        worst = min(compared, key=lambda g: groups[g][f"ndcg@{k}"])
        out[name] = {"groups": groups, "largest_gap": groups[best][f"ndcg@{k}"] - groups[worst][f"ndcg@{k}"],
                     "best": best, "worst": worst, "gap_min_users": min_users if compared is large else 1}
    return out


def activity_labels(history_lengths: np.ndarray, quantiles: int = 4) -> np.ndarray:
    """Each user's activity quantile ("Q1 (1-12 items)" .. "Q4 (...)") from the length of their history;
    quantile edges from the users given, ties kept in the lower group."""
    lengths = np.asarray(history_lengths, np.int64)
    edges = np.quantile(lengths, np.linspace(0, 1, quantiles + 1)[1:-1], method="lower") if len(lengths) else []
    band = np.searchsorted(np.asarray(edges), lengths, side="left")
    out = np.empty(len(lengths), dtype=object)
    for b in range(quantiles):
        mask = band == b
        if mask.any():
            out[mask] = f"Q{b + 1} ({lengths[mask].min()}-{lengths[mask].max()} items)"
    return out


AGE_BANDS = ((18, "under 18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"), (56, "50-55"),
             (None, "56+"))  # MovieLens's own bands


def age_band(age) -> str:
    """The MovieLens age band of `age` in years ("" when unknown)."""
    import pandas as pd

    if pd.isna(age):
        return ""
    for upper, name in AGE_BANDS:
        if upper is None or age < upper:
            return name
    return ""
