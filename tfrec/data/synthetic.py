"""Synthetic interactions with planted structure, for fast tests.

Users belong to clusters; each cluster owns a set of items; within a cluster a
user moves along Markov transitions (each item has a few preferred successors).
Item categories and user segments agree with the cluster most of the time, so a
model that learns sequences or features beats popularity, and one that does not
cannot.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfrec.data import schema
from tfrec.data.loaders import RawDataset


def generate_synthetic(
    num_users: int = 500,
    num_items: int = 200,
    num_clusters: int = 5,
    min_length: int = 8,
    max_length: int = 30,
    num_successors: int = 3,
    follow_prob: float = 0.8,
    feature_noise: float = 0.1,
    seed: int = 0,
) -> RawDataset:
    """Returns a RawDataset with interactions, item features and user features.

    Args:
        follow_prob: chance that the next item is one of the current item's successors;
            otherwise it is drawn from the user's cluster (or, 5% of the time, anywhere).
        feature_noise: chance that an item's category or a user's segment is not its cluster.
    """
    rng = np.random.default_rng(seed)
    item_cluster = rng.permutation(np.arange(num_items) % num_clusters)
    members = [np.flatnonzero(item_cluster == c) for c in range(num_clusters)]
    successors = np.stack([rng.choice(members[item_cluster[i]], size=num_successors) for i in range(num_items)])
    # Items within a cluster are not equally popular, so popularity is a real baseline.
    weights = [rng.dirichlet(np.full(len(m), 0.7)) for m in members]

    users, items, times, ratings = [], [], [], []
    user_cluster = rng.integers(0, num_clusters, size=num_users)
    for u in range(num_users):
        c = user_cluster[u]
        n = int(rng.integers(min_length, max_length + 1))
        cur = rng.choice(members[c], p=weights[c])
        t = int(1_600_000_000 + rng.integers(0, 10_000_000))
        for _ in range(n):
            users.append(f"u{u}")
            items.append(f"i{cur}")
            times.append(t)
            ratings.append(float(np.clip(np.round(rng.normal(4.0 if item_cluster[cur] == c else 2.5, 0.7)), 1, 5)))
            t += int(rng.integers(60, 86_400))
            r = rng.random()
            if r < follow_prob:
                cur = successors[cur, rng.integers(num_successors)]
            elif r < 0.95:
                cur = rng.choice(members[c], p=weights[c])
            else:
                cur = int(rng.integers(num_items))
    inter = pd.DataFrame({schema.USER_ID: np.array(users, dtype=object), schema.ITEM_ID: np.array(items, dtype=object),
                          schema.TIMESTAMP: np.array(times, dtype=np.int64),
                          schema.RATING: np.array(ratings, dtype=np.float32)})

    def noisy(labels: np.ndarray) -> np.ndarray:
        flip = rng.random(len(labels)) < feature_noise
        return np.where(flip, rng.integers(0, num_clusters, size=len(labels)), labels)

    category = noisy(item_cluster)
    item_table = pd.DataFrame({
        schema.ITEM_ID: [f"i{i}" for i in range(num_items)],
        schema.TITLE: [f"Item {i}" for i in range(num_items)],
        "category": [f"c{k}" for k in category],
        schema.TAGS: [[f"t{k}", f"t{(k + 1) % num_clusters}x"] if i % 2 else [f"t{k}"] for i, k in enumerate(category)],
    })
    user_table = pd.DataFrame({schema.USER_ID: [f"u{u}" for u in range(num_users)],
                               "segment": [f"s{k}" for k in noisy(user_cluster)],
                               schema.AGE: rng.integers(18, 70, size=num_users)})
    return RawDataset("synthetic", inter, item_table, user_table, {"seed": str(seed)}, None)
