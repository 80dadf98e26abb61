"""The embedded model server: TensorFlow Serving's gRPC and REST APIs over the same model folders.

``tfrec serve`` takes ``tensorflow_model_server``'s flags.  gRPC: ``PredictionService``
(``Predict``, ``GetModelMetadata``, ``Regress``, ``Classify``; ``MultiInference`` answers
``UNIMPLEMENTED``) and ``ModelService`` (``GetModelStatus``, ``HandleReloadConfigRequest``),
with TF Serving's status codes.  REST: ``/v1/models/{name}[/versions/{v}|/labels/{l}]``,
``.../metadata`` and ``:predict`` (``instances`` or ``inputs``), ``:regress``, ``:classify``,
errors as ``{"error": "..."}``.  No request, however malformed, stops the server; SIGTERM
drains the requests in flight, then exits.  Imports TensorFlow, grpc and the serving
protos only.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2, status_pb2)

from tfrec.serving import tensors
from tfrec.serving.models import ModelManager, ServingError, Version

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_REST_BODY_BYTES = 16 * 1024 * 1024
REGRESS_METHOD = "tensorflow/serving/regress"
CLASSIFY_METHOD = "tensorflow/serving/classify"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
HTTP_STATUS = {"NOT_FOUND": 404, "INVALID_ARGUMENT": 400, "RESOURCE_EXHAUSTED": 413, "UNIMPLEMENTED": 501,
               "FAILED_PRECONDITION": 400, "INTERNAL": 500, "UNAVAILABLE": 503}
STATE_NAMES = {v: k for k, v in get_model_status_pb2.ModelVersionStatus.State.items()}


# ---------------------------------------------------------------------------
# Requests, independent of the transport


def _version(manager: ModelManager, name: str, version: int | None, label: str | None) -> Version:
    if not name:
        raise ServingError("INVALID_ARGUMENT", "the request names no model")
    return manager.model(name).resolve(version or None, label or None)


def _described(value) -> tuple[int, list]:
    """(DataType enum, shape) of a request input: a numpy array (gRPC) or a tensor (REST)."""
    if isinstance(value, np.ndarray):
        return tensors.dtype_enum(value), list(value.shape)
    return value.dtype.as_datatype_enum, value.shape.as_list()


def _check_inputs(signature_def, name: str, inputs: dict) -> None:
    expected = signature_def.inputs
    missing = sorted(set(expected) - set(inputs))
    unknown = sorted(set(inputs) - set(expected))
    if unknown:
        raise ServingError("INVALID_ARGUMENT", f"signature {name} has no input {unknown[0]!r}; "
                                               f"its inputs: {', '.join(sorted(expected))}")
    if missing:
        raise ServingError("INVALID_ARGUMENT", f"input {missing[0]!r} of signature {name} is missing")
    for key, info in expected.items():
        dtype, shape = _described(inputs[key])
        if dtype != info.dtype:
            raise ServingError("INVALID_ARGUMENT", f"input {key!r} must be {tf.dtypes.as_dtype(info.dtype).name}, "
                                                   f"got {tf.dtypes.as_dtype(dtype).name}")
        if not info.tensor_shape.unknown_rank:
            dims = [d.size for d in info.tensor_shape.dim]
            if len(shape) != len(dims) or any(d >= 0 and d != g for d, g in zip(dims, shape)):
                raise ServingError("INVALID_ARGUMENT", f"input {key!r} must have shape "
                                                       f"{[d if d >= 0 else -1 for d in dims]}, got {shape}")


class Runner:
    """Runs signatures, through a dynamic batcher per (version, signature) when batching is on,
    and keeps the request metrics."""

    def __init__(self, batching: dict | None = None):
        from tfrec.serving.batching import Metrics

        self.batching = batching
        self.batchers: dict = {}
        self.lock = threading.Lock()
        self.metrics = Metrics()

    def call(self, version: Version, name: str, inputs: dict) -> dict:
        fn = version.loaded.signatures[name]
        if not self.batching:
            return {k: v.numpy() for k, v in fn(**inputs).items()}  # numpy inputs convert in the call
        from tfrec.serving.batching import Batcher

        key = (version.path, version.number, name)
        with self.lock:
            batcher = self.batchers.get(key)
            if batcher is None:
                b = self.batching
                batcher = self.batchers[key] = Batcher(
                    lambda merged: {k: v.numpy() for k, v in fn(**merged).items()}, b["max_batch_size"],
                    b["batch_timeout_micros"], b["num_batch_threads"], b["max_enqueued_batches"])
        return batcher({k: v if isinstance(v, np.ndarray) else v.numpy() for k, v in inputs.items()})


RUNNER = Runner()


def run_signature(version: Version, name: str, inputs: dict, output_filter=(), runner: Runner | None = None) -> dict:
    """Calls signature `name` of `version` with tensors; returns numpy outputs."""
    runner = runner or RUNNER
    name = name or "serving_default"
    if name not in version.signature_defs or name not in version.loaded.signatures:
        raise ServingError("INVALID_ARGUMENT", f"version {version.number} has no signature {name!r}; "
                                               f"it has {', '.join(sorted(version.signature_defs))}")
    _check_inputs(version.signature_defs[name], name, inputs)
    unknown = sorted(set(output_filter) - set(version.signature_defs[name].outputs))
    if unknown:
        raise ServingError("INVALID_ARGUMENT", f"signature {name} has no output {unknown[0]!r}")
    try:
        outputs = runner.call(version, name, inputs)
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
        message = getattr(e, "message", str(e)).strip().splitlines()[0]
        raise ServingError("INVALID_ARGUMENT", f"signature {name} rejected the inputs: {message}") from None
    keys = list(output_filter) or list(outputs)
    return {k: outputs[k] for k in keys}


def _examples(name: str, version: Version, method: str, examples: list[bytes]) -> np.ndarray:
    signature = version.signature_defs.get(name)
    if signature is None:
        raise ServingError("INVALID_ARGUMENT", f"version {version.number} has no signature {name!r}")
    if signature.method_name != method:
        raise ServingError("INVALID_ARGUMENT", f"signature {name} is not a {method.rsplit('/', 1)[-1]} signature")
    if not examples:
        raise ServingError("INVALID_ARGUMENT", "the request holds no example")
    key = next(iter(signature.inputs))
    out = run_signature(version, name, {key: tf.constant(examples, tf.string)})
    return next(iter(out.values()))


def _array(proto) -> np.ndarray:
    try:
        return tensors.to_array(proto)
    except Exception as e:
        raise ServingError("INVALID_ARGUMENT", f"a tensor of the request cannot be read: {e}") from None


# ---------------------------------------------------------------------------
# gRPC


def _guard(method):
    """Turns any failure of a handler into its gRPC status (the server lives on) and counts the request."""
    def wrapped(self, request, context):
        start = time.perf_counter()
        spec = getattr(request, "model_spec", None)
        code = None
        try:
            return method(self, request, context)
        except ServingError as e:
            code = e.code
            context.abort(getattr(grpc.StatusCode, e.code), str(e))
        except Exception as e:  # never let a request kill the server
            code = "INTERNAL"
            context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
        finally:
            if spec is not None:
                self.runner.metrics.observe(
                    spec.name, str(spec.version.value) if spec.HasField("version") else "",
                    spec.signature_name or "serving_default", f"grpc/{method.__name__}", time.perf_counter() - start,
                    code)
    wrapped.__name__ = method.__name__
    return wrapped


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager, runner: Runner):
        self.manager, self.runner = manager, runner

    def _spec(self, spec):
        version = spec.version.value if spec.HasField("version") else None
        return _version(self.manager, spec.name, version, spec.version_label)

    @_guard
    def Predict(self, request, context):
        version = self._spec(request.model_spec)
        name = request.model_spec.signature_name or "serving_default"
        inputs = {k: _array(v) for k, v in request.inputs.items()}
        outputs = run_signature(version, name, inputs, list(request.output_filter), self.runner)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version.number
        response.model_spec.signature_name = name
        for k, v in outputs.items():
            tensors.to_proto(v, response.outputs[k])
        return response

    def _run_examples(self, request, method: str, response):
        """Runs the tf.Example input of a Regress/Classify request; fills the response's model spec."""
        version = self._spec(request.model_spec)
        name = request.model_spec.signature_name or "serving_default"
        examples = [e.SerializeToString() for e in request.input.example_list.examples]
        values = np.asarray(_examples(name, version, method, examples))
        response.model_spec.name, response.model_spec.version.value = request.model_spec.name, version.number
        response.model_spec.signature_name = name
        return values, len(examples)

    @_guard
    def Regress(self, request, context):
        response = regression_pb2.RegressionResponse()
        values, _ = self._run_examples(request, REGRESS_METHOD, response)
        for v in values.reshape(-1):
            response.result.regressions.add().value = float(v)
        return response

    @_guard
    def Classify(self, request, context):
        response = classification_pb2.ClassificationResponse()
        scores, n = self._run_examples(request, CLASSIFY_METHOD, response)
        for row in scores.reshape(n, -1):
            c = response.result.classifications.add()
            for i, s in enumerate(row):
                c.classes.add(label=str(i), score=float(s))
        return response

    @_guard
    def MultiInference(self, request, context):
        raise ServingError("UNIMPLEMENTED", "MultiInference is not served; call Predict, Regress or Classify")

    @_guard
    def GetModelMetadata(self, request, context):
        version = self._spec(request.model_spec)
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise ServingError("INVALID_ARGUMENT", "metadata_field must be ['signature_def']")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name, response.model_spec.version.value = request.model_spec.name, version.number
        defs = get_model_metadata_pb2.SignatureDefMap()
        for k, v in version.signature_defs.items():
            defs.signature_def[k].CopyFrom(v)
        response.metadata["signature_def"].Pack(defs)
        return response


