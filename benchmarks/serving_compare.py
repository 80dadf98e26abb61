"""Request latency of this tree's `tfrec serve` beside an earlier commit's, on the same export, in one run.

A change to the server's request path (checks, deadlines, the REST front) must not cost latency
unnoticed.  This script trains the test suite's small next-item model on synthetic data, exports
it, then starts the server of each side in turn (the baseline from a git worktree of ``--baseline``)
and measures, for each: gRPC ``Predict`` latency at concurrency 1 and 8 and REST ``:predict`` at
concurrency 1 (``tfrec.serving`` clients, the same requests, p50/p90 in ms, over several rounds
that alternate the sides; medians of the rounds are reported).  Writes
``benchmarks/results/serving_compare_synthetic.json``.

    python benchmarks/serving_compare.py --baseline 546d591 [--requests 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, median, write_result  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(source: str, base: str):
    grpc_port, rest_port = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=source)
    proc = subprocess.Popen([sys.executable, "-m", "tfrec", "serve", "--model_name", "seq", "--model_base_path", base,
                             "--port", str(grpc_port), "--rest_api_port", str(rest_port),
                             "--tensorflow_intra_op_parallelism", "1", "--tensorflow_inter_op_parallelism", "1"],
                            cwd=source, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from tfrec.serving import Client

    client = Client(f"127.0.0.1:{grpc_port}", timeout=30, retries=0)
    end = time.time() + 120
    while time.time() < end:
        try:
            if client.status("seq")[0]["state"] == "AVAILABLE":
                return proc, client, f"http://127.0.0.1:{rest_port}"
        except Exception:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"the server from {source} did not come up")


def measure(call, histories, requests: int, concurrency: int) -> dict:
    latencies, lock = [], threading.Lock()

    def worker(offset):
        mine = []
        for n in range(requests // concurrency):
            h = histories[(offset + n) % len(histories)]
            t = time.perf_counter()
            call(h)
            mine.append((time.perf_counter() - t) * 1000)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i * 7,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"p50_ms": float(np.percentile(latencies, 50)), "p90_ms": float(np.percentile(latencies, 90))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="the commit whose server is the baseline")
    ap.add_argument("--requests", type=int, default=400, help="requests per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="rounds alternating the two servers")
    args = ap.parse_args()
    sys.path.insert(0, REPO)
    from tests.conftest import run_cli_batch
    from tests.integration.test_training_cli import SMALL
    from tfrec.data.dataset import prepare
    from tfrec.data.synthetic import generate_synthetic
    from tfrec.serving import RestClient

    work = tempfile.mkdtemp(prefix="tfrec-serving-compare-")
    baseline = os.path.join(work, "baseline")
    subprocess.run(["git", "worktree", "add", "--detach", baseline, args.baseline], cwd=REPO, check=True,
                   capture_output=True)
    try:
        prepare(generate_synthetic(num_users=300, num_items=120, seed=7), os.path.join(work, "data"))
        for r in run_cli_batch(("finetune", "--task", "next-item", "--data", os.path.join(work, "data"),
                                "--from-scratch", "--out", os.path.join(work, "run"), "--epochs", "1", *SMALL),
                               ("export", "--model", os.path.join(work, "run"), "--serving-root",
                                os.path.join(work, "serve"), "--name", "seq", "--top-k", "10")):
            if r.returncode != 0:
                raise SystemExit(r.stderr[-2000:])
        base = os.path.join(work, "serve", "seq")
        rng = np.random.default_rng(0)
        histories = [[f"i{int(x)}" for x in rng.integers(1, 120, size=int(rng.integers(1, 12)))] for _ in range(200)]
        sides = {"baseline": baseline, "this tree": REPO}
        rounds: dict = {side: [] for side in sides}
        for _ in range(args.rounds):
            for side, source in sides.items():
                proc, client, rest_url = start(source, base)
                rest = RestClient(rest_url, timeout=30)
                try:
                    call = lambda h: client.recommend("seq", [h], k=10)  # noqa: E731
                    measure(call, histories, 100, 1)  # warm up
                    rounds[side].append({
                        "grpc_c1": measure(call, histories, args.requests, 1),
                        "grpc_c8": measure(call, histories, args.requests, 8),
                        "rest_c1": measure(lambda h: rest.recommend("seq", [h], k=10), histories, args.requests, 1)})
                finally:
                    client.close()
                    proc.terminate()
                    proc.wait(60)
        table = {side: {key: {stat: median([r[key][stat] for r in rs]) for stat in ("p50_ms", "p90_ms")}
                        for key in ("grpc_c1", "grpc_c8", "rest_c1")} for side, rs in rounds.items()}
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", baseline], cwd=REPO, capture_output=True)
    print(f"| measurement | baseline {args.baseline} p50 / p90 ms | this tree p50 / p90 ms | p50 ratio |")
    print("|---|---|---|---:|")
    for key, label in (("grpc_c1", "gRPC, concurrency 1"), ("grpc_c8", "gRPC, concurrency 8"),
                       ("rest_c1", "REST, concurrency 1")):
        b, t = table["baseline"][key], table["this tree"][key]
        print(f"| {label} | {b['p50_ms']:.2f} / {b['p90_ms']:.2f} | {t['p50_ms']:.2f} / {t['p90_ms']:.2f} | "
              f"{t['p50_ms'] / b['p50_ms']:.2f} |")
    path = write_result("serving_compare", "synthetic", {"baseline": args.baseline, "requests": args.requests,
                                                          "rounds": rounds, "medians": table})
    print(f"results: {os.path.relpath(path, REPO)}")


if __name__ == "__main__":
    main()
