"""`tfrec data prepare` on the local datasets: counts against their READMEs, wall time and peak memory.

Each run is a fresh process (so peak RSS is that run's own); the reference row reads the
same raw files with pandas alone, the floor any preparation pays.

    python benchmarks/data_prepare.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import data_dir, machine, median, write_result  # noqa: E402

CASES = [
    # source, folder, README counts (users, items, interactions), raw file read by the reference
    ("movielens-100k", "ml-100k", (943, 1682, 100_000), "u.data", "\t"),
    ("amazon-s3rec", "amazon-beauty", (22_363, 12_101, 198_502), None, None),
    ("movielens-latest-small", "ml-latest-small", (610, 9_724, 100_836), "ratings.csv", ","),
]

PREPARE = """
import json, resource, sys, time
t = time.perf_counter()
import tfrec
from tfrec.data import dataset, loaders
d = dataset.prepare(loaders.load(sys.argv[1], sys.argv[2]), sys.argv[3])
s = d.stats
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "counts": [s["num_users"], s["num_items"], s["num_interactions"]]}))
"""

REFERENCE = """
import json, resource, sys, time
t = time.perf_counter()
import pandas as pd
path, sep = sys.argv[1], sys.argv[2]
if sep == "lines":
    rows = [ln.split() for ln in open(path)]
    df = pd.DataFrame({"u": [r[0] for r in rows for _ in r[1:]], "i": [x for r in rows for x in r[1:]]})
else:
    df = pd.read_csv(path, sep=sep, header=None if sep == "\\t" else "infer")
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(code: str, *args: str) -> dict:
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    print(f"machine: {machine()}; {args.repeats} runs each, medians\n")
    for source, folder, expected, raw_file, sep in CASES:
        path = os.path.join(data_dir(), folder)
        if not os.path.isdir(path):
            print(f"skipping {folder}: {path} is absent")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            runs = [run(PREPARE, source, path, os.path.join(tmp, f"out{i}")) for i in range(args.repeats)]
        ref_path = os.path.join(path, raw_file) if raw_file else os.path.join(path, "Beauty.txt")
        refs = [run(REFERENCE, ref_path, sep or "lines") for _ in range(args.repeats)]
        result = {
            "counts": runs[0]["counts"], "readme_counts": list(expected), "counts_match": runs[0]["counts"] == list(expected),
            "prepare_seconds": median([r["seconds"] for r in runs]),
            "prepare_peak_rss_mb": median([r["peak_rss_mb"] for r in runs]),
            "pandas_read_seconds": median([r["seconds"] for r in refs]),
            "pandas_read_peak_rss_mb": median([r["peak_rss_mb"] for r in refs]),
            "repeats": args.repeats,
        }
        write_result("data_prepare", folder, result)
        rows.append((folder, result))
    print("| dataset | users / items / interactions | README | match | prepare s | prepare peak MB | pandas read s | pandas read peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for folder, r in rows:
        c, e = r["counts"], r["readme_counts"]
        print(f"| {folder} | {c[0]:,} / {c[1]:,} / {c[2]:,} | {e[0]:,} / {e[1]:,} / {e[2]:,} | {'yes' if r['counts_match'] else 'NO'} "
              f"| {r['prepare_seconds']:.2f} | {r['prepare_peak_rss_mb']:.0f} | {r['pandas_read_seconds']:.2f} | {r['pandas_read_peak_rss_mb']:.0f} |")
    return 0 if rows and all(r["counts_match"] for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
