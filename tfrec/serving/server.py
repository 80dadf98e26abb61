"""The embedded model server: TensorFlow Serving's gRPC and REST APIs over the same model folders.

``tfrec serve`` takes ``tensorflow_model_server``'s flags.  gRPC: ``PredictionService``
(``Predict``, ``GetModelMetadata``, ``Regress``, ``Classify``; ``MultiInference`` answers
``UNIMPLEMENTED``), ``ModelService`` (``GetModelStatus``, ``HandleReloadConfigRequest``) and, on
request, the standard health service (``grpc.health.v1``), with TF Serving's status codes; TLS from
an ``SSLConfig`` file.  Every handler honours the call's deadline, including the time it waited for
a thread or in the batching queue.  REST is :mod:`tfrec.serving.rest`.  No request, however
malformed, stops the server; SIGTERM stops taking requests, drains both fronts, then exits.
Imports TensorFlow, grpc and the serving protos only.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (classification_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2, status_pb2)

from tfrec.serving import tensors
from tfrec.serving.batching import BatchingOptions
from tfrec.serving.errors import ServingError
from tfrec.serving.models import ModelManager
from tfrec.serving.runner import CLASSIFY_METHOD, REGRESS_METHOD, Runner, Spec, model_metadata, model_status

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
HEALTH_SERVICES = ("tensorflow.serving.ModelService", "tensorflow.serving.PredictionService")


def _spec(proto) -> Spec:
    version = proto.version.value if proto.HasField("version") else None
    return Spec(proto.name, version, proto.version_label or None, proto.signature_name)


def _deadline(context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class AccessLog:
    """One line per request (``--access_log_file``): time, front, peer, call, model, status, milliseconds."""

    def __init__(self, path: str | None):
        self.lock = threading.Lock()
        self.stream = None if not path else (sys.stdout if path == "-" else open(path, "a", buffering=1,
                                                                                  encoding="utf-8"))

    def write(self, front: str, peer: str, call: str, model: str, code: str, seconds: float) -> None:
        if self.stream is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        line = f"{stamp} {front} {peer} {call} model={model or '-'} {code} {seconds * 1000:.1f}ms\n"
        with self.lock:
            try:
                self.stream.write(line)
            except (OSError, ValueError):
                pass


def _guard(api: str | None):
    """Turns any failure of a handler into its gRPC status (the server lives on), logs and counts it."""
    def decorate(method):
        def wrapped(self, request, context):
            start = time.perf_counter()
            code = "OK"
            try:
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:
                    raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded before the request was handled")
                return method(self, request, context)
            except ServingError as e:
                code = e.code
                context.abort(getattr(grpc.StatusCode, e.code), str(e))
            except Exception as e:  # never let a request kill the server
                code = "INTERNAL"
                context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
            finally:
                spec = getattr(request, "model_spec", None)
                name = spec.name if spec is not None else ""
                if api is not None:
                    self.runner.observe(name, api, "GRPC", start, code)
                self.access.write("grpc", context.peer(), method.__name__, name, code, time.perf_counter() - start)
        wrapped.__name__ = method.__name__
        return wrapped
    return decorate


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, runner: Runner, access: AccessLog):
        self.runner, self.access = runner, access

    @_guard("Predict")
    def Predict(self, request, context):
        spec = _spec(request.model_spec)
        with self.runner.version(spec) as version:
            inputs = {k: tensors.to_array(v, self.runner.limits, k) for k, v in request.inputs.items()}
            outputs = self.runner.run(version, spec.signature_name, inputs, list(request.output_filter),
                                      _deadline(context))
            response = predict_pb2.PredictResponse()
            response.model_spec.name = spec.name
            response.model_spec.version.value = version.number
            response.model_spec.signature_name = spec.signature_name
        for k, v in outputs.items():
            tensors.to_proto(v, response.outputs[k])
        return response

    def _run_examples(self, request, context, method: str, response):
        """Runs the tf.Example input of a Regress/Classify request; fills the response's model spec."""
        spec = _spec(request.model_spec)
        kind = request.input.WhichOneof("kind")
        if kind != "example_list":
            raise ServingError("INVALID_ARGUMENT", "Input is empty" if kind is None else
                               "only example_list inputs are served (example_list_with_context is not)")
        examples = [e.SerializeToString() for e in request.input.example_list.examples]
        if len(examples) > self.runner.limits.max_rows:
            raise ServingError("RESOURCE_EXHAUSTED", f"the request has {len(examples)} examples, more than the "
                                                     f"{self.runner.limits.max_rows} allowed (--max_request_rows)")
        with self.runner.version(spec) as version:
            values = self.runner.run_examples(version, spec.signature_name, method, examples, _deadline(context))
            response.model_spec.name, response.model_spec.version.value = spec.name, version.number
        response.model_spec.signature_name = spec.signature_name
        return values, len(examples)

    @_guard("Regress")
    def Regress(self, request, context):
        response = regression_pb2.RegressionResponse()
        values, _ = self._run_examples(request, context, REGRESS_METHOD, response)
        for v in values.reshape(-1):
            response.result.regressions.add().value = float(v)
        return response

    @_guard("Classify")
    def Classify(self, request, context):
        response = classification_pb2.ClassificationResponse()
        scores, n = self._run_examples(request, context, CLASSIFY_METHOD, response)
        for row in scores.reshape(n, -1):
            c = response.result.classifications.add()
            for i, s in enumerate(row):
                c.classes.add(label=str(i), score=float(s))
        return response

    @_guard(None)
    def MultiInference(self, request, context):
        raise ServingError("UNIMPLEMENTED", "MultiInference is not served; call Predict, Regress or Classify")

    @_guard(None)
    def GetModelMetadata(self, request, context):
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise ServingError("INVALID_ARGUMENT", "Metadata field(s) not supported: "
                                                   f"{', '.join(f for f in fields if f != 'signature_def') or 'none asked'}")
        return model_metadata(self.runner, _spec(request.model_spec))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager, runner: Runner, access: AccessLog, allow_reload: bool = True):
        self.manager, self.runner, self.access, self.allow_reload = manager, runner, access, allow_reload

    @_guard(None)
    def GetModelStatus(self, request, context):
        if not request.HasField("model_spec"):
            raise ServingError("INVALID_ARGUMENT", "Missing ModelSpec")
        spec = request.model_spec
        return model_status(self.manager, spec.name, spec.version.value if spec.HasField("version") else None)

    @_guard(None)
    def HandleReloadConfigRequest(self, request, context):
        if not self.allow_reload:
            raise ServingError("UNIMPLEMENTED", "config reloads are switched off on this server "
                                                "(--enable_reload_config_request=false)")
        self.manager.reload(request.config)
        return model_management_pb2.ReloadConfigResponse(status=status_pb2.StatusProto(error_code=0))