def model_status(manager: ModelManager, name: str, version: int | None = None, label: str | None = None):
    model = manager.model(name)
    if label:
        version = model.resolve(None, label).number
    response = get_model_status_pb2.GetModelStatusResponse()
    with model.lock:
        items = sorted(model.status.items())
    if version:
        items = [(v, s) for v, s in items if v == version]
        if not items:
            raise ServingError("NOT_FOUND", f"model {name} has no version {version}")
    for number, (state, error) in items:
        entry = response.model_version_status.add(version=number, state=state)
        entry.status.CopyFrom(status_pb2.StatusProto(error_code=2 if error else 0, error_message=error))
    return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager, runner: Runner):
        self.manager, self.runner = manager, runner

    @_guard
    def GetModelStatus(self, request, context):
        spec = request.model_spec
        return model_status(self.manager, spec.name, spec.version.value if spec.HasField("version") else None,
                            spec.version_label)

    @_guard
    def HandleReloadConfigRequest(self, request, context):
        self.manager.reload(request.config)
        return model_management_pb2.ReloadConfigResponse(status=status_pb2.StatusProto(error_code=0))


# ---------------------------------------------------------------------------
# REST


def _json_value(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def _rest_tensor(value, info) -> tf.Tensor:
    dtype = tf.dtypes.as_dtype(info.dtype)
    try:
        return tf.constant(_json_value(value), dtype=dtype)
    except (ValueError, TypeError) as e:
        raise ServingError("INVALID_ARGUMENT", f"a value of the request does not fit {dtype.name}: {e}") from None


def _to_json(array: np.ndarray):
    if array.dtype.kind in "SO":
        return np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else b,
                            otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def _feature(value) -> tf.train.Feature:
    values = value if isinstance(value, list) else [value]
    if all(isinstance(v, bool) or isinstance(v, int) for v in values) and values:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    if all(isinstance(v, (int, float)) for v in values) and values:
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[_json_value(v) if isinstance(_json_value(v), bytes) else str(v).encode() for v in values]))


