"""Server-side dynamic batching and Prometheus metrics of the embedded server.

Batching follows TF Serving's ``--batching_parameters_file`` (a ``BatchingParameters``
text proto): requests for the same model version and signature that arrive within
``batch_timeout_micros`` are run as one call of up to ``max_batch_size`` rows, spread
over ``num_batch_threads`` threads, with at most ``max_enqueued_batches`` waiting (more
is ``UNAVAILABLE``).  Inputs of variable length (a ``[-1, -1]`` history) are padded to
the longest in the batch with the dtype's zero, which the tfrec signatures read as
padding, as ``pad_variable_length_inputs`` does.
"""

from __future__ import annotations

import bisect
import os
import queue
import re
import threading
import time
from concurrent import futures

import numpy as np
import tensorflow as tf

from tfrec.serving.models import ServingError


BATCHING_FIELDS = {"max_batch_size": 64, "batch_timeout_micros": 1000, "num_batch_threads": 2,
                   "max_enqueued_batches": 256, "pad_variable_length_inputs": True}


def read_batching_parameters(path: str) -> dict:
    """The fields of a ``BatchingParameters`` text proto that the embedded server uses.

    (The message is not among the protos of tensorflow-serving-api, so its flat text form
    is read here: ``name { value: N }`` and ``name: true``; other fields are ignored.)
    """
    if not os.path.isfile(path):
        raise ServingError("NOT_FOUND", f"batching parameters file {path} does not exist")
    with open(path) as f:
        text = re.sub(r"#[^\n]*", "", f.read())
    params = dict(BATCHING_FIELDS)
    for name, value in re.findall(r"(\w+)\s*\{\s*value\s*:\s*(-?\d+)\s*\}", text):
        if name in params:
            params[name] = int(value)
    for name, value in re.findall(r"(\w+)\s*:\s*(true|false)\b", text):
        if name in params:
            params[name] = value == "true"
    leftover = re.sub(r"(\w+)\s*\{\s*value\s*:\s*-?\d+\s*\}|(\w+)\s*:\s*(true|false|\S+)", "", text).strip()
    if leftover:
        raise ServingError("INVALID_ARGUMENT", f"{path} is not a BatchingParameters text proto near {leftover[:40]!r}")
    if params["max_batch_size"] < 1:
        raise ServingError("INVALID_ARGUMENT", f"{path}: max_batch_size must be positive")
    return params


def read_monitoring_config(path: str) -> str | None:
    """The Prometheus path of a ``MonitoringConfig`` text proto, or None when not enabled."""
    if not os.path.isfile(path):
        raise ServingError("NOT_FOUND", f"monitoring config file {path} does not exist")
    with open(path) as f:
        text = re.sub(r"#[^\n]*", "", f.read())
    block = re.search(r"prometheus_config\s*\{([^}]*)\}", text)
    if not block:
        raise ServingError("INVALID_ARGUMENT", f"{path} has no prometheus_config block")
    if not re.search(r"enable\s*:\s*true", block.group(1)):
        return None
    where = re.search(r'path\s*:\s*"([^"]+)"', block.group(1))
    return where.group(1) if where else "/monitoring/prometheus/metrics"


def _pad_concat(arrays: list[np.ndarray]) -> np.ndarray:
    """Concatenates along rows, padding the other axes to the largest (zeros, or b"" for strings)."""
    if all(a.shape[1:] == arrays[0].shape[1:] for a in arrays):
        return np.concatenate(arrays)
    shape = [max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim)]
    fill = b"" if arrays[0].dtype == object else 0
    out = []
    for a in arrays:
        padded = np.full((a.shape[0], *shape), fill, dtype=a.dtype)
        if a.ndim == 2:  # histories are left-padded: keep the newest items on the right
            padded[:, shape[0] - a.shape[1]:] = a
        else:
            padded[tuple(slice(0, s) for s in a.shape)] = a
        out.append(padded)
    return np.concatenate(out)


class _Pending:
    def __init__(self, inputs: dict, rows: int):
        self.inputs, self.rows = inputs, rows
        self.future: futures.Future = futures.Future()


