"""Train/validation/test examples for the fine-tuning tasks, under three split schemes.

- ``loo``: chronological leave-one-out (the sequential protocol).  A training example
  is a history prefix and the item that followed it; validation and test targets are
  each user's last two items.
- ``random``: the TFRS tutorials' protocol, a random 80/20 split of the rows.  A
  training example is one row; its query history is the user's *other* training items
  (the row's own item left out, so the model never sees the answer), and a held-out
  row's query history is all of the user's training items.  A share of the training
  rows (``valid_fraction``, by seed) is held back for validation and early stopping,
  so the test rows are never looked at before the final evaluation.
- ``cold``: content-based cold start.  ``cold_fraction`` of the items (by seed) are
  held out of training entirely; the model trains on the other items' rows as in
  ``random``, and is tested on the cold items' rows, each ranked among the cold items.

Every example keeps its user, item, timestamp and rating (when the dataset has one),
so one table feeds retrieval, ranking and both together.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from tfrec.contract import COLD_SPLIT, LEAVE_ONE_OUT, RANDOM_SPLIT
from tfrec.data import schema
from tfrec.data.inputs import group_sequences, with_mask_slot
from tfrec.data.sequences import label_rows
from tfrec.errors import TfrecError

SCHEMES = (LEAVE_ONE_OUT, RANDOM_SPLIT, COLD_SPLIT)
COLD = COLD_SPLIT


@dataclasses.dataclass
class Examples:
    """One part of a task split: row-aligned arrays.

    users, items, timestamps: [n]; ratings: [n] float32 or None; histories: n int32
    arrays (the query history of each row, oldest first, the row's own item excluded).
    """

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    ratings: np.ndarray | None
    histories: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.items)

    def query_ids(self, max_len: int) -> np.ndarray:
        """[n, max_len] int32: the last `max_len - 1` history items, then the mask slot."""
        return with_mask_slot(self.histories, max_len)

    def subset(self, keep: np.ndarray) -> "Examples":
        idx = np.flatnonzero(keep)
        return Examples(self.users[idx], self.items[idx], self.timestamps[idx],
                        None if self.ratings is None else self.ratings[idx], [self.histories[i] for i in idx])


@dataclasses.dataclass
class TaskSplit:
    """Training, validation and test examples of one scheme, plus what the tasks need to know.

    train_sequences: each user's chronological training items (for pretraining and
    popularity); candidates: the item indices a test row is ranked among (every real
    item, or the cold items); cold_items: the held-out items of the ``cold`` scheme.
    """

    scheme: str
    train: Examples
    valid: Examples
    test: Examples
    train_sequences: list[np.ndarray]
    train_users: np.ndarray
    vocabulary_size: int
    candidates: np.ndarray
    cold_items: np.ndarray


def label_part(split: TaskSplit, fraction: float, seed: int) -> TaskSplit:
    """`split` with a seeded share of its training rows, whose labels a label-scarce fine-tuning learns
    from (``finetune.fraction``); validation, test and the training sequences (the histories) keep
    every row."""
    if fraction >= 1:
        return split
    keep = np.zeros(len(split.train), bool)
    keep[label_rows(len(split.train), fraction, seed)] = True
    return dataclasses.replace(split, train=split.train.subset(keep))


def _rows(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    ratings = df[schema.RATING].to_numpy(np.float32) if schema.RATING in df.columns else None
    return (df[schema.USER_INDEX].to_numpy(np.int32), df[schema.ITEM_INDEX].to_numpy(np.int32),
            df[schema.TIMESTAMP].to_numpy(np.int64), ratings)


def _leave_self_out(df: pd.DataFrame) -> Examples:
    """Rows of a chronological, user-grouped frame; each history = the user's other rows."""
    users, items, ts, ratings = _rows(df)
    histories = []
    _, seqs = group_sequences(df)
    for seq in seqs:
        for j in range(len(seq)):
            histories.append(np.concatenate([seq[:j], seq[j + 1:]]).astype(np.int32))
    return Examples(users, items, ts, ratings, histories)


def _held_out(df: pd.DataFrame, by_user: dict) -> Examples:
    users, items, ts, ratings = _rows(df)
    empty = np.zeros(0, np.int32)
    return Examples(users, items, ts, ratings, [by_user.get(u, empty) for u in users.tolist()])


