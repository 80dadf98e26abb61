"""Which model versions are served: the model base path layout and config of TensorFlow Serving.

A model's base path holds integer version folders (``BASE/1``, ``BASE/2``...), each a
SavedModel.  The version policy picks what to serve (``latest {num_versions: N}``,
``all``, ``specific {versions: ...}``); polling loads new versions and unloads removed
ones.  A version that fails to load is reported with its error while the versions
already loaded keep serving.  Imports TensorFlow and the serving protos only.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_status_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

State = get_model_status_pb2.ModelVersionStatus.State
WARMUP = os.path.join("assets.extra", "tf_serving_warmup_requests")


class ServingError(Exception):
    """An error with the gRPC status code name TF Serving would give (``NOT_FOUND``...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def read_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    """A ``ModelServerConfig`` text proto (``--model_config_file``)."""
    if not os.path.isfile(path):
        raise ServingError("NOT_FOUND", f"model config file {path} does not exist")
    config = model_server_config_pb2.ModelServerConfig()
    try:
        with open(path) as f:
            text_format.Parse(f.read(), config)
    except text_format.ParseError as e:
        raise ServingError("INVALID_ARGUMENT", f"model config file {path} is not a ModelServerConfig: {e}") from None
    if not config.model_config_list.config:
        raise ServingError("INVALID_ARGUMENT", f"model config file {path} lists no model")
    return config


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name, model.base_path, model.model_platform = name, base_path, "tensorflow"
    return config


@dataclasses.dataclass
class Version:
    """One loaded SavedModel."""

    number: int
    path: str
    loaded: object
    signature_defs: dict  # name -> SignatureDef proto
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class Model:
    """The versions of one model name, kept in line with its base path and policy."""

    def __init__(self, config, warmup: bool = False, log=print):
        self.name = config.name
        self.base_path = config.base_path
        self.policy = config.model_version_policy
        self.labels = dict(config.version_labels)
        self.warmup, self.log = warmup, log
        self.versions: dict[int, Version] = {}
        self.status: dict[int, tuple[int, str]] = {}  # version -> (state, error message)
        self.failed: dict[int, float] = {}  # version -> mtime of the failed attempt
        self.lock = threading.RLock()

    def _on_disk(self) -> list[int]:
        if not os.path.isdir(self.base_path):
            return []
        return sorted(int(d) for d in os.listdir(self.base_path)
                      if d.isdigit() and os.path.isfile(os.path.join(self.base_path, d, "saved_model.pb")))

    def _wanted(self, present: list[int]) -> list[int]:
        kind = self.policy.WhichOneof("policy_choice")
        if kind == "all":
            return present
        if kind == "specific":
            return [v for v in present if v in set(self.policy.specific.versions)]
        n = self.policy.latest.num_versions if kind == "latest" and self.policy.latest.num_versions else 1
        return present[-n:]

    def poll(self) -> None:
        """Loads wanted versions not yet loaded, unloads the ones no longer wanted."""
        wanted = self._wanted(self._on_disk())
        for number in wanted:
            if number in self.versions:
                continue
            path = os.path.join(self.base_path, str(number))
            stamp = os.path.getmtime(path)
            if self.failed.get(number) == stamp:
                continue  # failed before and unchanged since
            with self.lock:
                self.status[number] = (State.LOADING, "")
            try:
                version = load_version(number, path, self.warmup)
            except Exception as e:  # any load failure is reported, never fatal
                message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                with self.lock:
                    self.status[number] = (State.END, f"failed to load version {number}: {message}")
                    self.failed[number] = stamp
                self.log(f"model {self.name}: version {number} failed to load: {message}")
                continue
            with self.lock:
                self.versions[number] = version
                self.status[number] = (State.AVAILABLE, "")
                self.failed.pop(number, None)
            self.log(f"model {self.name}: version {number} available")
        with self.lock:
            for number in list(self.versions):
                if number not in wanted:
                    del self.versions[number]
                    self.status[number] = (State.END, "")
                    self.log(f"model {self.name}: version {number} unloaded")

    def resolve(self, version: int | None = None, label: str | None = None) -> Version:
        with self.lock:
            if label:
                if label not in self.labels:
                    raise ServingError("NOT_FOUND", f"model {self.name} has no version label {label!r}")
                version = self.labels[label]
            if version:
                if version not in self.versions:
                    raise ServingError("NOT_FOUND", f"model {self.name} has no servable version {version}")
                return self.versions[version]
            if not self.versions:
                raise ServingError("NOT_FOUND", f"model {self.name} has no servable version yet")
            return self.versions[max(self.versions)]


def load_version(number: int, path: str, warmup: bool) -> Version:
    loaded = tf.saved_model.load(path)
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    defs = dict(proto.meta_graphs[0].signature_def)
    version = Version(number, path, loaded, defs)
    if warmup and os.path.isfile(os.path.join(path, WARMUP)):
        replay_warmup(version)
    return version


def replay_warmup(version: Version) -> int:
    """Runs the PredictionLogs of ``assets.extra/tf_serving_warmup_requests`` (as TF Serving does at load)."""
    count = 0
    for record in tf.data.TFRecordDataset(os.path.join(version.path, WARMUP)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        kind = log.WhichOneof("log_type")
        if kind == "predict_log":
            request = log.predict_log.request
            fn = version.loaded.signatures[request.model_spec.signature_name or "serving_default"]
            fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
        elif kind == "regress_log":
            request = log.regress_log.request
            examples = [e.SerializeToString() for e in request.input.example_list.examples]
            version.loaded.signatures[request.model_spec.signature_name](inputs=tf.constant(examples))
        count += 1
    return count


class ModelManager:
    """Every configured model, polled every `poll_seconds` (0: load once)."""

    def __init__(self, config: model_server_config_pb2.ModelServerConfig, poll_seconds: float = 1.0,
                 warmup: bool = False, log=print):
        self.poll_seconds, self.warmup, self.log = poll_seconds, warmup, log
        self.models: dict[str, Model] = {}
        self._stop = threading.Event()
        self._thread = None
        self.reload(config)

    def reload(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Serves exactly the models of `config` (HandleReloadConfigRequest)."""
        names = [c.name for c in config.model_config_list.config]
        if len(set(names)) != len(names):
            raise ServingError("INVALID_ARGUMENT", "the model config names a model twice")
        models = {}
        for c in config.model_config_list.config:
            if not c.name or not c.base_path:
                raise ServingError("INVALID_ARGUMENT", "every model in the config needs a name and a base_path")
            models[c.name] = Model(c, self.warmup, self.log)
            if c.name in self.models and self.models[c.name].base_path == c.base_path:
                models[c.name].versions = self.models[c.name].versions  # keep what is loaded
                models[c.name].status = self.models[c.name].status
        self.models = models
        self.poll()

    def poll(self) -> None:
        for model in list(self.models.values()):
            model.poll()

    def start(self) -> None:
        if self.poll_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="version-poller", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception as e:  # the poller never dies
                self.log(f"polling failed: {e}")

    def stop(self) -> None:
        self._stop.set()

    def model(self, name: str) -> Model:
        if name not in self.models:
            raise ServingError("NOT_FOUND", f"no model named {name!r} is served")
        return self.models[name]

    def wait_available(self, timeout: float = 60.0) -> bool:
        end = time.time() + timeout
        while time.time() < end:
            if all(m.versions for m in self.models.values()):
                return True
            time.sleep(0.05)
        return False
