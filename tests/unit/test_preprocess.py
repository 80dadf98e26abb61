import numpy as np
import pandas as pd
import pytest

from tfrec.data import preprocess, schema
from tfrec.errors import TfrecError


def frame(rows, rating=False):
    cols = [schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP] + ([schema.RATING] if rating else [])
    return pd.DataFrame(rows, columns=cols)


def test_clean_drops_missing_and_exact_duplicates():
    df = frame([("u1", "a", 1), ("u1", "a", 1), ("u1", None, 2), ("u2", "b", 3), ("u2", "a", 4)])
    out, report = preprocess.clean(df, preprocess.PrepareConfig())
    assert out[schema.ITEM_ID].tolist() == ["a", "b", "a"]
    assert report == {"input_rows": 5, "dropped_missing": 1, "dropped_duplicates": 1}


def test_clean_user_item_dedupe_keeps_earliest():
    df = frame([("u1", "a", 5), ("u1", "a", 2), ("u1", "b", 3)])
    out, _ = preprocess.clean(df, preprocess.PrepareConfig(dedupe="user_item"))
    assert sorted(zip(out[schema.ITEM_ID], out[schema.TIMESTAMP])) == [("a", 2), ("b", 3)]


def test_rating_threshold_and_empty_result():
    df = frame([("u1", "a", 1, 5.0), ("u1", "b", 2, 3.0), ("u2", "a", 3, 4.0)], rating=True)
    out, report = preprocess.clean(df, preprocess.PrepareConfig(rating_threshold=4))
    assert out[schema.ITEM_ID].tolist() == ["a", "a"] and report["dropped_below_threshold"] == 1
    with pytest.raises(TfrecError, match="empty after cleaning"):
        preprocess.clean(df, preprocess.PrepareConfig(rating_threshold=6))
    with pytest.raises(TfrecError, match="no rating column"):
        preprocess.clean(frame([("u", "a", 1)]), preprocess.PrepareConfig(rating_threshold=4))


def test_k_core_is_iterated():
    # 2-core. Round 1: item c (1 row) goes, so u3 drops to 1 row.  Round 2: u3 goes,
    # so item b drops to 1 row (u1 only).  Round 3: b goes, u1 keeps a and d.
    df = frame([("u1", "a", 1), ("u1", "b", 2), ("u1", "d", 3), ("u2", "a", 4), ("u2", "d", 5),
                ("u3", "b", 6), ("u3", "c", 7)])
    out = preprocess.k_core(df, 2, 2)
    assert sorted(zip(out[schema.USER_ID], out[schema.ITEM_ID])) == [("u1", "a"), ("u1", "d"), ("u2", "a"), ("u2", "d")]
    with pytest.raises(TfrecError, match="empty after 5-core"):
        preprocess.k_core(df, 5, 1)


def test_chronological_order_is_stable_on_ties():
    df = frame([("u2", "x", 5), ("u1", "b", 2), ("u1", "a", 2), ("u1", "c", 1)])
    out = preprocess.chronological(df)
    assert list(zip(out[schema.USER_ID], out[schema.ITEM_ID])) == [("u1", "c"), ("u1", "b"), ("u1", "a"), ("u2", "x")]


def test_leave_one_out():
    df = preprocess.chronological(frame([("u1", i, t) for t, i in enumerate("abcde")] + [("u2", "x", 1), ("u2", "y", 2)]))
    parts = preprocess.leave_one_out(df, min_length=3)
    assert parts[schema.TEST][schema.ITEM_ID].tolist() == ["e"]
    assert parts[schema.VALID][schema.ITEM_ID].tolist() == ["d"]
    # u2 has 2 < 3 interactions: all in train
    assert parts[schema.TRAIN][schema.ITEM_ID].tolist() == ["a", "b", "c", "x", "y"]


def test_random_split_fraction_and_seed():
    df = frame([(f"u{i % 7}", f"i{i}", i) for i in range(1000)])
    a = preprocess.random_split(df, 0.2, seed=1)
    b = preprocess.random_split(df, 0.2, seed=1)
    c = preprocess.random_split(df, 0.2, seed=2)
    assert len(a[schema.TEST]) == 200 and len(a[schema.TRAIN]) == 800
    assert a[schema.TEST].index.equals(b[schema.TEST].index)
    assert not a[schema.TEST].index.equals(c[schema.TEST].index)


def test_temporal_split_takes_the_latest():
    df = frame([("u", f"i{t}", t) for t in np.random.default_rng(0).permutation(10)])
    parts = preprocess.temporal_split(df, 0.3)
    assert sorted(parts[schema.TEST][schema.TIMESTAMP]) == [7, 8, 9]
    assert parts[schema.TRAIN][schema.TIMESTAMP].max() == 6


def test_config_validation():
    with pytest.raises(TfrecError, match="dedupe"):
        preprocess.PrepareConfig(dedupe="nope")
    with pytest.raises(TfrecError, match="strictly between 0 and 1"):
        preprocess.PrepareConfig(random_test_fraction=1.0)