def _holdout_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, bool)
    mask[rng.permutation(n)[:int(round(n * fraction))]] = True
    return mask


def _from_rows(scheme: str, train_df: pd.DataFrame, heldout: dict[str, pd.DataFrame], vocabulary_size: int,
               candidates: np.ndarray, cold: np.ndarray, valid_fraction: float, seed: int) -> TaskSplit:
    is_valid = _holdout_mask(len(train_df), valid_fraction, seed + 1)
    fit_df = train_df[~is_valid]
    users, seqs = group_sequences(fit_df)
    by_user = dict(zip(users.tolist(), seqs))
    valid_df = train_df[is_valid]
    valid = _held_out(valid_df, by_user)
    test = _held_out(heldout[schema.TEST], by_user)
    return TaskSplit(scheme, _leave_self_out(fit_df), valid, test, seqs, users, vocabulary_size, candidates, cold)


def load(dataset, scheme: str = schema.RANDOM_SPLIT, seed: int = 0, valid_fraction: float = 0.05,
         cold_fraction: float = 0.1) -> TaskSplit:
    """The examples of `scheme` for a :class:`~tfrec.data.dataset.PreparedDataset`."""
    if scheme not in SCHEMES:
        raise TfrecError(f"unknown split scheme {scheme!r}; use {', '.join(SCHEMES)}")
    vocabulary_size = len(dataset.item_vocab)
    every_item = np.arange(schema.NUM_ITEM_RESERVED, vocabulary_size, dtype=np.int32)
    none = np.zeros(0, np.int32)
    if scheme == schema.LEAVE_ONE_OUT:
        train_df = dataset.split(schema.TRAIN)
        users, seqs = group_sequences(train_df)
        by_user = dict(zip(users.tolist(), seqs))
        valid_df = dataset.split(schema.VALID)
        valid = _held_out(valid_df, by_user)
        with_valid = {u: np.append(by_user.get(u, none), np.int32(i)).astype(np.int32)
                      for u, i in zip(valid.users.tolist(), valid.items.tolist())}
        test = _held_out(dataset.split(schema.TEST), with_valid)
        u, i, ts, r = _rows(train_df)
        histories = [s[:j].astype(np.int32) for s in seqs for j in range(len(s))]
        train = Examples(u, i, ts, r, histories).subset(np.array([len(h) > 0 for h in histories], bool))
        split = TaskSplit(scheme, train, valid, test, seqs, users, vocabulary_size, every_item, none)
    elif scheme == schema.RANDOM_SPLIT:
        split = _from_rows(scheme, dataset.split(schema.TRAIN, scheme),
                           {schema.TEST: dataset.split(schema.TEST, scheme)}, vocabulary_size, every_item, none,
                           valid_fraction, seed)
    else:
        df = dataset.interactions
        items = np.unique(df[schema.ITEM_INDEX].to_numpy(np.int32))
        rng = np.random.default_rng(seed)
        cold = np.sort(rng.permutation(items)[:max(1, int(round(len(items) * cold_fraction)))]).astype(np.int32)
        is_cold = np.isin(df[schema.ITEM_INDEX].to_numpy(), cold)
        warm_users = set(df.loc[~is_cold, schema.USER_INDEX].tolist())
        test_df = df[is_cold & df[schema.USER_INDEX].isin(warm_users).to_numpy()]
        split = _from_rows(scheme, df[~is_cold], {schema.TEST: test_df}, vocabulary_size, cold, cold,
                           valid_fraction, seed)
    if len(split.train) == 0 or len(split.valid) == 0 or len(split.test) == 0:
        raise TfrecError(f"the {scheme} split of the dataset at {dataset.path} leaves no training, validation "
                         "or test rows; it is too small for this task")
    return split


def eval_sequences(part: Examples, limit: int | None = None, seed: int = 0):
    """An :class:`~tfrec.data.inputs.EvalSequences` view of `part` (one row per held-out example);
    `limit` keeps one row per user, chosen by seed, for cheap validation during pretraining."""
    from tfrec.data.inputs import EvalSequences

    idx = np.arange(len(part))
    if limit:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(part))
        _, first = np.unique(part.users[order], return_index=True)
        idx = np.sort(order[first])
    return EvalSequences(part.users[idx], [part.histories[i] for i in idx], part.items[idx])
