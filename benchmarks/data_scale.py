"""How the cost of preparing and reading interactions grows, on the pandas engine and on Spark in local mode.

For each size (default 1M, 10M and 30M synthetic rows), in fresh processes (wall time and peak resident
memory of each process tree: for Spark, the driver JVM, its executor threads and the Python workers):

1. ``tfrec data prepare parquet --format tfrecord --shards 8 --engine E`` on a Parquet file of synthetic
   interactions (users with 20 interactions on average, a Zipf-like item popularity over ``rows / 50``
   items, increasing timestamps): cleaning, vocabularies, the three splits, the tables and the sharded
   TFRecord sequences; Spark runs ``local[*]`` with ``spark.driver.memory`` set to the memory budget;
2. whether the engines wrote the same dataset (``dataset.json``, ``stats.json``, the vocabularies and
   the TFRecord shards, which hold every user's leave-one-out sequence, compared byte for byte);
3. reading the shards back, interleaved, into the training sequences (what ``tfrec pretrain`` does with
   such a dataset).

Sizes are compared by their per-row cost against the smallest; a run whose peak memory passes
``--budget-gb`` would not fit a machine (or container) of that size.

    python benchmarks/data_scale.py [--sizes 1000000,10000000,30000000] [--engines pandas,spark]
                                    [--shards 8] [--budget-gb 4] [--workdir DIR] [--name synthetic]
"""

from __future__ import annotations

import argparse
import filecmp
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


def same_dataset(a: str, b: str) -> bool:
    """The files of two prepared datasets that are written byte for byte alike (all but the Parquet tables)."""
    names = ["dataset.json", "stats.json"] + [os.path.join("vocab", f) for f in sorted(os.listdir(os.path.join(a, "vocab")))]
    names += [os.path.join("sequences", f) for f in sorted(os.listdir(os.path.join(a, "sequences")))]
    return all(os.path.exists(os.path.join(b, n)) and filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False)
               for n in names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000,30000000")
    ap.add_argument("--engines", default="pandas,spark")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--budget-gb", type=float, default=4.0, help="memory budget: Spark's driver memory, and the "
                    "line a run's peak must stay under (default 4)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds a preparation may take (default 3600)")
    ap.add_argument("--name", default="synthetic", help="results file: benchmarks/results/data_scale_NAME.json")
    ap.add_argument("--workdir", help="where files go (default: a temporary folder, removed at the end)")
    args = ap.parse_args()
    engines = args.engines.split(",")
    work = args.workdir or tempfile.mkdtemp(prefix="tfrec-scale-")
    os.makedirs(work, exist_ok=True)
    budget_mb = args.budget_gb * 1024
    results = {}
    for rows in (int(s) for s in args.sizes.split(",")):
        source = os.path.join(work, f"interactions-{rows}.parquet")
        synthetic(rows, source)
        outs = {}
        for engine in engines:
            out = outs[engine] = os.path.join(work, f"prepared-{rows}-{engine}")
            shutil.rmtree(out, ignore_errors=True)
            log = os.path.join(work, f"prepare-{rows}-{engine}.log")
            command = tfrec("data", "prepare", "parquet", "--path", source, "--columns",
                            "user_id=uid,item_id=sku,timestamp=ts", "--format", "tfrecord",
                            "--shards", str(args.shards), "--out", out, "--engine", engine)
            if engine == "spark":
                command += ["--spark-master", "local[*]", "--spark-conf", f"spark.driver.memory={args.budget_gb:g}g"]
            prep = run_measured(command, log, timeout=args.timeout)
            size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(out) for f in fs)
            row = results.setdefault(engine, {})[rows] = {
                "prepare_seconds": prep["seconds"], "prepare_peak_rss_mb": prep["peak_rss_mb"],
                "finished": prep["returncode"] == 0, "within_budget": prep["peak_rss_mb"] <= budget_mb,
                "folder_mb": size / 2**20}
            if not row["finished"]:
                row["error"] = open(log).read().strip().splitlines()[-1][-300:]
                print(f"{engine} {rows:,}: failed: {row['error']}", flush=True)
                continue
            print(f"{engine} {rows:,}: {prep['seconds']:.1f} s, peak {prep['peak_rss_mb']:.0f} MB", flush=True)
        finished = [e for e in engines if results[e][rows]["finished"]]
        if len(finished) > 1:
            for engine in finished[1:]:
                results[engine][rows]["same_as_" + finished[0]] = same_dataset(outs[finished[0]], outs[engine])
        if finished:
            log = os.path.join(work, f"read-{rows}.log")
            read = checked(run_measured([sys.executable, "-c", READ, outs[finished[-1]]], log), "read", log)
            line = open(log).read().strip().splitlines()[-1].split()  # users N items N seconds S
            results.setdefault("read", {})[rows] = {
                "read_seconds": read["seconds"], "read_peak_rss_mb": read["peak_rss_mb"], "users": int(line[1]),
                "sequence_items": int(line[3]), "read_loop_seconds": float(line[5]), "engine": finished[-1]}
        for out in outs.values():
            shutil.rmtree(out, ignore_errors=True)
        os.remove(source)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    payload = {"results": {e: {str(k): v for k, v in r.items()} for e, r in results.items()}, "shards": args.shards,
               "budget_gb": args.budget_gb, "command": sys.argv[1:]}
    path = write_result("data_scale", args.name, payload)
    sizes = sorted({n for e in engines for n in results[e]})
    print(f"## Preparing synthetic interactions, pandas against Spark local[*] ({machine()}; {args.shards} TFRecord "
          f"shards; budget {args.budget_gb:g} GB)\n")
    print("| interactions | " + " | ".join(f"{e} s | {e} peak MB | {e} s per row vs 1st" for e in engines)
          + " | same dataset | read s (process / reading) | read peak MB |")
    print("|---:|" + "---:|---:|---:|" * len(engines) + "---|---:|---:|")
    for rows in sizes:
        cells = []
        for e in engines:
            r, f = results[e].get(rows, {}), results[e].get(sizes[0], {})
            if not r.get("finished"):
                cells += ["failed", f"{r.get('prepare_peak_rss_mb', 0):.0f}", "-"]
                continue
            per = (r["prepare_seconds"] / rows) / (f["prepare_seconds"] / sizes[0]) if f.get("finished") else float("nan")
            cells += [f"{r['prepare_seconds']:.1f}", f"{r['prepare_peak_rss_mb']:.0f}" + ("" if r["within_budget"] else " (over)"),
                      f"{per:.2f}"]
        same = [v for e in engines for k, v in results[e].get(rows, {}).items() if k.startswith("same_as_")]
        read = results.get("read", {}).get(rows)
        print(f"| {rows:,} | " + " | ".join(cells) + f" | {'yes' if same and all(same) else ('NO' if same else '-')} | "
              + (f"{read['read_seconds']:.1f} / {read['read_loop_seconds']:.1f} | {read['read_peak_rss_mb']:.0f} |"
                 if read else "- | - |"))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
