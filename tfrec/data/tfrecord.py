"""TFRecord files and ``tf.train.Example`` records of int64 features, without TensorFlow.

The sequence shards of ``tfrec data prepare --format tfrecord`` are written by the pandas engine's
process and by Spark's Python workers; neither needs TensorFlow for it (a Spark worker that imports it
costs about 1 GB and seconds of start-up).  The bytes are those of ``tf.io.TFRecordWriter`` writing
``tf.train.Example.SerializeToString(deterministic=True)`` (the tests check it against TensorFlow):

- a record is ``uint64 length | uint32 masked CRC-32C of length | data | uint32 masked CRC-32C of data``,
  little-endian, the CRC masked as TensorFlow masks it;
- an Example whose features are all ``Int64List`` is ``Features`` (field 1) holding one map entry
  (field 1) per feature in key order, each the key (field 1) and a ``Feature`` (field 2) whose
  ``int64_list`` (field 3) packs its values as varints (field 1).

:func:`read_records` reads the framing back from any binary stream (a file on a store TensorFlow cannot
open, such as S3 or HDFS through pyarrow) and checks both CRCs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import BinaryIO

import numpy as np

from tfrec.errors import TfrecError

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")


def _crc32c(data: bytes) -> int:
    try:
        import google_crc32c
    except ImportError:  # an install_requires of tfrec: only a broken environment gets here
        raise TfrecError("writing TFRecord files needs the google-crc32c package (pip install google-crc32c)") \
            from None
    return google_crc32c.value(data)


def masked_crc(data: bytes) -> int:
    """TensorFlow's masked CRC-32C of `data`."""
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """One record with its TFRecord framing."""
    length = struct.pack("<Q", len(record))
    return length + struct.pack("<I", masked_crc(length)) + record + _FOOTER.pack(masked_crc(record))


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64: ten bytes of two's complement, as protobuf writes it
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varints(values) -> bytes:
    """Protobuf varints of int64 `values`, one after the other (vectorised for long lists)."""
    v = np.asarray(values, dtype=np.int64).view(np.uint64).ravel()
    if not len(v):
        return b""
    sizes = np.ones(len(v), dtype=np.int64)
    for k in range(1, 10):
        sizes += v >= np.uint64(1 << (7 * k))
    digits = np.empty((len(v), 10), dtype=np.uint8)
    for k in range(10):
        more = (sizes > k + 1).astype(np.uint8) << 7
        digits[:, k] = ((v >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8) | more
    return digits[np.arange(10) < sizes[:, None]].tobytes()


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def int64_example(features: Mapping[str, Iterable[int]]) -> bytes:
    """``tf.train.Example`` of int64 list features, serialised deterministically (keys in byte order)."""
    entries = []
    for key in sorted(features, key=lambda k: k.encode("utf-8")):
        values = features[key]
        packed = varints(values)
        int64_list = _field(1, packed) if packed else b""
        feature = _field(3, int64_list)
        entries.append(_field(1, _field(1, key.encode("utf-8")) + _field(2, feature)))
    return _field(1, b"".join(entries))


def write_records(stream: BinaryIO, records: Iterable[bytes]) -> int:
    """Writes `records` with their framing to a binary `stream`; returns how many."""
    n = 0
    for record in records:
        stream.write(frame(record))
        n += 1
    return n


def read_records(stream: BinaryIO, name: str = "the TFRecord file") -> Iterator[bytes]:
    """The records of a TFRecord stream, both CRCs checked; a truncated or corrupt file is one sentence."""
    index = 0
    while True:
        header = stream.read(_HEADER.size)
        if not header:
            return
        if len(header) < _HEADER.size:
            raise TfrecError(f"{name} is truncated in the header of record {index}")
        length, crc = _HEADER.unpack(header)
        if masked_crc(header[:8]) != crc:
            raise TfrecError(f"{name} is corrupt: the length of record {index} fails its checksum")
        data = stream.read(length)
        footer = stream.read(_FOOTER.size)
        if len(data) < length or len(footer) < _FOOTER.size:
            raise TfrecError(f"{name} is truncated in record {index}")
        if masked_crc(data) != _FOOTER.unpack(footer)[0]:
            raise TfrecError(f"{name} is corrupt: record {index} fails its checksum")
        yield data
        index += 1