def rest_predict(version: Version, body: dict, runner: Runner | None = None) -> dict:
    name = body.get("signature_name") or "serving_default"
    if name not in version.signature_defs:
        raise ServingError("INVALID_ARGUMENT", f"version {version.number} has no signature {name!r}")
    infos = version.signature_defs[name].inputs
    if ("instances" in body) == ("inputs" in body):
        raise ServingError("INVALID_ARGUMENT", "the body needs exactly one of 'instances' (rows) or 'inputs' (columns)")
    if "inputs" in body:
        columns = body["inputs"]
        if not isinstance(columns, dict):
            if len(infos) != 1:
                raise ServingError("INVALID_ARGUMENT", "'inputs' must name each input of a signature with several")
            columns = {next(iter(infos)): columns}
        values = {k: _rest_tensor(v, infos[k]) if k in infos else tf.constant(0) for k, v in columns.items()}
        outputs = run_signature(version, name, values, runner=runner)
        if len(outputs) == 1:
            return {"outputs": _to_json(next(iter(outputs.values())))}
        return {"outputs": {k: _to_json(v) for k, v in outputs.items()}}
    rows = body["instances"]
    if not isinstance(rows, list) or not rows:
        raise ServingError("INVALID_ARGUMENT", "'instances' must be a non-empty list")
    if all(isinstance(r, dict) for r in rows):
        keys = set(rows[0])
        if any(set(r) != keys for r in rows):
            raise ServingError("INVALID_ARGUMENT", "every instance must name the same inputs")
        columns = {k: [r[k] for r in rows] for k in keys}
    elif len(infos) == 1:
        columns = {next(iter(infos)): rows}
    else:
        raise ServingError("INVALID_ARGUMENT", "instances of a signature with several inputs must be objects")
    values = {k: _rest_tensor(v, infos[k]) if k in infos else tf.constant(0) for k, v in columns.items()}
    outputs = run_signature(version, name, values, runner=runner)
    n = len(rows)
    if len(outputs) == 1:
        return {"predictions": _to_json(next(iter(outputs.values())))}
    as_json = {k: _to_json(v) for k, v in outputs.items()}
    return {"predictions": [{k: as_json[k][i] for k in as_json} for i in range(n)]}


