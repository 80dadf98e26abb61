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


def to_array(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """The numpy value of a ``TensorProto``: strings as an object array of bytes.

    Raises ``ValueError`` (or TensorFlow's own error) for a proto whose values do not fit its shape."""
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if not proto.tensor_shape.unknown_rank and all(s >= 0 for s in shape):
        n = math.prod(shape)
        if proto.dtype == types_pb2.DT_STRING:
            values = proto.string_val
            if len(values) == n:
                out = np.empty(n, dtype=object)
                out[:] = list(values)
                return out.reshape(shape)
        elif proto.dtype in _TYPES:
            dtype, field = _TYPES[proto.dtype]
            if proto.tensor_content:
                if len(proto.tensor_content) == n * np.dtype(dtype).itemsize:
                    return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape).copy()
            else:
                values = getattr(proto, field)
                if len(values) == n:
                    return np.array(values, dtype=dtype).reshape(shape)
    import tensorflow as tf  # the uncommon encodings: broadcast values, half floats, other types

    return tf.make_ndarray(proto)


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
