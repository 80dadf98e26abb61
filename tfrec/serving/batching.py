"""Server-side dynamic batching of the embedded server, as TF Serving's ``--batching_parameters_file`` sets it.

Requests for the same model version and signature that arrive within ``batch_timeout_micros``
run as one call.  The fields of ``BatchingParameters`` mean what they mean to TF Serving:

- ``max_batch_size``: the most rows one request may bring (more: ``INVALID_ARGUMENT``, unless
  ``enable_large_batch_splitting``, which cuts it into pieces that ride in several batches) and,
  without splitting, the most rows one call runs;
- ``max_execution_batch_size`` (with splitting): the most rows one call runs;
- ``allowed_batch_sizes``: a batch is padded up to the next allowed size with copies of a row
  (the last entry must equal the largest batch a call runs), and the padding rows are dropped;
- ``num_batch_threads``, ``max_enqueued_batches`` (a full queue answers ``UNAVAILABLE``);
- ``pad_variable_length_inputs``: inputs whose later dimensions differ are padded to the largest
  (histories on the left, with the dtype's zero or ``b""``, which tfrec signatures read as padding);
  without it, requests of different shapes run in separate calls.

A batcher belongs to one loaded version (:class:`tfrec.serving.models.Version`) and stops with
it.  Every request carries its deadline: one whose deadline passes while it waits is dropped from
its batch and answered ``DEADLINE_EXCEEDED``.  A failing batch is retried request by request so
that only the request at fault gets the error, and nothing a worker meets stops it.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from concurrent import futures

import numpy as np

from tfrec.serving.errors import ServingError


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = 1000  # TF Serving's defaults when --enable_batching has no parameters file
    batch_timeout_micros: int = 0
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    max_enqueued_batches: int = 10
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0

    @property
    def execution_size(self) -> int:
        """The most rows one call runs."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size > 0:
            return self.max_execution_batch_size
        return self.max_batch_size


def batching_options(proto) -> BatchingOptions:
    """:class:`BatchingOptions` of a ``BatchingParameters`` proto, checked as TF Serving checks them."""
    o = BatchingOptions()
    values = {}
    for field in ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches",
                  "max_execution_batch_size"):
        if proto.HasField(field):
            values[field] = getattr(proto, field).value
    if proto.HasField("enable_large_batch_splitting"):
        values["enable_large_batch_splitting"] = proto.enable_large_batch_splitting.value
    values["allowed_batch_sizes"] = tuple(proto.allowed_batch_sizes)
    values["pad_variable_length_inputs"] = proto.pad_variable_length_inputs
    o = dataclasses.replace(o, **values)
    for field in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
        if getattr(o, field) < 1:
            raise ServingError("INVALID_ARGUMENT", f"batching parameter {field} must be positive, got {getattr(o, field)}")
    if o.batch_timeout_micros < 0:
        raise ServingError("INVALID_ARGUMENT", "batching parameter batch_timeout_micros must not be negative")
    if o.enable_large_batch_splitting and o.max_execution_batch_size > o.max_batch_size:
        raise ServingError("INVALID_ARGUMENT", "batching parameter max_execution_batch_size "
                                               f"({o.max_execution_batch_size}) must not exceed max_batch_size "
                                               f"({o.max_batch_size})")
    sizes = o.allowed_batch_sizes
    if sizes:
        if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1:
            raise ServingError("INVALID_ARGUMENT", f"allowed_batch_sizes must be positive and increasing, got {list(sizes)}")
        if sizes[-1] != o.max_batch_size:
            raise ServingError("INVALID_ARGUMENT", "Last entry in allowed_batch_sizes must match max_batch_size; "
                                                   f"last entry was {sizes[-1]}; expected {o.max_batch_size}")
    return o