def _credentials(ssl_config) -> grpc.ServerCredentials:
    if not ssl_config.server_key or not ssl_config.server_cert:
        raise ValueError("the SSL config needs server_key and server_cert (PEM text, as TF Serving reads them)")
    for field, marker in (("server_key", "PRIVATE KEY-----"), ("server_cert", "-----BEGIN CERTIFICATE-----"),
                          ("custom_ca", "-----BEGIN CERTIFICATE-----")):
        value = getattr(ssl_config, field)
        if value and marker not in value:
            raise ValueError(f"the SSL config's {field} is not PEM text (TF Serving takes the key and certificates "
                             "themselves, not file names)")
    return grpc.ssl_server_credentials(
        [(ssl_config.server_key.encode(), ssl_config.server_cert.encode())],
        root_certificates=ssl_config.custom_ca.encode() or None, require_client_auth=ssl_config.client_verify)


class Server:
    """gRPC and REST over one :class:`ModelManager`.

    `port` 0 binds a free port (read it back from ``.port``); `rest_api_port` None (or negative) runs no
    REST front, 0 a free port.  (``tfrec serve`` maps TF Serving's flags, where 0 turns REST off.)"""

    def __init__(self, manager: ModelManager, port: int = 8500, rest_api_port: int | None = 8501,
                 host: str = "127.0.0.1", workers: int | None = None, batching: BatchingOptions | None = None,
                 metrics_path: str | None = None, limits: tensors.Limits | None = None,
                 max_concurrent_rpcs: int | None = None, rest_api_num_threads: int | None = None,
                 rest_api_timeout_ms: int = 30000, ssl_config=None, health_check: bool = True,
                 allow_reload: bool = True, access_log: str | None = None, grpc_socket_path: str | None = None,
                 max_rest_body_bytes: int | None = None):
        self.manager = manager
        self.runner = Runner(manager, batching, limits)
        self.access = AccessLog(access_log)
        cpus = os.cpu_count() or 1
        workers = workers or 4 * cpus  # --grpc_max_threads: TF Serving's default
        self.max_concurrent_rpcs = max_concurrent_rpcs or 4 * workers
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
                                maximum_concurrent_rpcs=self.max_concurrent_rpcs, options=[
                                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self.runner, self.access), self.grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(manager, self.runner, self.access, allow_reload), self.grpc)
        self.health = None
        if health_check:
            self.health = health.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        credentials = _credentials(ssl_config) if ssl_config is not None else None
        self.port = 0
        if port is not None:
            address = f"{host}:{port}"
            self.port = (self.grpc.add_secure_port(address, credentials) if credentials
                         else self.grpc.add_insecure_port(address))
            if not self.port:
                raise OSError(f"cannot listen on {address}")
        if grpc_socket_path:
            address = f"unix:{grpc_socket_path}"
            if not (self.grpc.add_secure_port(address, credentials) if credentials else
                    self.grpc.add_insecure_port(address)):
                raise OSError(f"cannot listen on {address}")
        self.rest = None
        self.rest_port = None
        if rest_api_port is not None and rest_api_port >= 0:
            from tfrec.serving.rest import RestServer

            self.rest = RestServer(self.runner, host, rest_api_port, threads=rest_api_num_threads or 4 * cpus,
                                   timeout_ms=rest_api_timeout_ms, metrics_path=metrics_path, access=self.access,
                                   ready=self.ready, max_body_bytes=max_rest_body_bytes)
            self.rest_port = self.rest.port
        self._done = threading.Event()
        self._stopping = threading.Event()
        self._watch = threading.Thread(target=self._watch_health, name="health", daemon=True)

    def ready(self) -> bool:
        """Serving: not draining, and every configured model has an AVAILABLE version."""
        return not self._stopping.is_set() and self.manager.ready()

    def _set_health(self) -> None:
        if self.health is None:
            return
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set("", serving if self.ready() else not_serving)
        for name in HEALTH_SERVICES:  # as TF Serving marks them once it listens
            self.health.set(name, not_serving if self._stopping.is_set() else serving)

    def _watch_health(self) -> None:
        while not self._stopping.wait(0.2):
            self._set_health()

    def start(self, config_file: str | None = None, config_poll_seconds: float = 0) -> None:
        self._set_health()
        self.grpc.start()
        if self.rest is not None:
            self.rest.start()
        self.manager.start(config_file, config_poll_seconds)
        self._watch.start()

    def stop(self, grace: float = 10.0) -> None:
        """Stops taking requests, lets those in flight finish (up to `grace` seconds), then stops."""
        self._stopping.set()
        if self.health is not None:
            self.health.enter_graceful_shutdown()
        self.manager.stop()
        waits = [self.grpc.stop(grace)]
        if self.rest is not None:
            self.rest.stop(grace)
        for w in waits:
            w.wait()
        self._done.set()

    def wait(self) -> None:
        self._done.wait()

    def stop_on_signals(self) -> None:
        def handler(signum, frame):
            threading.Thread(target=self.stop, daemon=True).start()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
