"""The clients read the real TensorFlow Serving's answers (tests/fixtures/tf_serving, from its sources).

Stub servers replay the recorded answers over HTTP and gRPC; `RestClient` and `Client` must parse
them into the same values they give against `tfrec serve`.  The REST front's own JSON is checked
against the same recordings, key by key."""

from __future__ import annotations

import json
import os
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from tfrec.serving import Client, RestClient, ServingClientError

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "tf_serving")


# What both clients make of the recorded metadata.
HALF_PLUS_TWO = {"serving_default": {"inputs": {"x": ("float32", [-1, 1])}, "outputs": {"y": ("float32", [-1, 1])},
                                     "method": "tensorflow/serving/predict"},
                 "regress_x2_to_y3": {"inputs": {"inputs": ("float32", [-1, 1])},
                                      "outputs": {"outputs": ("float32", [-1, 1])},
                                      "method": "tensorflow/serving/regress"}}


def fixture(name: str) -> str:
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def recorded_rest():
    """An HTTP server answering as TF Serving did: path -> (status, recorded body)."""
    routes = {("GET", "/v1/models/half_plus_two"): (200, "status.json"),
              ("GET", "/v1/models/half_plus_two/metadata"): (200, "metadata.json"),
              ("POST", "/v1/models/beauty:predict"): (200, "recommend_columns.json"),
              ("POST", "/v1/models/nope:predict"): (404, "error_not_found.json")}
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, method):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            seen.append((method, self.path, json.loads(body) if body else None))
            status, name = routes.get((method, self.path), (404, "error_not_found.json"))
            data = fixture(name).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._answer("GET")

        def do_POST(self):
            self._answer("POST")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def test_rest_client_reads_tf_servings_status_metadata_predict_and_errors(recorded_rest):
    url, seen = recorded_rest
    client = RestClient(url, timeout=5)
    assert client.status("half_plus_two") == [{"version": 123, "state": "AVAILABLE", "error": ""}]
    assert client.metadata("half_plus_two") == HALF_PLUS_TWO
    recs = client.recommend("beauty", [["B005"], ["B006", "B008"]], k=2)
    assert recs == [[("B003", 9.5), ("B001", 7.25)], [("B002", 1.5), ("B009", 1.0)]]
    # what the client sent: TF Serving's columnar request, histories left-padded with ""
    assert seen[-1] == ("POST", "/v1/models/beauty:predict",
                        {"signature_name": "serving_default", "inputs": {"history": [["", "B005"], ["B006", "B008"]]}})
    with pytest.raises(ServingClientError) as e:
        client.recommend("nope", [["B005"]])
    assert e.value.code == 404 and e.value.message == "Servable not found for request: Latest(nope)"


class _Recorded(prediction_service_pb2_grpc.PredictionServiceServicer, model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self):
        self.requests = []

    def Predict(self, request, context):
        self.requests.append(request)
        return text_format.Parse(fixture("predict_response.pbtxt"), predict_pb2.PredictResponse())

    def GetModelStatus(self, request, context):
        return text_format.Parse(fixture("status_response.pbtxt"), get_model_status_pb2.GetModelStatusResponse())

    def GetModelMetadata(self, request, context):
        recorded = json.loads(fixture("metadata.json"))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        json_format.ParseDict(recorded["model_spec"], response.model_spec)
        defs = json_format.ParseDict(recorded["metadata"]["signature_def"], get_model_metadata_pb2.SignatureDefMap())
        response.metadata["signature_def"].Pack(defs)
        return response


def test_grpc_client_reads_tf_servings_typed_fields_status_and_metadata():
    recorded = _Recorded()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(recorded, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(recorded, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    client = Client(f"127.0.0.1:{port}", timeout=5)
    try:
        assert client.recommend("beauty", [["B005"], ["B006", "B008"]], k=2) == \
            [[("B003", 9.5), ("B001", 7.25)], [("B002", 1.5), ("B009", 1.0)]]
        sent = recorded.requests[-1]
        assert sent.model_spec.name == "beauty" and sent.model_spec.signature_name == "serving_default"
        assert list(sent.inputs["history"].string_val) == [b"", b"B005", b"B006", b"B008"]
        assert [d.size for d in sent.inputs["history"].tensor_shape.dim] == [2, 2]
        assert client.status("beauty") == [{"version": 123, "state": "AVAILABLE", "error": ""}]
        assert client.metadata("half_plus_two") == HALF_PLUS_TWO
    finally:
        client.close()
        server.stop(0)


def test_the_rest_fronts_json_equals_tf_servings():
    """tfrec's own answers, written by the same code the server runs, against the recordings."""
    from tensorflow.core.framework import tensor_shape_pb2, types_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    from tfrec.serving.rest import _json
    from tfrec.serving.rest_json import predict_json
    from tfrec.serving.runner import model_status

    class Model:
        lock = threading.Lock()
        status = {123: (get_model_status_pb2.ModelVersionStatus.State.AVAILABLE, "")}

    class Manager:
        def model(self, name):
            return Model()

    assert _json(model_status(Manager(), "half_plus_two")) == json.loads(fixture("status.json"))
    defs = get_model_metadata_pb2.SignatureDefMap()
    for name, key, method, tensor in (("serving_default", "x", "predict", "x:0"),
                                      ("regress_x2_to_y3", "inputs", "regress", "x2:0")):
        sig = defs.signature_def[name]
        sig.method_name = f"tensorflow/serving/{method}"
        for infos, k, t in ((sig.inputs, key, tensor), (sig.outputs, "y" if key == "x" else "outputs",
                                                        "y:0" if key == "x" else "y3:0")):
            infos[k].CopyFrom(meta_graph_pb2.TensorInfo(name=t, dtype=types_pb2.DT_FLOAT, tensor_shape=
                                                        tensor_shape_pb2.TensorShapeProto(dim=[{"size": -1},
                                                                                               {"size": 1}])))
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name, response.model_spec.version.value = "saved_model_half_plus_two_2_versions", 123
    ours = {"model_spec": _json(response.model_spec), "metadata": {"signature_def": _json(defs)}}
    assert ours == json.loads(fixture("metadata.json"))
    outputs = {"item_ids": np.array([[b"B003", b"B001", b"B007"], [b"B002", b"B009", b"B004"]], dtype=object),
               "scores": np.array([[9.5, 7.25, 3.0], [1.5, 1.0, 0.5]], np.float32)}
    assert predict_json(outputs, "columnar") == json.loads(fixture("recommend_columns.json"))
    assert predict_json(outputs, "row") == json.loads(fixture("recommend_rows.json"))
    assert predict_json({"y": np.array([3.5, 4.0], np.float32)}, "columnar") == json.loads(fixture("predict_columns.json"))
    assert predict_json({"y": np.array([[2.5, 3.0], [3.5, 4.0]], np.float32)}, "row") == \
        json.loads(fixture("predict_rows.json"))