def _rows(inputs: dict) -> int:
    return len(next(iter(inputs.values())))


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
    __slots__ = ("inputs", "rows", "deadline", "future")

    def __init__(self, inputs: dict, deadline: float | None):
        self.inputs, self.rows, self.deadline = inputs, _rows(inputs), deadline
        self.future: futures.Future = futures.Future()

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def fail(self, error: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(error)

    def answer(self, outputs: dict) -> None:
        if not self.future.done():
            self.future.set_result(outputs)


_STOP = object()


class Batcher:
    """Dynamic batching of ``run(inputs) -> outputs`` calls that share a signature."""

    def __init__(self, run, options: BatchingOptions, name: str = "batcher"):
        self.run, self.options = run, options
        self.size = max(1, options.execution_size)
        self.timeout = max(0, options.batch_timeout_micros) / 1e6
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, options.max_enqueued_batches) * self.size)
        self.closed = False
        self.workers = [threading.Thread(target=self._work, daemon=True, name=f"{name}-{i}")
                        for i in range(max(1, options.num_batch_threads))]
        for w in self.workers:
            w.start()

    def __call__(self, inputs: dict, deadline: float | None = None) -> dict:
        """Runs `inputs` in a batch and waits for its rows of the outputs (until `deadline`, a
        ``time.monotonic()`` value)."""
        rows = _rows(inputs)
        if rows > self.options.max_batch_size:
            raise ServingError("INVALID_ARGUMENT", f"Task size {rows} is larger than maximum input batch size "
                                                   f"{self.options.max_batch_size}")
        pieces = [self.submit({k: v[i:i + self.size] for k, v in inputs.items()}, deadline)
                  for i in range(0, max(rows, 1), self.size)]
        results = [self._wait(p, deadline) for p in pieces]
        if len(results) == 1:
            return results[0]
        return {k: np.concatenate([r[k] for r in results]) for k in results[0]}

    def submit(self, inputs: dict, deadline: float | None = None) -> _Pending:
        """Queues `inputs` for a batch; its future gets its rows of the outputs, or the error."""
        if self.closed:
            raise ServingError("UNAVAILABLE", "this model version is being unloaded; retry")
        pending = _Pending({k: np.asarray(v) for k, v in inputs.items()}, deadline)
        try:
            self.queue.put_nowait(pending)
        except queue.Full:
            raise ServingError("UNAVAILABLE", "The batch scheduling queue to which this task was submitted "
                                              "is full; retry later") from None
        return pending

    @staticmethod
    def _wait(pending: _Pending, deadline: float | None) -> dict:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return pending.future.result(timeout=timeout)
        except futures.TimeoutError:
            pending.fail(ServingError("DEADLINE_EXCEEDED", "the deadline passed while the request waited"))
            raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded: the request waited in the batching "
                                                    "queue past its deadline") from None

    def close(self) -> None:
        """Stops the workers once the requests already queued are answered."""
        self.closed = True
        for _ in self.workers:
            self.queue.put(_STOP)

    # -- workers -------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            first = self.queue.get()
            if first is _STOP:
                return
            batch = [first]
            try:
                rows = first.rows
                until = time.monotonic() + self.timeout
                stop = False
                while rows < self.size:
                    left = until - time.monotonic()
                    try:
                        item = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                        break
                    if rows + item.rows > self.size:
                        self._run([item])  # would overflow the batch: runs on its own afterwards
                        continue
                    batch.append(item)
                    rows += item.rows
                self._run(batch)
                if stop:
                    return
            except BaseException as e:  # nothing stops a worker; its requests get the error
                for p in batch:
                    p.fail(ServingError("INTERNAL", f"batching failed: {type(e).__name__}: {e}"))

    def _run(self, batch: list[_Pending]) -> None:
        now = time.monotonic()
        live = []
        for p in batch:
            if p.future.done():
                continue
            if p.expired(now):
                p.fail(ServingError("DEADLINE_EXCEEDED", "the deadline passed while the request waited"))
            else:
                live.append(p)
        for group in self._groups(live):
            self._run_group(group)

    def _groups(self, batch: list[_Pending]) -> list[list[_Pending]]:
        """Requests that can share a call: the same inputs and dtypes and, without padding, shapes."""
        groups: dict = {}
        for p in batch:
            key = tuple(sorted((k, v.dtype.str, v.ndim if self.options.pad_variable_length_inputs else v.shape[1:])
                               for k, v in p.inputs.items()))
            groups.setdefault(key, []).append(p)
        return list(groups.values())

    def _run_group(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        keys = list(batch[0].inputs)
        try:
            merged = {k: _pad_concat([p.inputs[k] for p in batch]) for k in keys}
            rows = sum(p.rows for p in batch)
            padded = self._padded_size(rows)
            if padded > rows and rows > 0:  # copies of the first row up to an allowed batch size
                merged = {k: np.concatenate([v, np.repeat(v[:1], padded - rows, axis=0)]) for k, v in merged.items()}
            outputs = self.run(merged)
        except Exception as e:
            if len(batch) == 1:
                batch[0].fail(e)
                return
            for p in batch:  # find who was wrong: each alone
                self._run_group([p])
            return
        start = 0
        for p in batch:
            p.answer({k: v[start:start + p.rows] for k, v in outputs.items()})
            start += p.rows

    def _padded_size(self, rows: int) -> int:
        for size in self.options.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows
