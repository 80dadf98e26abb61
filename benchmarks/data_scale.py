"""How the cost of preparing and reading interactions grows: 1M, 3M and 10M synthetic rows.

For each size, in fresh processes (wall time and peak resident memory of each):

1. ``tfrec data prepare parquet --format tfrecord --shards 8`` on a Parquet file of synthetic
   interactions (users with 20 interactions on average, a Zipf-like item popularity over
   ``rows / 50`` items, increasing timestamps): cleaning, vocabularies, the three splits, the
   tables and the sharded TFRecord sequences;
2. reading the shards back, interleaved, into the training sequences (what ``tfrec pretrain``
   does with such a dataset).

Sizes are compared by their ratio to the 1M run (linear growth: 3x and 10x).

    python benchmarks/data_scale.py [--sizes 1000000,3000000,10000000] [--shards 8] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import checked, machine, run_measured, tfrec, write_result  # noqa: E402

READ = ("import sys, time, tfrec; from tfrec.data.dataset import PreparedDataset; from tfrec.data import inputs; "
        "t = time.perf_counter(); users, seqs, valid = inputs.read_sequence_shards(PreparedDataset(sys.argv[1])); "
        "print('users', len(users), 'items', sum(len(s) for s in seqs), 'seconds', time.perf_counter() - t)")


def synthetic(rows: int, path: str, seed: int = 0) -> None:
    """`rows` interactions: ~rows/20 users, rows/50 items with Zipf-like popularity."""
    rng = np.random.default_rng(seed)
    users = max(1, rows // 20)
    items = max(10, rows // 50)
    user = np.sort(rng.integers(0, users, rows))
    weights = 1.0 / np.arange(1, items + 1) ** 0.9
    item = rng.choice(items, size=rows, p=weights / weights.sum())
    time_ = 1_600_000_000 + np.arange(rows, dtype=np.int64)  # increasing within each user (rows sorted by user)
    pd.DataFrame({"uid": user.astype(str), "sku": item.astype(str), "ts": time_}).to_parquet(path, index=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,3000000,10000000")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--workdir", help="where files go (default: a temporary folder, removed at the end)")
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="tfrec-scale-")
    os.makedirs(work, exist_ok=True)
    results = {}
    for rows in (int(s) for s in args.sizes.split(",")):
        source = os.path.join(work, f"interactions-{rows}.parquet")
        synthetic(rows, source)
        out = os.path.join(work, f"prepared-{rows}")
        shutil.rmtree(out, ignore_errors=True)
        log = os.path.join(work, f"prepare-{rows}.log")
        prep = checked(run_measured(tfrec("data", "prepare", "parquet", "--path", source, "--columns",
                                          "user_id=uid,item_id=sku,timestamp=ts", "--format", "tfrecord",
                                          "--shards", str(args.shards), "--out", out), log), "prepare", log)
        log = os.path.join(work, f"read-{rows}.log")
        read = checked(run_measured([sys.executable, "-c", READ, out], log), "read", log)
        size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(out) for f in fs)
        results[rows] = {"prepare_seconds": prep["seconds"], "prepare_peak_rss_mb": prep["peak_rss_mb"],
                         "read_seconds": read["seconds"], "read_peak_rss_mb": read["peak_rss_mb"],
                         "folder_mb": size / 2**20}
        line = open(log).read().strip().splitlines()[-1].split()  # users N items N seconds S
        results[rows].update(users=int(line[1]), sequence_items=int(line[3]), read_loop_seconds=float(line[5]))
        shutil.rmtree(out, ignore_errors=True)
        os.remove(source)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    path = write_result("data_scale", "synthetic", {"results": {str(k): v for k, v in results.items()},
                                                    "shards": args.shards})
    first = min(results)
    print(f"## Preparing and reading synthetic interactions ({machine()}; {args.shards} TFRecord shards)\n")
    print("| interactions | prepare s | prepare peak RSS MB | read s (process / reading) | read peak RSS MB | folder MB "
          "| prepare s per row vs 1st | reading s per row vs 1st |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rows, r in results.items():
        f = results[first]
        per = (r["prepare_seconds"] / rows) / (f["prepare_seconds"] / first)
        per_read = (r["read_loop_seconds"] / rows) / (f["read_loop_seconds"] / first)
        print(f"| {rows:,} | {r['prepare_seconds']:.1f} | {r['prepare_peak_rss_mb']:.0f} | "
              f"{r['read_seconds']:.1f} / {r['read_loop_seconds']:.1f} | "
              f"{r['read_peak_rss_mb']:.0f} | {r['folder_mb']:.0f} | {per:.2f} | {per_read:.2f} |")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
