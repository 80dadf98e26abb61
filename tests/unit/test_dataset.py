import filecmp
import json
import os

import numpy as np
import pandas as pd
import pytest

from tfrec.data import dataset, loaders, preprocess, schema
from tfrec.data.synthetic import generate_synthetic
from tfrec.errors import TfrecError


def tree(path):
    return sorted(os.path.relpath(os.path.join(r, f), path) for r, _, fs in os.walk(path) for f in fs)


def test_prepared_folder_layout_and_stats(synthetic_prepared, synthetic_raw):
    d = synthetic_prepared
    files = tree(d.path)
    for f in ("dataset.json", "stats.json", "interactions.parquet", "items.parquet", "users.parquet",
              "vocab/items.txt", "vocab/users.txt", "vocab/item_category.txt", "vocab/user_segment.txt",
              "splits/loo/train.parquet", "splits/loo/valid.parquet", "splits/loo/test.parquet",
              "splits/random/train.parquet", "splits/temporal/test.parquet"):
        assert f in files
    n = len(synthetic_raw.interactions.drop_duplicates())
    assert d.stats["num_interactions"] == n
    assert d.stats["num_users"] == 300
    assert d.stats["density"] == pytest.approx(n / (300 * d.stats["num_items"]))
    assert d.stats["splits"]["loo"] == {"train": n - 600, "valid": 300, "test": 300}
    assert d.stats["sequence_length"]["min"] >= 8
    assert d.meta["schema"]["item_features"]["category"]["kind"] == "categorical"
    assert d.meta["schema"]["item_features"]["tags"]["kind"] == "list"
    assert d.meta["schema"]["user_features"]["age"]["kind"] == "numeric"
    assert d.meta["settings"] == json.loads(json.dumps(preprocess.PrepareConfig().__dict__))


def test_indices_match_vocabularies(synthetic_prepared):
    d = synthetic_prepared
    inter = d.interactions
    np.testing.assert_array_equal(d.item_vocab.lookup(inter[schema.ITEM_ID]), inter[schema.ITEM_INDEX])
    np.testing.assert_array_equal(d.user_vocab.lookup(inter[schema.USER_ID]), inter[schema.USER_INDEX])
    items = d.items
    assert items[schema.ITEM_INDEX].tolist() == list(range(3, len(d.item_vocab)))
    assert items[schema.ITEM_ID].tolist() == d.item_vocab.tokens[3:]
    # most frequent item gets index 3
    counts = inter[schema.ITEM_ID].value_counts()
    assert counts[d.item_vocab.token(3)] == counts.max()
    assert counts[d.item_vocab.token(len(d.item_vocab) - 1)] == counts.min()


def test_same_inputs_give_identical_files(tmp_path, synthetic_raw):
    a = dataset.prepare(synthetic_raw, str(tmp_path / "a"))
    b = dataset.prepare(synthetic_raw, str(tmp_path / "b"))
    files = tree(a.path)
    assert files == tree(b.path)
    _, mismatch, errors = filecmp.cmpfiles(a.path, b.path, files, shallow=False)
    assert mismatch == [] and errors == []


def test_failure_leaves_nothing_behind(tmp_path, synthetic_raw, monkeypatch):
    target = tmp_path / "out"

    def boom(df, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset, "_write_parquet", boom)
    with pytest.raises(KeyboardInterrupt):
        dataset.prepare(synthetic_raw, str(target))
    assert os.listdir(tmp_path) == []


