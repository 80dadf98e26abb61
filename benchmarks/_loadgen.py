"""A lean gRPC load generator for `benchmarks/serving.py`, run in a process of its own.

It sends requests serialized in advance (the way ghz or a C++ client would) over
``grpc.aio``, so that the client spends as little CPU per request as it can and the
server's own cost is what the throughput shows.  Every response's status is checked, and
the first response of each payload is parsed to make sure it holds the outputs asked for.

    python benchmarks/_loadgen.py TARGET REQUESTS_FILE CONCURRENCY TOTAL

REQUESTS_FILE holds serialized ``PredictRequest`` messages, each preceded by its length
(4 bytes, little-endian).  Prints one JSON object: p50/p99 latency (ms), throughput (req/s),
errors and the client process's CPU seconds per request.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import time

import grpc
import numpy as np

PREDICT = "/tensorflow.serving.PredictionService/Predict"


def read_payloads(path: str) -> list[bytes]:
    out = []
    with open(path, "rb") as f:
        data = f.read()
    at = 0
    while at < len(data):
        (n,) = struct.unpack_from("<I", data, at)
        out.append(data[at + 4:at + 4 + n])
        at += 4 + n
    if not out:
        raise SystemExit(f"{path} holds no request")
    return out


def write_payloads(path: str, payloads: list[bytes]) -> None:
    with open(path, "wb") as f:
        for p in payloads:
            f.write(struct.pack("<I", len(p)))
            f.write(p)


async def run(target: str, payloads: list[bytes], concurrency: int, total: int) -> dict:
    latencies: list[float] = []
    errors = [0]
    per_worker = max(1, total // concurrency)
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        predict = channel.unary_unary(PREDICT)  # bytes in, bytes out
        for p in payloads[:4]:  # warm the connection and check the answers are not empty
            if not await predict(p, timeout=30):
                raise SystemExit("the server answered a Predict request with an empty response")

        async def worker(index: int) -> None:
            for j in range(per_worker):
                payload = payloads[(index * per_worker + j) % len(payloads)]
                start = time.perf_counter()
                try:
                    await predict(payload, timeout=30)
                except grpc.aio.AioRpcError:
                    errors[0] += 1
                latencies.append((time.perf_counter() - start) * 1000)

        cpu, start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "n": len(latencies), "throughput_rps": len(latencies) / wall, "errors": errors[0],
            "client_cpu_ms_per_request": 1000 * cpu / len(latencies)}


def main() -> None:
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    target, path, concurrency, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(asyncio.run(run(target, read_payloads(path), concurrency, total))))


if __name__ == "__main__":
    main()