def rest_examples(version: Version, body: dict, method: str) -> dict:
    name = body.get("signature_name") or "serving_default"
    examples = body.get("examples")
    if not isinstance(examples, list) or not all(isinstance(e, dict) for e in examples):
        raise ServingError("INVALID_ARGUMENT", "'examples' must be a list of objects")
    context = body.get("context", {})
    serialized = [tf.train.Example(features=tf.train.Features(feature={
        k: _feature(v) for k, v in {**context, **e}.items()})).SerializeToString() for e in examples]
    values = np.asarray(_examples(name, version, method, serialized))
    if method == REGRESS_METHOD:
        return {"results": values.reshape(-1).tolist()}
    return {"results": [[[str(i), float(s)] for i, s in enumerate(row)] for row in values.reshape(len(examples), -1)]}


PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
                  r"(?P<rest>/metadata|:predict|:regress|:classify)?$")


def make_rest_handler(manager: ModelManager, runner: Runner, metrics_path: str | None = None):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # quiet: one line per request is noise at load
            pass

        def _send(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            start, code, name, version_text, signature = time.perf_counter(), None, "", "", ""
            try:
                path = self.path.split("?", 1)[0]
                if metrics_path and method == "GET" and path == metrics_path:
                    data = runner.metrics.render().encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                match = PATH.match(path)
                if not match:
                    raise ServingError("NOT_FOUND", f"no such path {self.path!r}; try /v1/models/NAME")
                name, label, rest = match["name"], match["label"], match["rest"] or ""
                for part in (name, label):
                    if part is not None and not NAME.match(part):
                        raise ServingError("INVALID_ARGUMENT", f"{part!r} is not a valid model name or label")
                version = None
                if match["version"] is not None:
                    if not match["version"].isdigit():
                        raise ServingError("INVALID_ARGUMENT", f"version {match['version']!r} is not an integer")
                    version = int(match["version"])
                if method == "GET" and rest == "":
                    status = model_status(manager, name, version, label)
                    self._send(200, json_format.MessageToDict(status, preserving_proto_field_name=True))
                    return
                served = _version(manager, name, version, label)
                if method == "GET" and rest == "/metadata":
                    defs = get_model_metadata_pb2.SignatureDefMap()
                    for k, v in served.signature_defs.items():
                        defs.signature_def[k].CopyFrom(v)
                    self._send(200, {"model_spec": {"name": name, "signature_name": "",
                                                    "version": str(served.number)},
                                     "metadata": {"signature_def": json_format.MessageToDict(defs)}})
                    return
                if method != "POST" or rest not in (":predict", ":regress", ":classify"):
                    raise ServingError("NOT_FOUND", f"{method} {self.path} is not served")
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_REST_BODY_BYTES:
                    raise ServingError("RESOURCE_EXHAUSTED", f"the body of {length} bytes is over the "
                                                             f"{MAX_REST_BODY_BYTES} allowed")
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise ServingError("INVALID_ARGUMENT", f"the body is not JSON: {e}") from None
                if not isinstance(body, dict):
                    raise ServingError("INVALID_ARGUMENT", "the body must be a JSON object")
                name, version_text = match["name"], str(served.number)
                signature = body.get("signature_name") or "serving_default"
                if rest == ":predict":
                    self._send(200, rest_predict(served, body, runner))
                else:
                    self._send(200, rest_examples(served, body, REGRESS_METHOD if rest == ":regress"
                                                  else CLASSIFY_METHOD))
            except ServingError as e:
                code = e.code
                self._send(HTTP_STATUS.get(e.code, 400), {"error": str(e)})
            except Exception as e:  # never let a request kill the server
                code = "INTERNAL"
                self._send(500, {"error": f"{type(e).__name__}: {e}"})
            finally:
                if name:
                    runner.metrics.observe(name, version_text, signature, "rest", time.perf_counter() - start, code)

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

    return Handler


# ---------------------------------------------------------------------------
# The server


class _RestServer(ThreadingHTTPServer):
    # The default listen backlog (5) refuses connections under a burst of concurrent clients.
    request_queue_size = 256


class Server:
    """gRPC and REST over one :class:`ModelManager`."""

    def __init__(self, manager: ModelManager, port: int = 8500, rest_api_port: int = 8501, host: str = "127.0.0.1",
                 workers: int = 16, batching: dict | None = None, metrics_path: str | None = None):
        self.manager = manager
        self.runner = Runner(batching)
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(manager, self.runner),
                                                                            self.grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager, self.runner), self.grpc)
        self.port = self.grpc.add_insecure_port(f"{host}:{port}")
        if not self.port:
            raise OSError(f"cannot listen on {host}:{port}")
        self.rest = None
        if rest_api_port is not None and rest_api_port >= 0:
            self.rest = _RestServer((host, rest_api_port), make_rest_handler(manager, self.runner, metrics_path))
            self.rest.daemon_threads = True
            self.rest_port = self.rest.server_address[1]
        self._done = threading.Event()

    def start(self) -> None:
        self.grpc.start()
        if self.rest is not None:
            threading.Thread(target=self.rest.serve_forever, name="rest", daemon=True).start()
        self.manager.start()

    def stop(self, grace: float = 10.0) -> None:
        """Stops taking requests, lets those in flight finish (up to `grace` seconds), then stops."""
        self.manager.stop()
        if self.rest is not None:
            self.rest.shutdown()
        self.grpc.stop(grace).wait()
        self._done.set()

    def wait(self) -> None:
        self._done.wait()

    def stop_on_signals(self) -> None:
        def handler(signum, frame):
            threading.Thread(target=self.stop, daemon=True).start()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