def test_failure_keeps_previous_complete_output(tmp_path, synthetic_raw, monkeypatch):
    target = tmp_path / "out"
    dataset.prepare(synthetic_raw, str(target))
    before = tree(target)
    monkeypatch.setattr(dataset, "_write_parquet", lambda df, p: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        dataset.prepare(synthetic_raw, str(target))
    assert tree(target) == before and sorted(os.listdir(tmp_path)) == ["out"]


def test_empty_after_k_core(tmp_path):
    raw = generate_synthetic(num_users=20, num_items=50, seed=1)
    with pytest.raises(TfrecError, match="empty after 1000-core"):
        dataset.prepare(raw, str(tmp_path / "x"), preprocess.PrepareConfig(min_user_interactions=1000))
    assert not (tmp_path / "x").exists()


def test_not_a_prepared_dataset(tmp_path):
    with pytest.raises(TfrecError, match="not a prepared dataset"):
        dataset.PreparedDataset(str(tmp_path))


def test_feature_vocab_and_split_access(synthetic_prepared):
    v = synthetic_prepared.feature_vocab("item", "category")
    assert set(v.tokens[2:]) == {f"c{k}" for k in range(5)}
    with pytest.raises(TfrecError, match="no item feature 'brand'"):
        synthetic_prepared.feature_vocab("item", "brand")
    test = synthetic_prepared.split(schema.TEST)
    assert test[schema.USER_ID].is_unique and len(test) == 300


def test_timestamps_ties_and_loo_on_table(tmp_path):
    df = pd.DataFrame({"user_id": ["a"] * 4, "item_id": ["w", "x", "y", "z"], "timestamp": [3, 1, 1, 2]})
    d = dataset.prepare(loaders.load_table(df), str(tmp_path / "t"))
    # time order x(1), y(1, after x by input order), z(2), w(3)
    assert d.split(schema.TRAIN)[schema.ITEM_ID].tolist() == ["x", "y"]
    assert d.split(schema.VALID)[schema.ITEM_ID].tolist() == ["z"]
    assert d.split(schema.TEST)[schema.ITEM_ID].tolist() == ["w"]


def test_tfrecord_format_writes_sequence_shards_that_read_back_like_the_tables(synthetic_raw, tmp_path):
    import tensorflow as tf

    from tfrec.data import inputs
    from tfrec.data.preprocess import PrepareConfig
    from tfrec.training.trainer import SequenceData

    plain = dataset.prepare(synthetic_raw, str(tmp_path / "plain"))
    sharded = dataset.prepare(synthetic_raw, str(tmp_path / "sharded"), PrepareConfig(format="tfrecord", shards=3))
    assert plain.sequence_shards == []
    assert [os.path.basename(f) for f in sharded.sequence_shards] == [
        schema.SEQUENCE_SHARD.format(index=i, count=3) for i in range(3)]
    # every user once, dealt round-robin: shard sizes differ by at most one
    sizes = [sum(1 for _ in tf.data.TFRecordDataset(f)) for f in sharded.sequence_shards]
    assert sum(sizes) == sharded.stats["sequence_shards"]["users"] and max(sizes) - min(sizes) <= 1
    rows = list(inputs.sequence_shards(sharded).as_numpy_iterator())  # one dict per user
    assert len(rows) == sum(sizes) and all(r["items"].ndim == 1 for r in rows)
    users, train, valid = inputs.read_sequence_shards(sharded)
    want_users, want_train = inputs.loo_sequences(plain, schema.TRAIN)
    want_valid = inputs.loo_sequences(plain, schema.VALID)
    assert users.tolist() == want_users.tolist()
    assert all(np.array_equal(a, b) for a, b in zip(train, want_train)) and len(train) == len(want_train)
    assert valid.targets.tolist() == want_valid.targets.tolist()
    assert valid.user_indices.tolist() == want_valid.user_indices.tolist()
    # training reads the shards and sees the same data
    from_shards, from_tables = SequenceData.load(sharded.path), SequenceData.load(plain.path)
    assert np.array_equal(from_shards.item_counts, from_tables.item_counts)
    # the same inputs give the same bytes
    again = dataset.prepare(synthetic_raw, str(tmp_path / "again"), PrepareConfig(format="tfrecord", shards=3))
    assert [open(f, "rb").read() for f in again.sequence_shards] == [open(f, "rb").read() for f in sharded.sequence_shards]


@pytest.mark.parametrize("kwargs, message", [({"format": "csv"}, "format must be"), ({"shards": 0}, "shards must be")])
def test_bad_format_settings(kwargs, message):
    from tfrec.data.preprocess import PrepareConfig

    with pytest.raises(TfrecError, match=message):
        PrepareConfig(**kwargs)
