"""tfrec.serving.tensors: TensorProto <-> numpy, as TensorFlow reads them and as TF Serving writes them."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from tfrec.serving import tensors

ARRAYS = [
    np.array([[b"a", b"bc"], [b"", b"\xff"]], dtype=object),
    np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    np.array([1.5, -2.25]),
    np.array([[1, -2, 3]], dtype=np.int32),
    np.array([2**40, -1], dtype=np.int64),
    np.array([0, 255], dtype=np.uint8),
    np.array([True, False]),
    np.zeros((0, 5), dtype=np.float32),
    np.zeros((3, 0), dtype=object),
    np.array(b"scalar", dtype=object),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_round_trip_matches_tensorflow(array):
    proto = tensors.to_proto(array)
    assert proto.dtype == tf.dtypes.as_dtype(array.dtype if array.dtype != object else tf.string).as_datatype_enum
    back = tensors.to_array(proto)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tolist() == array.tolist()
    assert tf.make_ndarray(proto).tolist() == array.tolist()  # TensorFlow reads what we write
    theirs = tf.make_tensor_proto(array)  # and we read what TensorFlow writes (tensor_content for numbers)
    assert tensors.to_array(theirs).tolist() == array.tolist()


def test_responses_use_the_typed_fields_as_tf_serving_does():
    proto = tensors.to_proto(np.array([[0.5, 0.25]], dtype=np.float32))
    assert list(proto.float_val) == [0.5, 0.25] and not proto.tensor_content
    assert [d.size for d in proto.tensor_shape.dim] == [1, 2]
    assert list(tensors.to_proto(np.array([b"x"], dtype=object)).string_val) == [b"x"]


def test_python_values_convert_as_tensorflow_converts_them():
    for value in ([1.0, 2.0], [[1, 2]], [["a", "b"]], 3):
        ours, theirs = tensors.to_proto(value), tf.make_tensor_proto(value)
        assert ours.dtype == theirs.dtype, value
        assert tensors.to_array(ours).tolist() == tf.make_ndarray(theirs).tolist()
    assert tensors.to_proto([2**40]).dtype == types_pb2.DT_INT64
    # str arrays become UTF-8 bytes
    assert list(tensors.to_proto(np.array(["é"])).string_val) == ["é".encode()]


def test_other_encodings_are_read_through_tensorflow():
    broadcast = tf.make_tensor_proto(7.0, shape=[2, 2])  # one value filling a shape
    assert tensors.to_array(broadcast).tolist() == [[7.0, 7.0], [7.0, 7.0]]
    half = tf.make_tensor_proto(np.array([1.5, 2.0], dtype=np.float16))
    assert tensors.to_array(half).tolist() == [1.5, 2.0]
    assert tensors.to_proto(np.array([1.5], dtype=np.float16)).dtype == types_pb2.DT_HALF


def test_values_that_do_not_fit_the_shape_are_refused():
    proto = tensors.to_proto(np.array([b"a", b"b", b"c"], dtype=object))
    proto.tensor_shape.dim[0].size = 2
    with pytest.raises(Exception):
        tensors.to_array(proto)
