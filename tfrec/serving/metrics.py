"""The embedded server's Prometheus metrics, named, labelled and bucketed as TensorFlow Serving's.

- ``:tensorflow:serving:request_count{model_name, status}``: every Predict, Classify and Regress
  request (gRPC and REST), by its status code name;
- ``:tensorflow:serving:request_latency{model_name, API, entrypoint}``: the wall time of each
  successful one in microseconds, with TF Serving's buckets (10 us growing by 1.8, 33 of them);
  ``API`` is ``Predict``/``Classify``/``Regress`` over gRPC and ``predict``/``classify``/
  ``regress`` over REST, ``entrypoint`` is ``GRPC`` or ``REST``.

Only the names of configured models are counted (anything else a request names would let a
client grow the page, and the memory behind it, without bound), and label values are escaped as
the Prometheus text format requires, so no name can break a line or forge a metric.
"""

from __future__ import annotations

import bisect
import threading

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
# monitoring::Buckets::Exponential(10, 1.8, 33): 10 us to about 20 minutes, then +Inf.
LATENCY_BUCKETS_US = tuple(10 * 1.8 ** i for i in range(33))


def escape(value: str) -> str:
    """A label value in the Prometheus text format: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _bound(value: float) -> str:
    return f"{value:.6g}"  # as TF Serving prints a double: six significant digits


class Metrics:
    """Request counts by status and a latency histogram, for the models `known(name)` accepts."""

    def __init__(self, known=lambda name: True):
        self.known = known
        self.lock = threading.Lock()
        self.counts: dict[tuple[str, str], int] = {}
        self.latency: dict[tuple[str, str, str], list] = {}  # key -> [per-bucket counts..., sum]

    def observe(self, model: str, api: str, entrypoint: str, seconds: float, status: str = "OK") -> None:
        if not model or not self.known(model):
            return
        with self.lock:
            key = (model, status)
            self.counts[key] = self.counts.get(key, 0) + 1
            if status != "OK":
                return
            micros = seconds * 1e6
            hist = self.latency.setdefault((model, api, entrypoint), [0] * (len(LATENCY_BUCKETS_US) + 1) + [0.0])
            hist[bisect.bisect_left(LATENCY_BUCKETS_US, micros)] += 1
            hist[-1] += micros

    def render(self) -> str:
        lines = [f"# TYPE {REQUEST_COUNT} counter"]
        with self.lock:
            for (model, status), n in sorted(self.counts.items()):
                lines.append(f'{REQUEST_COUNT}{{model_name="{escape(model)}",status="{escape(status)}"}} {n}')
            lines.append(f"# TYPE {REQUEST_LATENCY} histogram")
            for (model, api, entry), hist in sorted(self.latency.items()):
                labels = f'model_name="{escape(model)}",API="{escape(api)}",entrypoint="{escape(entry)}"'
                running = 0
                for i, count in enumerate(hist[:-1]):
                    running += count
                    le = _bound(LATENCY_BUCKETS_US[i]) if i < len(LATENCY_BUCKETS_US) else "+Inf"
                    lines.append(f'{REQUEST_LATENCY}_bucket{{{labels},le="{le}"}} {running}')
                lines.append(f"{REQUEST_LATENCY}_sum{{{labels}}} {hist[-1]:g}")
                lines.append(f"{REQUEST_LATENCY}_count{{{labels}}} {running}")
        return "\n".join(lines) + "\n"
