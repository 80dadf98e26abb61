"""Prepared datasets on a remote store (an S3 server in this process): `tfrec data prepare --out s3://…`
writes the local dataset's files, and training, evaluation and the shards read them from there."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_cli
from tfrec.data import dataset, inputs, preprocess, schema
from tfrec.data.dataset import PreparedDataset
from tfrec.data.store import Store
from tfrec.errors import TfrecError
from tfrec.evaluation import test_reads


def local_files(root: str) -> dict[str, bytes]:
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root).replace(os.sep, "/")] = f.read()
    return out


def store_files(store: Store, *parts: str) -> dict[str, bytes]:
    out = {}
    for name in store.listdir(*parts):
        if store.kind(*parts, name) == "dir":
            out.update(store_files(store, *parts, name))
        else:
            out["/".join([*parts, name])] = store.read_bytes(*parts, name)
    return out


def test_pandas_engine_writes_the_local_datasets_bytes_to_s3_and_reads_them_back(synthetic_raw, s3_uri, tmp_path):
    config = preprocess.PrepareConfig(format="tfrecord", shards=3)
    local = dataset.prepare(synthetic_raw, str(tmp_path / "local"), config)
    remote = dataset.prepare(synthetic_raw, s3_uri("pandas/ds"), config)
    assert remote.store.remote and remote.location == "s3://tfrec-test/pandas/ds"  # no credentials, no query
    assert store_files(remote.store) == local_files(local.path)  # every file, byte for byte
    assert remote.fingerprint == local.fingerprint
    pd.testing.assert_frame_equal(remote.split(schema.TEST), local.split(schema.TEST), check_exact=True)
    assert remote.item_vocab.tokens == local.item_vocab.tokens
    users, train, valid = inputs.read_sequence_shards(remote)  # the shards through pyarrow, checksums checked
    want_users, want_train, want_valid = inputs.read_sequence_shards(local)
    np.testing.assert_array_equal(users, want_users)
    assert all(np.array_equal(a, b) for a, b in zip(train, want_train)) and len(train) == len(want_train)
    np.testing.assert_array_equal(valid.targets, want_valid.targets)
    copy = remote.local_file(schema.VOCAB_DIR, schema.ITEM_VOCAB_FILE)  # for TensorFlow's vocabulary tables
    with open(copy, "rb") as f, open(os.path.join(local.path, schema.VOCAB_DIR, schema.ITEM_VOCAB_FILE), "rb") as g:
        assert f.read() == g.read()


def test_a_corrupt_shard_is_one_sentence_on_a_store_and_on_disk(synthetic_raw, s3_uri, tmp_path):
    config = preprocess.PrepareConfig(format="tfrecord", shards=2)
    for ds in (dataset.prepare(synthetic_raw, s3_uri("corrupt/ds"), config),
               dataset.prepare(synthetic_raw, str(tmp_path / "local"), config)):
        name = (schema.SEQUENCES_DIR, os.path.basename(ds.sequence_shards[1]))
        data = bytearray(ds.store.read_bytes(*name))
        data[40] ^= 0xFF  # a byte inside the first record
        with ds.store.open_output(*name) as f:
            f.write(bytes(data))
        with pytest.raises(TfrecError, match=r"the sequence shards of .*(corrupt|checksum)") as e:
            inputs.read_sequence_shards(ds)
        assert "\n" not in str(e.value)
        if ds.store.remote:
            assert "record 0 fails its checksum" in str(e.value) and "secret" not in str(e.value)


def test_a_second_preparation_replaces_the_first_and_a_failed_one_leaves_nothing(synthetic_raw, s3_uri,
                                                                                 monkeypatch):
    uri = s3_uri("replace/ds")
    first = dataset.prepare(synthetic_raw, uri, preprocess.PrepareConfig(format="tfrecord", shards=3))
    assert len(first.sequence_shards) == 3
    second = dataset.prepare(synthetic_raw, uri, preprocess.PrepareConfig())  # no shards this time
    assert second.sequence_shards == [] and schema.SEQUENCES_DIR not in second.store.listdir()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(dataset, "write_description", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        dataset.prepare(synthetic_raw, uri, preprocess.PrepareConfig())
    assert Store(uri).listdir() == []  # the earlier dataset was replaced, the failed one removed
    with pytest.raises(TfrecError, match="is not a folder|is not a prepared dataset"):
        PreparedDataset(uri)


def test_a_folder_of_other_files_is_refused_and_bad_uris_are_one_sentence(synthetic_raw, s3_uri):
    uri = s3_uri("other/folder")
    with Store(uri).open_output("notes.txt") as f:
        f.write(b"not a dataset")
    with pytest.raises(TfrecError, match="holds files that are not a prepared dataset .*notes.txt"):
        dataset.prepare(synthetic_raw, uri, preprocess.PrepareConfig())
    assert Store(uri).listdir() == ["notes.txt"]
    with pytest.raises(TfrecError, match="cannot open nosuch://x/y") as e:
        PreparedDataset("nosuch://key:secret@x/y?token=1")
    assert "secret" not in str(e.value) and "token" not in str(e.value)  # credentials never in a message
    with pytest.raises(TfrecError, match="is not a prepared dataset"):
        PreparedDataset(uri)


@pytest.mark.slow
def test_training_and_evaluation_read_a_dataset_on_s3(synthetic_raw, s3_uri, tmp_path):
    """`tfrec finetune` and `tfrec evaluate` take the URI as --data; the run records it (without credentials)
    and the same data fingerprint as the local copy of the dataset."""
    uri = s3_uri("train/ds")
    local = dataset.prepare(synthetic_raw, str(tmp_path / "local"), preprocess.PrepareConfig(format="tfrecord"))
    dataset.prepare(synthetic_raw, uri, preprocess.PrepareConfig(format="tfrecord"))
    out = str(tmp_path / "run")
    r = run_cli("finetune", "--task", "next-item", "--from-scratch", "--data", uri, "--out", out, "--verbose", "0",
                "--set", "model.hidden_dim=16", "--set", "model.intermediate_dim=32", "--set", "model.num_layers=1",
                "--set", "model.max_len=20", "--set", "finetune.epochs=1", "--set", "finetune.steps_per_epoch=20")
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    with open(os.path.join(out, "model", "config.json")) as f:
        record = json.load(f)
    assert record["data_fingerprint"] == local.fingerprint
    assert record["dataset"] == "s3://tfrec-test/train/ds"  # no credentials, no query in the run folder
    assert record["finetune_users"] == PreparedDataset(uri).stats["num_users"]
    r = run_cli("evaluate", "--model", out, "--data", uri, "--split", "test")
    assert r.returncode == 0, r.stderr[-2000:]
    reads = test_reads.reads(uri)  # the read of the test split is counted on the store, beside the dataset
    assert len(reads) == 1 and reads[0]["scored"] == os.path.join(out, "model") and reads[0]["metrics"]["users"] == 300
    assert f"{reads[0]['metrics']['ndcg@10']:.4f}" in r.stdout
