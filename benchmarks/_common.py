"""Helpers shared by the benchmark scripts: data location, results files, machine description."""

from __future__ import annotations

import json
import os
import platform
import statistics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")


def data_dir() -> str:
    return os.environ.get("TFREC_DATA_DIR") or os.path.join(os.path.dirname(REPO), "shared", "data")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def median(xs):
    return statistics.median(xs)


def write_result(benchmark: str, dataset: str, payload: dict) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{benchmark}_{dataset}.json")
    with open(path, "w") as f:
        json.dump(dict(payload, benchmark=benchmark, dataset=dataset, machine=machine()), f, indent=2, sort_keys=True)
        f.write("\n")
    return path
