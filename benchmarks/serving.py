"""Serving latency and throughput of `tfrec serve`: gRPC and REST beside the in-process call.

Trains a next-item model on Beauty briefly (latency does not depend on its quality; the
catalogue of 12,101 items does), exports it, starts the embedded server, and measures
in one run, client and server on this machine:

- the in-process call of the loaded SavedModel's signature (the floor);
- gRPC ``Predict`` and REST ``:predict`` at concurrency 1, 8 and 32 (p50/p99 latency, throughput);
- throughput at concurrency 32 with server-side batching off and on, driven both by
  ``tfrec.serving.Client`` threads and by a lean load generator in a process of its own
  (``benchmarks/_loadgen.py``: requests serialized in advance, ``grpc.aio``), which leaves
  more of the two cores to the server;
- requests failed while a new version is swapped in under load;
- the server's CPU time per request at concurrency 32, batching off and on (its capacity on
  cores of its own, with the client elsewhere);
- the server's resident memory before and after loading the model.

    python benchmarks/serving.py [--workdir DIR] [--requests 300] [--threads INTRA,INTER]

``--threads`` sets the server's ``--tensorflow_intra_op_parallelism`` and
``--tensorflow_inter_op_parallelism`` (and the same for the in-process floor); the results
go to ``serving_beauty.json``, or ``serving_beauty-threads-INTRA-INTER.json`` when given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, checked, data_dir, machine, run_measured, tfrec, write_result  # noqa: E402

SHORT = ["--set", "pretrain.epochs=1", "--set", "finetune.epochs=1", "--set", "finetune.patience=0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(ms: list[float]) -> dict:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def load(call, histories, concurrency: int, total: int) -> dict:
    """`total` calls spread over `concurrency` threads; latency of each, throughput of all."""
    latencies, errors = [], [0]
    lock = threading.Lock()
    per_thread = max(1, total // concurrency)

    def worker(seed):
        rng = np.random.default_rng(seed)
        mine = []
        for _ in range(per_thread):
            h = histories[int(rng.integers(len(histories)))]
            start = time.perf_counter()
            try:
                call(h)
            except Exception:
                with lock:
                    errors[0] += 1
            mine.append((time.perf_counter() - start) * 1000)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return dict(percentiles(latencies), throughput_rps=len(latencies) / wall, errors=errors[0])


def start_server(base: str, batching: bool, work: str, threads: tuple[int, int] = (0, 0)):
    grpc_port, rest_port = free_port(), free_port()
    args = tfrec("serve", "--model_name", "beauty", "--model_base_path", base, "--port", str(grpc_port),
                 "--rest_api_port", str(rest_port), "--file_system_poll_wait_seconds", "0.5",
                 "--tensorflow_intra_op_parallelism", str(threads[0]),
                 "--tensorflow_inter_op_parallelism", str(threads[1]))
    if batching:
        args += ["--enable_batching", "--batching_parameters_file", os.path.join(REPO, "serving",
                                                                                 "batching_parameters.txt")]
    log = open(os.path.join(work, f"serve-{'batching' if batching else 'plain'}.log"), "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    from tfrec.serving import Client

    client = Client(f"127.0.0.1:{grpc_port}", timeout=30)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if any(s["state"] == "AVAILABLE" for s in client.status("beauty")):
                break
        except Exception:
            pass
        time.sleep(0.5)
    return proc, client, f"http://127.0.0.1:{rest_port}"


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", help="where the model and logs go (default: a temporary folder)")
    ap.add_argument("--requests", type=int, default=300, help="requests per measurement")
    ap.add_argument("--threads", default="0,0", help="server (and in-process) intra-op,inter-op threads; 0: auto")
    args = ap.parse_args()
    threads = tuple(int(t) for t in args.threads.split(","))
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads[0])  # the floor runs as the server does
    tf.config.threading.set_inter_op_parallelism_threads(threads[1])
    work = args.workdir or tempfile.mkdtemp(prefix="tfrec-serving-")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    log = lambda name: os.path.join(work, f"{name}.log")  # noqa: E731
    if not os.path.isfile(os.path.join(data, "dataset.json")):
        checked(run_measured(tfrec("data", "prepare", "amazon-s3rec", "--name", "Beauty", "--path",
                                   os.path.join(data_dir(), "amazon-beauty"), "--out", data), log("prepare")),
                "prepare", log("prepare"))
    config = os.path.join(REPO, "configs", "beauty.yaml")
    for stage, extra in (("pretrain", []), ("finetune", ["--task", "next-item", "--pretrained", f"{work}/pretrain"])):
        checked(run_measured(tfrec(stage, *extra, "--data", data, "--out", f"{work}/{stage}", "--config", config,
                                   *SHORT, "--verbose", "2"), log(stage)), stage, log(stage))
    base = os.path.join(work, "serving", "beauty")
    shutil.rmtree(base, ignore_errors=True)
    checked(run_measured(tfrec("export", "--model", f"{work}/finetune", "--serving-root", os.path.join(work, "serving"),
                               "--name", "beauty", "--top-k", "10"), log("export")), "export", log("export"))

    from tfrec.data import inputs, schema
    from tfrec.data.dataset import PreparedDataset

    ds = PreparedDataset(data)
    seqs = inputs.loo_sequences(ds, schema.TEST)
    histories = [[ds.item_vocab.token(int(i)) for i in h[-49:]] for h in seqs.histories[:2000]]

    loaded = tf.saved_model.load(os.path.join(base, "1"))
    fn = loaded.signatures["serving_default"]

    def in_process(h):
        return fn(history=tf.constant([h]))

    in_process(histories[0])
    results = {"in_process": load(in_process, histories, 1, args.requests)}

    from tensorflow_serving.apis import predict_pb2

    from _loadgen import write_payloads
    from tfrec.serving import tensors
    from tfrec.serving.client import _padded

    payloads = os.path.join(work, "requests.bin")
    serialized = []
    for h in histories:
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = "beauty", "serving_default"
        tensors.to_proto(_padded([h]), request.inputs["history"])
        serialized.append(request.SerializeToString())
    write_payloads(payloads, serialized)

    def lean(port: int, concurrency: int, server_pid: int) -> dict:
        """The lean load generator's figures, and the server's own CPU time per request meanwhile
        (user + system, all its threads): what the server needs when the client runs elsewhere."""
        import psutil

        def server_cpu() -> float:
            return sum(psutil.Process(server_pid).cpu_times()[:2])  # user + system seconds

        total = max(args.requests * 4, 1200) if concurrency > 1 else args.requests * 2
        before = server_cpu()
        r = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "_loadgen.py"), f"127.0.0.1:{port}",
                            payloads, str(concurrency), str(total)], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"the load generator failed: {r.stderr[-2000:]}")
        out = json.loads(r.stdout.strip().splitlines()[-1])
        out["server_cpu_ms_per_request"] = 1000 * (server_cpu() - before) / out["n"]
        return out

    proc, client, rest_url = start_server(base, batching=False, work=work, threads=threads)
    from tfrec.serving import RestClient

    rest = RestClient(rest_url, timeout=30)
    results["server_rss_mb_loaded"] = rss_mb(proc.pid)
    for c in (1, 8, 32):
        results[f"grpc_c{c}"] = load(lambda h: client.recommend("beauty", [h], k=10), histories, c, args.requests)
        results[f"rest_c{c}"] = load(lambda h: rest.recommend("beauty", [h], k=10), histories, c, args.requests)
    grpc_port = int(client.target.rsplit(":", 1)[1])
    results["lean_c1"], results["lean_c32"] = lean(grpc_port, 1, proc.pid), lean(grpc_port, 32, proc.pid)
    # a version swap under load: version 2 appears, version 1 goes, while 8 clients keep asking
    swap = {}

    def swap_versions():
        time.sleep(1.0)
        shutil.copytree(os.path.join(base, "1"), os.path.join(base, ".copy-2"))
        os.replace(os.path.join(base, ".copy-2"), os.path.join(base, "2"))
        deadline = time.time() + 120
        while time.time() < deadline and not any(s["version"] == 2 and s["state"] == "AVAILABLE"
                                                 for s in client.status("beauty")):
            time.sleep(0.2)
        shutil.rmtree(os.path.join(base, "1"))
        swap["done"] = time.time()

    swapper = threading.Thread(target=swap_versions)
    swapper.start()
    results["swap_under_load"] = load(lambda h: client.recommend("beauty", [h], k=10), histories, 8,
                                      max(args.requests * 4, 1200))
    swapper.join()
    results["swap_under_load"]["swapped"] = "done" in swap
    proc.terminate()
    proc.wait(timeout=60)
    shutil.copytree(os.path.join(base, "2"), os.path.join(base, "1"))
    shutil.rmtree(os.path.join(base, "2"))
    proc, client, _ = start_server(base, batching=True, work=work, threads=threads)
    results["grpc_c32_batching"] = load(lambda h: client.recommend("beauty", [h], k=10), histories, 32, args.requests)
    results["grpc_c1_batching"] = load(lambda h: client.recommend("beauty", [h], k=10), histories, 1, args.requests)
    grpc_port = int(client.target.rsplit(":", 1)[1])
    results["lean_c1_batching"] = lean(grpc_port, 1, proc.pid)
    results["lean_c32_batching"] = lean(grpc_port, 32, proc.pid)
    proc.terminate()
    proc.wait(timeout=60)
    code = "import psutil, os, tensorflow, tfrec.serving.server; print(psutil.Process(os.getpid()).memory_info().rss / 2**20)"
    base_rss = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
                     .stdout.strip().splitlines()[-1])
    results["server_rss_mb_without_model"] = base_rss
    results["rss_mb_per_model"] = results["server_rss_mb_loaded"] - base_rss
    results["grpc_overhead_p50_ms"] = results["grpc_c1"]["p50_ms"] - results["in_process"]["p50_ms"]
    results["batching_throughput_ratio_c32"] = (results["grpc_c32_batching"]["throughput_rps"]
                                                / results["grpc_c32"]["throughput_rps"])
    results["batching_throughput_ratio_c32_lean"] = (results["lean_c32_batching"]["throughput_rps"]
                                                     / results["lean_c32"]["throughput_rps"])
    # Server CPU per request at concurrency 32: throughput on cores of the server's own is at most
    # cores / CPU per request, so the ratio of the two is batching's gain when the client runs elsewhere.
    results["batching_server_cpu_ratio_c32"] = (results["lean_c32"]["server_cpu_ms_per_request"]
                                                / results["lean_c32_batching"]["server_cpu_ms_per_request"])
    name = "beauty" if threads == (0, 0) else f"beauty-threads-{threads[0]}-{threads[1]}"
    path = write_result("serving", name, {"results": results, "items": len(ds.item_vocab) - 3, "workdir": work,
                                          "threads": {"intra_op": threads[0], "inter_op": threads[1]}})

    print(f"## Serving a Beauty next-item model ({len(ds.item_vocab) - 3:,} items), top 10, one history per "
          f"request ({machine()}; client and server on this machine; server threads intra-op {threads[0]}, "
          f"inter-op {threads[1]}, 0 = TensorFlow's choice)\n")
    print("| call | concurrency | p50 ms | p99 ms | throughput req/s | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = [("in-process SavedModel", 1, "in_process")] + [(f"{api}", c, f"{api.split()[0].lower()}_c{c}")
                                                           for api in ("gRPC Predict", "REST :predict")
                                                           for c in (1, 8, 32)]
    rows += [("gRPC, batching on", 1, "grpc_c1_batching"), ("gRPC, batching on", 32, "grpc_c32_batching"),
             ("gRPC during a version swap", 8, "swap_under_load"),
             ("gRPC, lean load generator", 1, "lean_c1"), ("gRPC, lean load generator", 32, "lean_c32"),
             ("gRPC, lean load generator, batching on", 1, "lean_c1_batching"),
             ("gRPC, lean load generator, batching on", 32, "lean_c32_batching")]
    for label, c, key in rows:
        r = results[key]
        print(f"| {label} | {c} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['throughput_rps']:.0f} | {r['errors']} |")
    print("\n| lean load generator, concurrency 32 | server CPU ms / request | client CPU ms / request | "
          f"server capacity on {os.cpu_count()} cores of its own, req/s |")
    print("|---|---:|---:|---:|")
    for label, key in (("batching off", "lean_c32"), ("batching on", "lean_c32_batching")):
        r = results[key]
        print(f"| {label} | {r['server_cpu_ms_per_request']:.3f} | {r['client_cpu_ms_per_request']:.3f} | "
              f"{os.cpu_count() * 1000 / r['server_cpu_ms_per_request']:.0f} |")
    print(f"\ngRPC overhead over the in-process call at p50: {results['grpc_overhead_p50_ms']:.2f} ms; "
          f"batching throughput ratio at concurrency 32: {results['batching_throughput_ratio_c32']:.2f} "
          f"(tfrec Client threads), {results['batching_throughput_ratio_c32_lean']:.2f} (lean load generator), "
          f"{results['batching_server_cpu_ratio_c32']:.2f} in server CPU per request; "
          f"server RSS {results['server_rss_mb_loaded']:.0f} MB with the model, "
          f"{base_rss:.0f} MB for the process without it ({results['rss_mb_per_model']:.0f} MB per model)")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
