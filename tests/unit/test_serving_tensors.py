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
    from tfrec.serving.errors import ServingError

    proto = tensors.to_proto(np.array([b"a", b"b", b"c"], dtype=object))
    proto.tensor_shape.dim[0].size = 2
    with pytest.raises(ServingError, match=r"declares shape \[2\] \(2 elements\) but carries 3 values") as e:
        tensors.to_array(proto)
    assert e.value.code == "INVALID_ARGUMENT"


def test_a_shape_larger_than_the_limits_is_refused_before_anything_is_allocated():
    """A 40-byte request declaring [100000, 100000] with one value used to be expanded to 10^10 elements."""
    from tensorflow.core.framework import tensor_pb2

    from tfrec.serving.errors import ServingError

    limits = tensors.Limits(max_rows=100, max_elements=1000, max_history_length=50)
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"x"])
    for rows, cols, flag in ((100_000, 100_000, "max_request_rows"), (10, 60, "max_history_length"),
                             (50, 40, "max_tensor_elements")):
        del proto.tensor_shape.dim[:]
        proto.tensor_shape.dim.add(size=rows)
        proto.tensor_shape.dim.add(size=cols)
        assert proto.ByteSize() < 60
        with pytest.raises(ServingError, match=flag) as e:
            tensors.to_array(proto, limits, "history")
        assert e.value.code == "RESOURCE_EXHAUSTED"
    del proto.tensor_shape.dim[:]
    proto.tensor_shape.dim.add(size=20)
    proto.tensor_shape.dim.add(size=30)  # 600 elements: TensorFlow's compact form, within the limits
    assert tensors.to_array(proto, limits, "history").shape == (20, 30)
