"""TF Serving's REST JSON and tensors: how a ``:predict``, ``:regress`` or ``:classify`` body becomes inputs,
and outputs become JSON, by the rules of TF Serving's ``util/json_tensor.cc``.

Inputs are dense: nested lists of one depth and one size per level, each value checked against
the signature's dtype (a JSON integer for an int type and within its range, a number for a float,
a string or ``{"b64": ...}``, strictly decoded, for a string, a boolean for a bool).  The shape is
checked against the request limits before any array is made.  Outputs are written as TF Serving
writes them: one output unnamed, several as an object (columns) or a list of objects (rows), and
string outputs named ``*_bytes`` as ``{"b64": ...}``.
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from tfrec.serving.errors import ServingError


def _b64(value: dict) -> bytes:
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise ServingError("INVALID_ARGUMENT", "Unable to base64 decode") from None


def _is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _json_shape(value) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


_INT_RANGES = {types_pb2.DT_INT8: (-2**7, 2**7), types_pb2.DT_UINT8: (0, 2**8), types_pb2.DT_INT16: (-2**15, 2**15),
               types_pb2.DT_INT32: (-2**31, 2**31), types_pb2.DT_INT64: (-2**63, 2**63),
               types_pb2.DT_UINT32: (0, 2**32), types_pb2.DT_UINT64: (0, 2**64)}


def _leaf(value, dtype: int):
    if dtype == types_pb2.DT_STRING:
        if isinstance(value, str):
            return value.encode("utf-8")
        if _is_b64(value):
            return _b64(value)
    elif dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    elif dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if isinstance(value, int) and not isinstance(value, bool) and low <= value < high:
            return value
    elif dtype == types_pb2.DT_BOOL:
        if isinstance(value, bool):
            return value
    else:
        raise ServingError("UNIMPLEMENTED", f"Conversion of JSON Value: {json.dumps(value)[:80]} to type: "
                                            f"{tf.dtypes.as_dtype(dtype).name} is not supported")
    kind = type(value).__name__ if not isinstance(value, dict) else "object"
    raise ServingError("INVALID_ARGUMENT", f"JSON Value: {json.dumps(value)[:80]} Type: {kind} is not of expected "
                                           f"type: {tf.dtypes.as_dtype(dtype).name}")


def json_tensor(value, dtype: int, name: str, limits) -> np.ndarray:
    """A dense tensor of the JSON `value` (nested lists, all of one depth and size per level)."""
    shape = _json_shape(value)
    limits.check(name, shape)
    flat = []

    def walk(v, level):
        if isinstance(v, list):
            if level >= len(shape) or len(v) != shape[level]:
                raise ServingError("INVALID_ARGUMENT", f"input {name!r} is not a dense tensor: a list of {len(v)} at "
                                                       f"level {level}, expected shape {shape}")
            for x in v:
                walk(x, level + 1)
        else:
            if level != len(shape):
                raise ServingError("INVALID_ARGUMENT", f"JSON Value: {json.dumps(v)[:80]} found at incorrect level: "
                                                       f"{level + 1} in the JSON DOM. Expected at level: {len(shape)}")
            flat.append(_leaf(v, dtype))

    walk(value, 0)
    np_dtype = object if dtype == types_pb2.DT_STRING else tf.dtypes.as_dtype(dtype).as_numpy_dtype
    out = np.empty(len(flat), dtype=np_dtype)
    out[:] = flat
    return out.reshape(shape)


def predict_inputs(body: dict, infos, limits) -> tuple[dict, str]:
    """The named input arrays of a ``:predict`` body, and its format (``row`` or ``columnar``)."""
    has_rows, has_columns = "instances" in body, "inputs" in body
    if has_rows and has_columns:
        raise ServingError("INVALID_ARGUMENT", "Not formatted correctly expecting only one of 'inputs' or "
                                               "'instances' keys to exist")
    if not has_rows and not has_columns:
        raise ServingError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key")
    names = sorted(infos)
    if has_columns:
        columns = body["inputs"]
        if not isinstance(columns, dict) or _is_b64(columns):
            if len(infos) > 1:
                raise ServingError("INVALID_ARGUMENT", "inputs is a plain value/list, but expecting an object as "
                                                       "multiple input tensors required as per tensorinfo_map")
            columns = {names[0]: columns}
        for name in names:
            if name not in columns:
                raise ServingError("INVALID_ARGUMENT", f"Missing named input: {name} in 'inputs' object.")
        return {n: json_tensor(columns[n], infos[n].dtype, n, limits) for n in names}, "columnar"
    rows = body["instances"]
    if not isinstance(rows, list):
        raise ServingError("INVALID_ARGUMENT", "Expecting 'instances' to be an list/array")
    if not rows:
        raise ServingError("INVALID_ARGUMENT", "No values in 'instances' array")
    limits.check("instances", [len(rows)])
    objects = isinstance(rows[0], dict) and not _is_b64(rows[0])
    if not objects and len(infos) > 1:
        raise ServingError("INVALID_ARGUMENT", "instances is a plain list, but expecting list of objects as multiple "
                                               "input tensors required as per tensorinfo_map")
    columns: dict[str, list] = {n: [] for n in names}
    for i, row in enumerate(rows):
        if objects:
            if not isinstance(row, dict) or _is_b64(row):
                raise ServingError("INVALID_ARGUMENT", f"Expecting object but got list at item {i} of input list")
            if set(row) != set(names):
                raise ServingError("INVALID_ARGUMENT", f"Failed to process element: {i} of 'instances' list. JSON "
                                                       f"object keys must be equal to: {','.join(names)}")
            for n in names:
                columns[n].append(row[n])
        else:
            if isinstance(row, dict) and not _is_b64(row):
                raise ServingError("INVALID_ARGUMENT", f"Expecting value/list but got object at item {i} of input list")
            columns[names[0]].append(row)
    out = {}
    for n in names:
        shapes = {tuple(_json_shape(v)) for v in columns[n]}
        if len(shapes) > 1:
            raise ServingError("INVALID_ARGUMENT", f"the instances give input {n!r} different shapes: "
                                                   f"{sorted(shapes)[:2]}")
        out[n] = json_tensor(columns[n], infos[n].dtype, n, limits)
    return out, "row"


def _json_values(name: str, array: np.ndarray):
    if array.dtype.kind in "SO":
        if name.endswith("_bytes"):  # TF Serving writes these as base64 objects
            convert = lambda b: {"b64": base64.b64encode(b).decode()}  # noqa: E731
        else:
            convert = lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else b  # noqa: E731
        out = np.empty(array.size, dtype=object)
        out[:] = [convert(b) for b in array.reshape(-1).tolist()]
        return out.reshape(array.shape).tolist()
    return array.tolist()


def predict_json(outputs: dict, fmt: str) -> dict:
    if not outputs:
        raise ServingError("INVALID_ARGUMENT", "Cannot convert empty tensor map to JSON")
    values = {k: _json_values(k, np.asarray(v)) for k, v in sorted(outputs.items())}
    if fmt == "columnar":
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    sizes = {len(v) if isinstance(v, list) else -1 for v in values.values()}
    if len(sizes) != 1 or -1 in sizes:
        raise ServingError("INVALID_ARGUMENT", "the outputs have no common batch size to write as rows")
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    n = sizes.pop()
    return {"predictions": [{k: v[i] for k, v in values.items()} for i in range(n)]}


def _feature(name: str, value) -> tf.train.Feature:
    values = value if isinstance(value, list) else [value]
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
    if all(isinstance(v, str) or _is_b64(v) for v in values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[_b64(v) if _is_b64(v) else v.encode("utf-8") for v in values]))
    raise ServingError("INVALID_ARGUMENT", f"Unexpected element type in feature: {name}")


def examples_of(body: dict, limits) -> list[bytes]:
    examples = body.get("examples")
    if not isinstance(examples, list) or not all(isinstance(e, dict) for e in examples):
        raise ServingError("INVALID_ARGUMENT", "Expecting 'examples' to be a list of objects")
    limits.check("examples", [len(examples)])
    context = body.get("context", {})
    if not isinstance(context, dict):
        raise ServingError("INVALID_ARGUMENT", "'context' must be an object")
    return [tf.train.Example(features=tf.train.Features(feature={
        k: _feature(k, v) for k, v in {**context, **e}.items()})).SerializeToString() for e in examples]
