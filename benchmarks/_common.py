"""Helpers shared by the benchmark scripts: data location, results files, machine description."""

from __future__ import annotations

import json
import os
import platform
import statistics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")


def tfrec(*args: str) -> list[str]:
    """The command line of `python -m tfrec ARGS` in this interpreter."""
    import sys

    return [sys.executable, "-m", "tfrec", *args]


def checked(result: dict, what: str, log: str) -> dict:
    """`result` of :func:`run_measured`, or exit with the end of its log when it failed."""
    import sys

    if result["returncode"] != 0:
        tail = open(log).read()[-3000:]
        sys.exit(f"{what} failed (exit {result['returncode']}); the end of {log}:\n{tail}")
    return result


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


def run_measured(args: list[str], log_path: str, env: dict | None = None, timeout: float | None = None) -> dict:
    """Runs a command to completion, polling its process tree's memory.

    Returns wall seconds, peak RSS (MB, the largest sum over the tree seen at 0.2 s
    intervals), the start time and the exit status; stdout and stderr go to `log_path`.
    Past `timeout` seconds the process tree is killed and the status is -9.
    """
    import subprocess
    import time

    import psutil

    start = time.time()
    peak = 0
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ, **(env or {})))
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [ps, *ps.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
                if timeout is not None and time.time() - start > timeout:
                    for p in reversed(tree):
                        p.kill()
                    log.write(f"\nkilled after {timeout:.0f} s\n")
            except psutil.Error:
                pass
            time.sleep(0.2)
    return {"seconds": time.time() - start, "peak_rss_mb": peak / 2**20, "started": start, "returncode": proc.returncode}


MEASURED = "measured.json"


def measured_run(name: str, command: list[str], work: str, reuse: bool) -> dict:
    """Runs `command` (its run folder is work/name) unless --reuse finds it finished with the same command."""
    folder, log = os.path.join(work, name), os.path.join(work, f"{name}.log")
    record = os.path.join(folder, MEASURED)
    if reuse and os.path.exists(record):
        kept = json.load(open(record))
        if kept.get("command") == command[1:]:
            print(f"{name}: reusing the finished run in {folder}", flush=True)
            return dict(kept, reused=True)
    print(f"{name}: {' '.join(command[1:])}", flush=True)
    result = checked(run_measured(command, log), name, log)
    result = {"seconds": result["seconds"], "peak_rss_mb": result["peak_rss_mb"], "command": command[1:]}
    os.makedirs(folder, exist_ok=True)
    with open(record, "w") as f:
        json.dump(result, f)
    return result


def prepared_data(work: str, prepare_args: list[str], folder: str, reuse: bool, name: str = "data") -> str:
    """WORK/NAME: the dataset `folder` of the data directory prepared with `prepare_args` (`tfrec data
    prepare`), kept from an earlier call when `reuse` finds it complete."""
    data = os.path.join(work, name)
    if not (reuse and os.path.exists(os.path.join(data, "dataset.json"))):
        log = os.path.join(work, "prepare.log" if name == "data" else f"prepare-{name}.log")
        checked(run_measured(tfrec("data", "prepare", *prepare_args, "--path", os.path.join(data_dir(), folder),
                                   "--out", data), log), "prepare", log)
    return data


def read_test(work: str, name: str, evaluate_args: list[str], keep: bool) -> dict:
    """The report of ``tfrec evaluate EVALUATE_ARGS --split test --out WORK/test_NAME``: the test split read
    once, or, with `keep` (the model is the one an earlier call read), the report that call left."""
    out = os.path.join(work, f"test_{name}")
    if not (keep and os.path.exists(f"{out}.json")):
        log = os.path.join(work, f"test_{name}.log")
        checked(run_measured(tfrec("evaluate", *evaluate_args, "--split", "test", "--out", out), log),
                f"test {name}", log)
    with open(f"{out}.json") as f:
        return json.load(f)
