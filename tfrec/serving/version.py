"""One loaded model version: reading it from its folder (op check, load, warmup) and holding it while served.

A :class:`Version` counts the requests holding it, owns the batchers of its signatures, and on
:meth:`Version.close` waits for those requests before it stops its batchers and drops its graph,
so nothing of an unloaded version outlives it.  Imports TensorFlow and the serving protos only.
"""

from __future__ import annotations

import os
import threading

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from tfrec.serving import opcheck
from tfrec.serving.errors import ServingError, first_line

WARMUP = os.path.join("assets.extra", "tf_serving_warmup_requests")


def fingerprint(path: str) -> tuple | None:
    """What identifies the SavedModel in a version folder: its ``saved_model.pb``'s inode, size and mtime."""
    try:
        st = os.stat(os.path.join(path, "saved_model.pb"))
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class Version:
    """One loaded SavedModel, with the batchers of its signatures and a count of the requests using it."""

    def __init__(self, number: int, path: str, loaded, signature_defs: dict, fingerprint=None):
        self.number, self.path, self.loaded, self.signature_defs = number, path, loaded, signature_defs
        self.fingerprint = fingerprint
        self.batchers: dict = {}
        self._cond = threading.Condition()
        self._inflight = 0
        self._closed = False

    def batcher(self, signature: str, make):
        """The batcher of `signature`, made by ``make()`` on first use; it lives and dies with this version."""
        with self._cond:
            if self._closed:
                raise ServingError("UNAVAILABLE", f"version {self.number} is being unloaded; retry")
            if signature not in self.batchers:
                self.batchers[signature] = make()
            return self.batchers[signature]

    def acquire(self) -> None:
        with self._cond:
            self._inflight += 1

    def release(self) -> None:
        with self._cond:
            self._inflight -= 1
            self._cond.notify_all()

    def close(self, timeout: float = 30.0) -> bool:
        """Waits (up to `timeout` s) for the requests holding this version, then stops its batchers
        and drops its graph.  True when no request was still running."""
        with self._cond:
            quiet = self._cond.wait_for(lambda: self._inflight == 0, timeout)
            self._closed = True
            batchers, self.batchers = list(self.batchers.values()), {}
        for b in batchers:
            b.close()
        self.loaded = None
        return quiet


def load_version(number: int, path: str, warmup: bool, check_ops: bool = True) -> Version:
    proto = saved_model_pb2.SavedModel()
    try:
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            proto.ParseFromString(f.read())
    except Exception as e:
        raise ValueError(f"{path}/saved_model.pb cannot be read as a SavedModel: {first_line(e)}") from None
    if not proto.meta_graphs:
        raise ValueError(f"{path}/saved_model.pb holds no graph")
    if check_ops:
        opcheck.check_saved_model(path, proto)
    loaded = tf.saved_model.load(path)
    defs = {k: v for k, v in proto.meta_graphs[0].signature_def.items() if not k.startswith("__")}
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
