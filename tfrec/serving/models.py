"""Which model versions are served: TensorFlow Serving's model base paths, config and version management.

A model's base path holds integer version folders (``BASE/1``, ``BASE/2``...), each a SavedModel.
The version policy names the versions wanted (``latest {num_versions: N}``, ``all``,
``specific {versions: ...}``), and polling keeps the loaded set in line with it under TF
Serving's guarantees (``AvailabilityPreservingPolicy``):

- a new version loads before an old one is unloaded, and the last AVAILABLE version of a model is
  never unloaded for a newer one that has not become AVAILABLE (corrupt, half-written, refused);
- a failed load is retried ``max_num_load_retries`` times, ``load_retry_interval_micros`` apart,
  while the version reports LOADING; then it reports END with the error and is tried again only
  when its ``saved_model.pb`` changes;
- a version folder replaced in place (a new ``saved_model.pb``) is loaded beside the old one and
  swapped in when it is ready;
- an unloaded version is quiesced (the requests holding it finish) before its batchers stop and
  its graph is dropped;
- every graph is checked against a deny-list of ops before it loads (:mod:`tfrec.serving.opcheck`),
  and base paths can be confined to allowed roots.

Config reloads (``HandleReloadConfigRequest``, ``--model_config_file_poll_wait_seconds``) are
validated as TF Serving validates them and serialised with polling.  Imports TensorFlow and the
serving protos only.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time

from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from tfrec.serving.errors import ServingError, first_line
from tfrec.serving.version import WARMUP, Version, fingerprint, load_version, replay_warmup

State = get_model_status_pb2.ModelVersionStatus.State
PLATFORM = "tensorflow"

__all__ = ["ServingError", "ModelManager", "Model", "Version", "ServerOptions", "read_config",
           "single_model_config", "load_version", "replay_warmup", "WARMUP"]


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """Version-management settings (``tensorflow_model_server``'s flags of the same names and defaults)."""

    poll_seconds: float = 1.0  # --file_system_poll_wait_seconds
    warmup: bool = True  # --enable_model_warmup
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    allow_version_labels_for_unavailable_models: bool = False
    allowed_roots: tuple[str, ...] = ()  # --model_base_path_roots: empty means any path
    check_ops: bool = True
    quiesce_seconds: float = 30.0  # longest wait for a retired version's requests


def read_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    """A ``ModelServerConfig`` text proto (``--model_config_file``)."""
    if not os.path.isfile(path):
        raise ServingError("NOT_FOUND", f"model config file {path} does not exist")
    config = model_server_config_pb2.ModelServerConfig()
    try:
        with open(path, encoding="utf-8") as f:
            text_format.Parse(f.read(), config)
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise ServingError("INVALID_ARGUMENT", f"model config file {path} is not a ModelServerConfig: {e}") from None
    if not config.model_config_list.config:
        raise ServingError("INVALID_ARGUMENT", f"model config file {path} lists no model")
    return config


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name, model.base_path, model.model_platform = name, base_path, PLATFORM
    return config


@dataclasses.dataclass
class _Attempt:
    fingerprint: tuple | None
    failures: int = 0
    next_try: float = 0.0
    gave_up: bool = False
    error: str = ""


class Model:
    """The versions of one model name, kept in line with its base path and policy."""

    def __init__(self, config, options: ServerOptions, log=print):
        self.name = config.name
        self.base_path = config.base_path
        self.policy = config.model_version_policy
        self.labels = dict(config.version_labels)
        self.options, self.log = options, log
        self.versions: dict[int, Version] = {}  # AVAILABLE
        self.status: dict[int, tuple[int, str]] = {}  # version -> (state, error message)
        self.attempts: dict[int, _Attempt] = {}
        self.lock = threading.RLock()

    # -- what is on disk and wanted -------------------------------------------------------------

    def _on_disk(self) -> dict[int, tuple]:
        try:
            names = os.listdir(self.base_path)
        except OSError:
            return {}
        found = {}
        for d in names:
            if d.isascii() and d.isdigit() and int(d) > 0:
                fp = fingerprint(os.path.join(self.base_path, d))
                if fp is not None:
                    found[int(d)] = fp
        return found

    def _wanted(self, present: list[int]) -> list[int]:
        kind = self.policy.WhichOneof("policy_choice")
        if kind == "all":
            return present
        if kind == "specific":
            return [v for v in present if v in set(self.policy.specific.versions)]
        n = self.policy.latest.num_versions if kind == "latest" and self.policy.latest.num_versions else 1
        return present[-n:]

    # -- polling -------------------------------------------------------------------------------

    def poll(self) -> None:
        """Loads wanted versions not yet loaded (newest first), then unloads what the policy lets go."""
        present = self._on_disk()
        wanted = self._wanted(sorted(present))
        for number in sorted(wanted, reverse=True):
            self._maybe_load(number, present[number])
        with self.lock:
            for number in list(self.attempts):  # a version that left the disk or the policy is forgotten
                if number not in wanted:
                    attempt = self.attempts.pop(number)
                    if number not in self.versions and self.status.get(number, (None,))[0] == State.LOADING:
                        self.status[number] = (State.END, attempt.error)
            unaspired = sorted(v for v in self.versions if v not in wanted)
            aspired_ready = any(v in self.versions for v in wanted)
            # TF Serving's AvailabilityPreservingPolicy: keep the newest unaspired version while no aspired
            # one is ready, so that the model never goes dark for a version that cannot load.
            retire = unaspired if (not wanted or aspired_ready) else unaspired[:-1]
            retired = [self.versions.pop(v) for v in retire]
            for v in retired:
                self.status[v.number] = (State.UNLOADING, "")
        for version in retired:  # quiesced in the background: polling never waits on a request
            threading.Thread(target=self._retire, args=(version, True), daemon=True,
                             name=f"quiesce-{self.name}-{version.number}").start()

    def _maybe_load(self, number: int, fingerprint: tuple) -> None:
        with self.lock:
            current = self.versions.get(number)
            if current is not None and current.fingerprint == fingerprint:
                return
            attempt = self.attempts.get(number)
            if attempt is None or attempt.fingerprint != fingerprint:
                attempt = self.attempts[number] = _Attempt(fingerprint)
            if attempt.gave_up or time.monotonic() < attempt.next_try:
                return
            if current is None:
                self.status[number] = (State.LOADING, "")
        path = os.path.join(self.base_path, str(number))
        try:
            version = load_version(number, path, self.options.warmup, self.options.check_ops)
            version.fingerprint = fingerprint
        except Exception as e:  # any load failure is reported, never fatal
            self._failed(number, attempt, e, replacing=current is not None)
            return
        with self.lock:
            self.versions[number] = version
            self.status[number] = (State.AVAILABLE, "")
            self.attempts.pop(number, None)
        self.log(f"model {self.name}: version {number} available" + (" (replaced in place)" if current else ""))
        if current is not None:
            threading.Thread(target=self._retire, args=(current, False), daemon=True,
                             name=f"quiesce-{self.name}-{number}").start()

    def _failed(self, number: int, attempt: _Attempt, error: Exception, replacing: bool) -> None:
        message = first_line(error)
        attempt.failures += 1
        attempt.error = f"failed to load version {number}: {message}"
        retries = self.options.max_num_load_retries
        with self.lock:
            if attempt.failures > retries:
                attempt.gave_up = True
                if not replacing:
                    self.status[number] = (State.END, attempt.error)
            else:
                attempt.next_try = time.monotonic() + max(0, self.options.load_retry_interval_micros) / 1e6
        kept = " (the loaded copy keeps serving)" if replacing else ""
        if attempt.gave_up:
            self.log(f"model {self.name}: version {number} failed to load after {attempt.failures} attempts, "
                     f"giving up until its saved_model.pb changes{kept}: {error}")
        else:
            self.log(f"model {self.name}: version {number} failed to load (attempt {attempt.failures} of "
                     f"{retries + 1}; retrying in {self.options.load_retry_interval_micros / 1e6:g} s){kept}: {error}")

    def _retire(self, version: Version, announce: bool) -> None:
        """Quiesces and closes `version`; `announce`: it is gone from the model (not replaced by a new copy)."""
        quiet = version.close(self.options.quiesce_seconds)
        if announce:
            with self.lock:
                if self.status.get(version.number, (None,))[0] == State.UNLOADING:
                    self.status[version.number] = (State.END, "")
        what = f"version {version.number}" if announce else f"the replaced copy of version {version.number}"
        self.log(f"model {self.name}: {what} unloaded"
                 + ("" if quiet else f" (requests still running after {self.options.quiesce_seconds:g} s)"))

    def retire_all(self) -> None:
        with self.lock:
            retired, self.versions = list(self.versions.values()), {}
        for v in retired:
            threading.Thread(target=self._retire, args=(v, False), daemon=True).start()

    # -- requests ------------------------------------------------------------------------------

    def resolve(self, version: int | None = None, label: str | None = None) -> Version:
        """The version a request names (a number, a label, or the newest); not held (see :meth:`acquire`)."""
        with self.lock:
            if label:
                if label not in self.labels:
                    raise ServingError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
                version = self.labels[label]
            if version:
                if version not in self.versions:
                    raise ServingError("NOT_FOUND", f"Servable not found for request: Specific({self.name}, {version})")
                return self.versions[version]
            if not self.versions:
                raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({self.name})")
            return self.versions[max(self.versions)]

    def acquire(self, version: int | None = None, label: str | None = None) -> Version:
        """:meth:`resolve`, holding the version until :meth:`Version.release` (it is not unloaded meanwhile)."""
        with self.lock:
            v = self.resolve(version, label)
            v.acquire()
            return v

    def available(self) -> bool:
        with self.lock:
            return bool(self.versions)


class ModelManager:
    """Every configured model, polled every `options.poll_seconds` (0: load once)."""

    def __init__(self, config: model_server_config_pb2.ModelServerConfig, options: ServerOptions | None = None,
                 log=print, **overrides):
        # `poll_seconds=`, `warmup=`... may be given directly, as fields of ServerOptions.
        self.options = dataclasses.replace(options or ServerOptions(), **overrides)
        self.log = log
        self.models: dict[str, Model] = {}
        self.config = model_server_config_pb2.ModelServerConfig()
        self._config_lock = threading.RLock()  # reloads and polls, one at a time
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.reload(config, first=True)

    # -- config --------------------------------------------------------------------------------

    def validate(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """TF Serving's checks of a new config (server_core.cc), plus the allowed base-path roots."""
        if config.WhichOneof("config") != "model_config_list":
            raise ServingError("INVALID_ARGUMENT", "ServerModelConfig type not supported by "
                                                   "HandleReloadConfigRequest. Only ModelConfigList is currently supported")
        seen = set()
        for c in config.model_config_list.config:
            if not c.name:
                raise ServingError("INVALID_ARGUMENT", "every model in the config needs a name")
            if c.name in seen:
                raise ServingError("INVALID_ARGUMENT", f"Illegal to list model {c.name} multiple times in config list")
            seen.add(c.name)
            if not c.base_path or not os.path.isabs(c.base_path):
                raise ServingError("INVALID_ARGUMENT", f"Expected model {c.name} to have an absolute path or URI; "
                                                       f"got base_path()={c.base_path}")
            platform = c.model_platform or ("tensorflow" if c.model_type == 1 else "")
            if not platform:
                raise ServingError("INVALID_ARGUMENT", "Illegal setting neither ModelServerConfig::model_type "
                                                       f"(deprecated) nor ModelServerConfig::model_platform, "
                                                       f"model name is {c.name}")
            if platform != PLATFORM:
                raise ServingError("INVALID_ARGUMENT", f"Model {c.name} requests unsupported platform {platform}")
            self._check_root(c.name, c.base_path)

    def _check_root(self, name: str, base_path: str) -> None:
        roots = self.options.allowed_roots
        if not roots:
            return
        real = os.path.realpath(base_path)
        for root in roots:
            root = os.path.realpath(root)
            if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
                return
        raise ServingError("PERMISSION_DENIED", f"base_path {base_path} of model {name} is outside the allowed "
                                                f"roots ({', '.join(roots)}; --model_base_path_roots)")

    def _check_labels(self, config) -> None:
        """A label may name only an AVAILABLE version, unless --allow_version_labels_for_unavailable_models
        (then any version, as long as an existing label does not move)."""
        for c in config.model_config_list.config:
            model = self.models.get(c.name)
            for label, number in c.version_labels.items():
                if model is not None and number in model.versions:
                    continue
                if self.options.allow_version_labels_for_unavailable_models and \
                        (model is None or model.labels.get(label, number) == number):
                    continue
                raise ServingError("FAILED_PRECONDITION", f"Request to assign label to version {number} of model "
                                                          f"{c.name}, which is not currently available for inference")

    def reload(self, config: model_server_config_pb2.ModelServerConfig, first: bool = False) -> None:
        """Serves exactly the models of `config` (HandleReloadConfigRequest, a changed config file)."""
        with self._config_lock:
            self.validate(config)
            self._check_labels(config)
            models, dropped = {}, dict(self.models)
            for c in config.model_config_list.config:
                old = self.models.get(c.name)
                if old is not None and old.base_path == c.base_path:
                    old.policy, old.labels = c.model_version_policy, dict(c.version_labels)
                    models[c.name] = old
                    dropped.pop(c.name)
                else:
                    models[c.name] = Model(c, self.options, self.log)
            self.models = models
            self.config = config
            for model in dropped.values():
                model.retire_all()
                self.log(f"model {model.name}: no longer served")
            self.poll()
            if not first:
                self.log(f"config reloaded: {', '.join(models) or 'no models'}")

    # -- polling -------------------------------------------------------------------------------

    def poll(self) -> None:
        with self._config_lock:
            for model in list(self.models.values()):
                try:
                    model.poll()
                except Exception as e:  # one model's trouble never stops the others
                    self.log(f"model {model.name}: polling failed: {e}")

    def start(self, config_file: str | None = None, config_poll_seconds: float = 0) -> None:
        """Starts polling the base paths and, with `config_poll_seconds`, the config file."""
        if self._threads:
            return
        if self.options.poll_seconds > 0:
            self._threads.append(threading.Thread(target=self._loop, args=(self.options.poll_seconds, self.poll),
                                                  name="version-poller", daemon=True))
        if config_file and config_poll_seconds > 0:
            self._threads.append(threading.Thread(target=self._loop, args=(
                config_poll_seconds, lambda: self._reload_file(config_file)), name="config-poller", daemon=True))
        for t in self._threads:
            t.start()

    def _reload_file(self, path: str) -> None:
        try:
            config = read_config(path)
        except ServingError as e:
            self.log(f"config file not reloaded: {e}")
            return
        if config != self.config:
            try:
                self.reload(config)
            except ServingError as e:
                self.log(f"config file {path} not reloaded ({e.code}): {e}")

    def _loop(self, seconds: float, step) -> None:
        while not self._stop.wait(seconds):
            try:
                step()
            except Exception as e:  # the pollers never die
                self.log(f"polling failed: {e}")

    def stop(self) -> None:
        self._stop.set()

    # -- requests ------------------------------------------------------------------------------

    def model(self, name: str) -> Model:
        if not name:
            raise ServingError("INVALID_ARGUMENT", "ModelSpec has no name specified.")
        model = self.models.get(name)
        if model is None:
            raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
        return model

    def ready(self) -> bool:
        """Every configured model has an AVAILABLE version."""
        models = list(self.models.values())
        return bool(models) and all(m.available() for m in models)

    def wait_available(self, timeout: float = 60.0) -> bool:
        end = time.time() + timeout
        while time.time() < end:
            if self.ready():
                return True
            time.sleep(0.05)
        return False
