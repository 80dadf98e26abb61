"""Parts of the embedded server that need no model: metrics, the op deny-list, the REST JSON reader."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from tfrec.serving import opcheck, tensors
from tfrec.serving.errors import HTTP_STATUS, ServingError
from tfrec.serving.metrics import LATENCY_BUCKETS_US, Metrics, escape
from tfrec.serving.rest_json import json_tensor, predict_inputs, predict_json


def test_metric_labels_are_escaped_and_only_served_models_are_counted():
    metrics = Metrics(known=lambda name: name in {"seq", 'a"b\\nc\n'})
    metrics.observe("seq", "Predict", "GRPC", 0.0015)
    metrics.observe("seq", "Predict", "GRPC", 0.0, "NOT_FOUND")
    for i in range(200):
        metrics.observe(f"random-{i}", "Predict", "GRPC", 0.001)  # names no model has: not counted
    metrics.observe('a"b\\nc\n', "predict", "REST", 0.001)
    page = metrics.render()
    assert "random-" not in page
    assert ':tensorflow:serving:request_count{model_name="seq",status="OK"} 1' in page
    assert ':tensorflow:serving:request_count{model_name="seq",status="NOT_FOUND"} 1' in page
    # a"b\nc<newline>: the quote, the backslash and the newline escaped
    assert ':tensorflow:serving:request_count{model_name="a\\"b\\\\nc\\n",status="OK"} 1' in page
    assert escape('x"\n\\') == 'x\\"\\n\\\\'
    # every line is a comment or one sample: no injected line
    for line in page.strip().splitlines():
        assert line.startswith("# TYPE ") or line.startswith(":tensorflow:serving:"), line
    # TF Serving's buckets: 10 us growing by 1.8, 33 of them; 1500 us falls in the bucket bounded by 1983.59
    assert len(LATENCY_BUCKETS_US) == 33 and LATENCY_BUCKETS_US[:3] == pytest.approx((10, 18, 32.4))
    bucket = {ln.split('le="')[1].split('"')[0]: int(ln.rsplit(" ", 1)[1]) for ln in page.splitlines()
              if ln.startswith(":tensorflow:serving:request_latency_bucket{model_name=\"seq\"")}
    assert bucket["1102"] == 0 and bucket["1983.59"] == 1 and bucket["+Inf"] == 1


def test_http_statuses_are_tf_servings():
    assert (HTTP_STATUS["RESOURCE_EXHAUSTED"], HTTP_STATUS["FAILED_PRECONDITION"], HTTP_STATUS["DEADLINE_EXCEEDED"],
            HTTP_STATUS["NOT_FOUND"], HTTP_STATUS["UNAVAILABLE"]) == (429, 400, 504, 404, 503)


def _saved_model(tmp_path, fn, name="m") -> saved_model_pb2.SavedModel:
    module = tf.Module()
    module.f = tf.function(fn, input_signature=[tf.TensorSpec([None], tf.string)])
    module.v = tf.Variable(1.0)
    path = str(tmp_path / name)
    tf.saved_model.save(module, path, signatures={"serving_default": module.f})
    proto = saved_model_pb2.SavedModel()
    with open(f"{path}/saved_model.pb", "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def test_graphs_that_read_files_or_run_python_are_refused_and_the_savers_own_ops_are_not(tmp_path):
    clean = _saved_model(tmp_path, lambda x: {"y": tf.strings.length(x)}, "clean")
    assert opcheck.denied_ops(clean) == {}  # SaveV2/RestoreV2 of the checkpoint saver are not counted
    reads = _saved_model(tmp_path, lambda x: {"y": tf.io.read_file(x[0])[None]}, "reads")
    assert "ReadFile" in opcheck.denied_ops(reads)
    with pytest.raises(opcheck.ForbiddenOpsError, match="ReadFile"):
        opcheck.check_saved_model("reads", reads)
    python = _saved_model(tmp_path, lambda x: {"y": tf.py_function(lambda t: t, [x], tf.string)}, "python")
    assert "EagerPyFunc" in opcheck.denied_ops(python)


def test_a_vocabulary_table_is_allowed_from_an_asset_and_refused_from_a_constant_path(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\nb\n")

    class WithAsset(tf.Module):
        def __init__(self):
            self.table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
                str(vocab), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER), -1)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def f(self, x):
            return {"y": self.table.lookup(x)}

    m = WithAsset()
    tf.saved_model.save(m, str(tmp_path / "asset"), signatures={"serving_default": m.f})
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((tmp_path / "asset" / "saved_model.pb").read_bytes())
    assert opcheck.denied_ops(proto) == {}
    # the same initialiser with its file name as a constant in the graph: refused
    for fn in proto.meta_graphs[0].graph_def.library.function:
        for node in fn.node_def:
            if node.op == "InitializeTableFromTextFileV2":
                const = fn.node_def.add(name="evil_path", op="Const")
                const.attr["dtype"].type = types_pb2.DT_STRING
                node.input[1] = "evil_path:output:0"
    assert "InitializeTableFromTextFileV2" in opcheck.denied_ops(proto)


def test_rest_json_becomes_dense_tensors_with_tf_servings_checks():
    infos = {"history": type("I", (), {"dtype": types_pb2.DT_STRING})(),
             "k": type("I", (), {"dtype": types_pb2.DT_INT32})()}
    limits = tensors.Limits(max_rows=10, max_elements=100, max_history_length=20)
    got, fmt = predict_inputs({"instances": [{"history": ["a", {"b64": "Yg=="}], "k": 3},
                                             {"history": ["c", "d"], "k": 4}]}, infos, limits)
    assert fmt == "row" and got["history"].tolist() == [[b"a", b"b"], [b"c", b"d"]] and got["k"].tolist() == [3, 4]
    assert got["k"].dtype == np.int32
    cases = [({"instances": [{"history": ["a"], "k": 1}, {"history": ["a", "b"], "k": 1}]}, "INVALID_ARGUMENT"),
             ({"inputs": {"history": [["a"], ["a", "b"]], "k": [1, 1]}}, "INVALID_ARGUMENT"),  # ragged
             ({"inputs": {"history": [[{"b64": "!!"}]], "k": [1]}}, "INVALID_ARGUMENT"),  # not base64
             ({"inputs": {"history": [["a"]], "k": [2**40]}}, "INVALID_ARGUMENT"),  # out of int32
             ({"inputs": {"history": [["a"]], "k": [1.5]}}, "INVALID_ARGUMENT"),
             ({"inputs": {"history": [["a"]], "k": [True]}}, "INVALID_ARGUMENT"),
             ({"inputs": {"history": [["a"]]}}, "INVALID_ARGUMENT"),  # missing input
             ({"inputs": {"history": [["a"] * 30], "k": [1]}}, "RESOURCE_EXHAUSTED"),
             ({"instances": [], "inputs": {}}, "INVALID_ARGUMENT"),
             ({"instances": []}, "INVALID_ARGUMENT")]
    for body, code in cases:
        with pytest.raises(ServingError) as e:
            predict_inputs(body, infos, limits)
        assert e.value.code == code, (body, e.value)
    with pytest.raises(ServingError, match="Unable to base64 decode"):
        json_tensor([{"b64": "a"}], types_pb2.DT_STRING, "x", limits)


def test_rest_answers_are_written_as_tf_serving_writes_them():
    outputs = {"item_ids": np.array([[b"a", b"b"]], dtype=object), "scores": np.array([[0.5, 0.25]], np.float32),
               "thumb_bytes": np.array([b"\xff"], dtype=object)}
    assert predict_json(outputs, "row") == {"predictions": [
        {"item_ids": ["a", "b"], "scores": [0.5, 0.25], "thumb_bytes": {"b64": "/w=="}}]}
    assert predict_json({"scores": outputs["scores"]}, "columnar") == {"outputs": [[0.5, 0.25]]}
