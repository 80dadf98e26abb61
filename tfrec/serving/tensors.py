"""``TensorProto`` <-> numpy for the server and the clients, without TensorFlow's per-call overhead.

``tf.make_tensor_proto`` and ``tf.make_ndarray`` cost about 60 and 15 microseconds a call,
most of it in checks that a request of a few strings does not need; on a server answering
a request in a couple of milliseconds that is a tenth of the work.  These two functions
cover the tensors the API carries (strings, the integer and float types, bools) directly,
and hand anything else (half floats, a value broadcast to a shape, a complex type) to
TensorFlow's own functions, so every valid ``TensorProto`` is still read.

Responses are written the way TensorFlow Serving writes them: values in the typed fields
(``string_val``, ``float_val``, ``int64_val``...), so a client that reads
``response.outputs["scores"].float_val`` works against either server.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

# dtype enum -> (numpy dtype, the typed field TensorFlow Serving fills)
_TYPES = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"),
    types_pb2.DT_INT16: (np.int16, "int_val"),
    types_pb2.DT_INT8: (np.int8, "int_val"),
    types_pb2.DT_UINT8: (np.uint8, "int_val"),
    types_pb2.DT_UINT16: (np.uint16, "int_val"),
    types_pb2.DT_INT64: (np.int64, "int64_val"),
    types_pb2.DT_UINT32: (np.uint32, "uint32_val"),
    types_pb2.DT_UINT64: (np.uint64, "uint64_val"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val"),
}
_ENUM_OF = {np.dtype(t): enum for enum, (t, _) in _TYPES.items()}


def dtype_enum(array) -> int:
    """The ``DataType`` enum of a numpy array (object, bytes and str arrays are strings)."""
    if array.dtype.kind in "OSU":
        return types_pb2.DT_STRING
    enum = _ENUM_OF.get(array.dtype)
    if enum is None:
        import tensorflow as tf

        enum = tf.dtypes.as_dtype(array.dtype).as_datatype_enum
    return enum


@dataclasses.dataclass(frozen=True)
class Limits:
    """How large a request's tensors may be (``tfrec serve --max_request_rows`` ...).

    Checked from the declared shape before anything is allocated; over a limit is ``RESOURCE_EXHAUSTED``."""

    max_rows: int = 10_000  # first dimension of an input
    max_elements: int = 10_000_000  # elements of one input
    max_history_length: int = 10_000  # any later dimension (a history's length)

    def check(self, name: str, shape) -> None:
        from tfrec.serving.errors import ServingError

        shape = [int(d) for d in shape]
        if shape and shape[0] > self.max_rows:
            raise ServingError("RESOURCE_EXHAUSTED", f"input {name!r} has {shape[0]} rows, more than the "
                                                     f"{self.max_rows} allowed (--max_request_rows)")
        if any(d > self.max_history_length for d in shape[1:]):
            raise ServingError("RESOURCE_EXHAUSTED", f"input {name!r} has shape {shape}: a dimension after the "
                                                     f"first is over the {self.max_history_length} allowed "
                                                     f"(--max_history_length)")
        n = math.prod(shape)
        if n > self.max_elements:
            raise ServingError("RESOURCE_EXHAUSTED", f"input {name!r} of shape {shape} has {n} elements, more than "
                                                     f"the {self.max_elements} allowed (--max_tensor_elements)")


NO_LIMITS = Limits(max_rows=2**62, max_elements=2**62, max_history_length=2**62)


_VALUE_FIELDS = ("string_val", "float_val", "double_val", "int_val", "int64_val", "bool_val", "half_val",
                 "uint32_val", "uint64_val")


def _value_count(proto: tensor_pb2.TensorProto) -> int | None:
    """How many values a proto carries, or None when its dtype cannot travel in a request."""
    if proto.dtype in (types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT) or proto.dtype == types_pb2.DT_INVALID:
        return None
    if proto.tensor_content:
        import tensorflow as tf

        size = tf.dtypes.as_dtype(proto.dtype).size
        return len(proto.tensor_content) // size if size else None
    count = sum(len(getattr(proto, f)) for f in _VALUE_FIELDS if f in proto.DESCRIPTOR.fields_by_name)
    count += len(proto.scomplex_val) // 2 + len(proto.dcomplex_val) // 2
    return count


def to_array(proto: tensor_pb2.TensorProto, limits: Limits = NO_LIMITS, name: str = "") -> np.ndarray:
    """The numpy value of a ``TensorProto``: strings as an object array of bytes.

    The declared shape is checked against `limits` before anything is allocated, and the values
    must fill it: as many values as elements, or one value that TensorFlow's compact form repeats.
    Raises ``ServingError`` (``INVALID_ARGUMENT`` or ``RESOURCE_EXHAUSTED``) otherwise."""
    from tfrec.serving.errors import ServingError

    label = name or "a tensor"
    if proto.tensor_shape.unknown_rank:
        raise ServingError("INVALID_ARGUMENT", f"{label} of the request has no shape (unknown rank)")
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if any(s < 0 for s in shape):
        raise ServingError("INVALID_ARGUMENT", f"{label} of the request has a negative dimension: {list(shape)}")
    limits.check(name, shape)
    n = math.prod(shape)
    count = _value_count(proto)
    if count is None:
        raise ServingError("INVALID_ARGUMENT", f"{label} of the request has a dtype ({proto.dtype}) that cannot "
                                               f"be sent as a value")
    if count != n and not (count == 1 and n > 1 and not proto.tensor_content):
        raise ServingError("INVALID_ARGUMENT", f"{label} declares shape {list(shape)} ({n} elements) but carries "
                                               f"{count} values")
    if proto.dtype == types_pb2.DT_STRING and count == n:
        out = np.empty(n, dtype=object)
        out[:] = list(proto.string_val)
        return out.reshape(shape)
    if proto.dtype in _TYPES and count == n:
        dtype, field = _TYPES[proto.dtype]
        if proto.tensor_content:
            return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape).copy()
        return np.array(getattr(proto, field), dtype=dtype).reshape(shape)
    import tensorflow as tf  # the compact form (one value, repeated), half floats, other types

    try:
        return tf.make_ndarray(proto)
    except Exception as e:
        raise ServingError("INVALID_ARGUMENT", f"{label} of the request cannot be read: {e}") from None


def to_proto(value, proto: tensor_pb2.TensorProto | None = None) -> tensor_pb2.TensorProto:
    """A ``TensorProto`` of a numpy array (or anything ``np.asarray`` takes), values in the typed fields;
    written into `proto` (an empty one, such as a response's output) when given."""
    array = np.asarray(value)
    if not isinstance(value, np.ndarray):  # Python values convert as TensorFlow converts them
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        elif array.dtype == np.int64 and array.size and -2**31 <= array.min() and array.max() < 2**31:
            array = array.astype(np.int32)
    proto = tensor_pb2.TensorProto() if proto is None else proto
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    if array.dtype.kind in "OSU":
        flat = array.reshape(-1).tolist()
        if array.dtype.kind == "O" and all(type(x) is bytes for x in flat):
            proto.string_val.extend(flat)
        else:
            proto.string_val.extend(x if isinstance(x, bytes) else str(x).encode("utf-8") for x in flat)
        proto.dtype = types_pb2.DT_STRING
        return proto
    enum = _ENUM_OF.get(array.dtype)
    if enum is None:
        import tensorflow as tf

        proto.CopyFrom(tf.make_tensor_proto(array))
        return proto
    proto.dtype = enum
    getattr(proto, _TYPES[enum][1]).extend(array.reshape(-1).tolist())
    return proto