class Batcher:
    """Dynamic batching of ``run(inputs) -> outputs`` calls that share a signature."""

    def __init__(self, run, max_batch_size: int = 64, timeout_micros: int = 1000, threads: int = 2,
                 max_enqueued: int = 256):
        self.run, self.max_batch_size = run, max(1, max_batch_size)
        self.timeout = max(0, timeout_micros) / 1e6
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, max_enqueued) * self.max_batch_size)
        self.workers = [threading.Thread(target=self._work, daemon=True) for _ in range(max(1, threads))]
        for w in self.workers:
            w.start()

    def __call__(self, inputs: dict) -> dict:
        """Runs `inputs` in a batch and waits for its rows of the outputs."""
        if len(next(iter(inputs.values()))) >= self.max_batch_size:
            return self.run(inputs)  # big enough on its own
        return self.submit(inputs).result()

    def submit(self, inputs: dict) -> futures.Future:
        """Queues `inputs` for a batch; the future gets its rows of the outputs, or the error."""
        pending = _Pending({k: np.asarray(v) for k, v in inputs.items()}, len(next(iter(inputs.values()))))
        try:
            self.queue.put_nowait(pending)
        except queue.Full:
            raise ServingError("UNAVAILABLE", "the batching queue is full; retry later") from None
        return pending.future

    def _work(self) -> None:
        while True:
            batch = [self.queue.get()]
            rows = batch[0].rows
            deadline = time.perf_counter() + self.timeout
            while rows < self.max_batch_size:
                left = deadline - time.perf_counter()
                try:
                    item = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
                rows += item.rows
            self._run(batch)

    def _run(self, batch: list[_Pending]) -> None:
        keys = set(batch[0].inputs)
        if any(set(p.inputs) != keys for p in batch) or any(
                p.inputs[k].dtype != batch[0].inputs[k].dtype for p in batch for k in keys):
            for p in batch:  # mismatched requests run alone
                self._run_one(p)
            return
        try:
            merged = {k: tf.constant(_pad_concat([p.inputs[k] for p in batch])) for k in keys}
            outputs = self.run(merged)
        except Exception:
            for p in batch:  # find who was wrong: each alone
                self._run_one(p)
            return
        start = 0
        for p in batch:
            p.future.set_result({k: v[start:start + p.rows] for k, v in outputs.items()})
            start += p.rows

    def _run_one(self, p: _Pending) -> None:
        try:
            p.future.set_result(self.run({k: tf.constant(v) for k, v in p.inputs.items()}))
        except Exception as e:
            p.future.set_exception(e)


LATENCY_BUCKETS_US = (100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000)


class Metrics:
    """Request counts, errors and a latency histogram per model, version, signature and API,
    rendered in the Prometheus text format."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple, int] = {}
        self.errors: dict[tuple, int] = {}
        self.latency: dict[tuple, list] = {}  # key -> [bucket counts..., sum, count]

    def observe(self, model: str, version: str, signature: str, api: str, seconds: float, error: str | None) -> None:
        key = (model, version, signature, api)
        micros = seconds * 1e6
        with self.lock:
            self.requests[key] = self.requests.get(key, 0) + 1
            if error:
                ekey = key + (error,)
                self.errors[ekey] = self.errors.get(ekey, 0) + 1
            hist = self.latency.setdefault(key, [0] * len(LATENCY_BUCKETS_US) + [0.0, 0])
            i = bisect.bisect_left(LATENCY_BUCKETS_US, micros)
            if i < len(LATENCY_BUCKETS_US):
                hist[i] += 1
            hist[-2] += micros
            hist[-1] += 1

    def render(self) -> str:
        def labels(key, extra=()):
            names = ("model_name", "model_version", "signature_name", "api") + extra
            return ",".join(f'{n}="{v}"' for n, v in zip(names, key))

        lines = ["# TYPE :tensorflow:serving:request_count counter"]
        with self.lock:
            for key, n in sorted(self.requests.items()):
                lines.append(f":tensorflow:serving:request_count{{{labels(key)}}} {n}")
            lines.append("# TYPE :tensorflow:serving:request_error_count counter")
            for key, n in sorted(self.errors.items()):
                lines.append(f":tensorflow:serving:request_error_count{{{labels(key[:4], ('code',))},"
                             f"code=\"{key[4]}\"}} {n}".replace(',,', ','))
            lines.append("# TYPE :tensorflow:serving:request_latency histogram")
            for key, hist in sorted(self.latency.items()):
                running = 0
                for bound, count in zip(LATENCY_BUCKETS_US, hist):
                    running += count
                    lines.append(f":tensorflow:serving:request_latency_bucket{{{labels(key)},le=\"{bound}\"}} {running}")
                lines.append(f":tensorflow:serving:request_latency_bucket{{{labels(key)},le=\"+Inf\"}} {hist[-1]}")
                lines.append(f":tensorflow:serving:request_latency_sum{{{labels(key)}}} {hist[-2]:.1f}")
                lines.append(f":tensorflow:serving:request_latency_count{{{labels(key)}}} {hist[-1]}")
        return "\n".join(lines) + "\n"
