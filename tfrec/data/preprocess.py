"""Cleaning, filtering, chronological ordering and splits of interaction tables."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from tfrec.data import schema
from tfrec.errors import TfrecError


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """Settings of `tfrec data prepare`; stored in ``dataset.json``.

    Attributes:
        rating_threshold: keep only interactions with ``rating >= threshold`` (implicit feedback).
        min_user_interactions / min_item_interactions: iterated k-core bounds (1 = no filtering).
        dedupe: ``"exact"`` drops identical rows; ``"user_item"`` also keeps only the first
            interaction of each (user, item) pair.
        loo_min_length: users with fewer interactions keep them all in train under leave-one-out.
        random_test_fraction / temporal_test_fraction: held-out shares of the ratio splits.
        seed: seed of the random split.
        format: ``"parquet"`` (the tables only) or ``"tfrecord"`` (also each user's leave-one-out
            sequence as a ``tf.train.Example`` in `shards` TFRecord files, read back interleaved).
        shards: number of TFRecord files of the ``tfrecord`` format.
    """

    rating_threshold: float | None = None
    min_user_interactions: int = 1
    min_item_interactions: int = 1
    dedupe: str = "exact"
    loo_min_length: int = 3
    random_test_fraction: float = 0.2
    temporal_test_fraction: float = 0.2
    seed: int = 42
    format: str = "parquet"
    shards: int = 1

    def __post_init__(self):
        if self.format not in schema.FORMATS:
            raise TfrecError(f"format must be {' or '.join(schema.FORMATS)}, not {self.format!r}")
        if self.shards < 1:
            raise TfrecError(f"shards must be at least 1, not {self.shards}")
        if self.dedupe not in ("exact", "user_item"):
            raise TfrecError(f"dedupe must be 'exact' or 'user_item', not {self.dedupe!r}")
        if self.min_user_interactions < 1 or self.min_item_interactions < 1:
            raise TfrecError("k-core bounds must be at least 1")
        if self.loo_min_length < 3:
            raise TfrecError(f"loo_min_length must be at least 3 (train, valid, test), not {self.loo_min_length}")
        for name in ("random_test_fraction", "temporal_test_fraction"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise TfrecError(f"{name} must lie strictly between 0 and 1, not {v}")


def clean(df: pd.DataFrame, config: PrepareConfig, where: str = "the interactions") -> tuple[pd.DataFrame, dict]:
    """Drops missing values and duplicates, applies the rating threshold.

    Returns the cleaned frame (original row order kept) and counts of what was dropped.
    """
    report = {"input_rows": int(len(df))}
    needed = [c for c in (schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP) if c in df.columns]
    with_rating = schema.RATING in df.columns
    missing = df[needed + ([schema.RATING] if with_rating else [])].isna().any(axis=1)
    missing |= df[schema.USER_ID].astype(str).str.len().eq(0) | df[schema.ITEM_ID].astype(str).str.len().eq(0)
    df = df[~missing.to_numpy()]
    report["dropped_missing"] = int(missing.sum())
    before = len(df)
    keys = [schema.USER_ID, schema.ITEM_ID] if config.dedupe == "user_item" else list(df.columns)
    if config.dedupe == "user_item":
        # Keep the earliest interaction of each pair; ties by input order.
        order = np.lexsort((np.arange(len(df)), df[schema.TIMESTAMP].to_numpy()))
        first = df.iloc[order].drop_duplicates(keys, keep="first").index
        df = df.loc[df.index.isin(first)]
    else:
        df = df.drop_duplicates(keys, keep="first")
    report["dropped_duplicates"] = int(before - len(df))
    if config.rating_threshold is not None:
        if not with_rating:
            raise TfrecError(f"a rating threshold was given but {where} have no rating column")
        before = len(df)
        df = df[df[schema.RATING] >= config.rating_threshold]
        report["dropped_below_threshold"] = int(before - len(df))
    if df.empty:
        raise TfrecError(f"{where} are empty after cleaning (missing values, duplicates, rating threshold)")
    return df, report


def k_core(df: pd.DataFrame, min_user: int, min_item: int, where: str = "the interactions") -> pd.DataFrame:
    """Iterated k-core: repeat dropping users with < min_user and items with < min_item rows."""
    if min_user <= 1 and min_item <= 1:
        return df
    while True:
        user_counts = df[schema.USER_ID].map(df[schema.USER_ID].value_counts())
        item_counts = df[schema.ITEM_ID].map(df[schema.ITEM_ID].value_counts())
        keep = (user_counts >= min_user) & (item_counts >= min_item)
        if keep.all():
            break
        df = df[keep.to_numpy()]
        if df.empty:
            raise TfrecError(
                f"{where} are empty after {min_user}-core filtering of users and {min_item}-core filtering of items"
            )
    return df


def chronological(df: pd.DataFrame) -> pd.DataFrame:
    """Sorts by user, then timestamp; ties keep their input order (stable)."""
    df = df.reset_index(drop=True)
    order = np.lexsort((np.arange(len(df)), df[schema.TIMESTAMP].to_numpy(), df[schema.USER_ID].to_numpy(dtype=str)))
    return df.iloc[order].reset_index(drop=True)


def leave_one_out(df: pd.DataFrame, min_length: int = 3) -> dict[str, pd.DataFrame]:
    """Chronological leave-one-out on a frame sorted by :func:`chronological`.

    Each user's last interaction is test, the second-to-last validation, the rest
    train; users with fewer than ``min_length`` interactions keep all in train.
    """
    user = df[schema.USER_ID].to_numpy(dtype=str)
    sizes = df.groupby(schema.USER_ID, sort=False).size()
    length = sizes.reindex(user).to_numpy()
    pos_from_end = length - 1 - df.groupby(schema.USER_ID, sort=False).cumcount().to_numpy()
    eligible = length >= min_length
    test = eligible & (pos_from_end == 0)
    valid = eligible & (pos_from_end == 1)
    train = ~(test | valid)
    return {schema.TRAIN: df[train], schema.VALID: df[valid], schema.TEST: df[test]}


def random_split(df: pd.DataFrame, test_fraction: float, seed: int) -> dict[str, pd.DataFrame]:
    """Random split of rows (the TFRS tutorials' 80/20 protocol), fixed by `seed`."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(df))
    n_test = int(round(len(df) * test_fraction))
    is_test = np.zeros(len(df), dtype=bool)
    is_test[perm[:n_test]] = True
    return {schema.TRAIN: df[~is_test], schema.TEST: df[is_test]}


def temporal_split(df: pd.DataFrame, test_fraction: float) -> dict[str, pd.DataFrame]:
    """Global time cut: the latest `test_fraction` of rows (by timestamp, then order) is test."""
    order = np.lexsort((np.arange(len(df)), df[schema.TIMESTAMP].to_numpy()))
    n_test = int(round(len(df) * test_fraction))
    is_test = np.zeros(len(df), dtype=bool)
    if n_test:
        is_test[order[-n_test:]] = True
    return {schema.TRAIN: df[~is_test], schema.TEST: df[is_test]}
