"""tfrec.data.tfrecord writes what TensorFlow writes, and reads its framing back with both checksums."""

from __future__ import annotations

import io

import pytest
import tensorflow as tf

from tfrec.data import tfrecord
from tfrec.errors import TfrecError

CASES = [
    {"position": [3], "user_index": [1], "items": [5, 300, 2**40, 0], "valid_item": [0], "test_item": [7]},
    {"items": []},  # an empty list keeps its (empty) Int64List
    {"b": [1], "a": [2**63 - 1, -(2**63), -1]},  # key order, the int64 extremes, ten-byte negatives
]


def tensorflow_example(features: dict) -> bytes:
    return tf.train.Example(features=tf.train.Features(feature={
        k: tf.train.Feature(int64_list=tf.train.Int64List(value=v)) for k, v in features.items()})) \
        .SerializeToString(deterministic=True)


@pytest.mark.parametrize("features", CASES)
def test_examples_are_tensorflows_bytes(features):
    assert tfrecord.int64_example(features) == tensorflow_example(features)
    parsed = tf.train.Example.FromString(tfrecord.int64_example(features))
    assert {k: list(v.int64_list.value) for k, v in parsed.features.feature.items()} == features


def test_varints_match_protobufs_encoding():
    values = [0, 1, 127, 128, 300, 16383, 16384, 2**35 + 5, -2]
    packed = tfrecord.varints(values)
    assert packed == b"".join(tfrecord._varint(v) for v in values)
    assert packed[:6] == bytes([0, 1, 127, 0x80, 1, 0xAC])  # 0, 1, 127, 128 = 80 01, 300 = ac 02


def test_files_are_tensorflows_bytes_and_read_back(tmp_path):
    path = str(tmp_path / "a.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for case in CASES:
            writer.write(tensorflow_example(case))
    ours = io.BytesIO()
    assert tfrecord.write_records(ours, [tfrecord.int64_example(c) for c in CASES]) == 3
    with open(path, "rb") as f:
        assert f.read() == ours.getvalue()
    ours.seek(0)
    assert list(tfrecord.read_records(ours)) == [tensorflow_example(c) for c in CASES]
    assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == [tensorflow_example(c) for c in CASES]


def test_corrupt_and_truncated_files_are_one_sentence():
    good = tfrecord.frame(b"abcdef") + tfrecord.frame(b"xyz")
    flipped = bytearray(good)
    flipped[14] ^= 1  # a byte of the first record's data
    with pytest.raises(TfrecError, match="record 0 fails its checksum"):
        list(tfrecord.read_records(io.BytesIO(bytes(flipped)), "x.tfrecord"))
    flipped = bytearray(good)
    flipped[len(tfrecord.frame(b"abcdef"))] ^= 1  # the second record's length
    with pytest.raises(TfrecError, match="the length of record 1 fails its checksum"):
        list(tfrecord.read_records(io.BytesIO(bytes(flipped)), "x.tfrecord"))
    with pytest.raises(TfrecError, match="truncated in record 1"):
        list(tfrecord.read_records(io.BytesIO(good[:-2]), "x.tfrecord"))
    with pytest.raises(TfrecError, match="truncated in the header of record 1"):
        list(tfrecord.read_records(io.BytesIO(good[:len(tfrecord.frame(b"abcdef")) + 5]), "x.tfrecord"))
