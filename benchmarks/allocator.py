"""The CLI's malloc padding (tfrec/allocator.py) against glibc's default, on one training command.

    python benchmarks/allocator.py [--repeats 3] [--epochs 3]

Runs `tfrec pretrain` on MovieLens-100K (a one-layer, 32-wide encoder, the size of the test suite's
runs) with the padding (the CLI's default) and with `MALLOC_TOP_PAD_=0` (glibc's default), the two
alternating, and prints median wall, user and system seconds, peak memory and the ratios.  Writes
benchmarks/results/allocator_ml-100k.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, data_dir, machine, median, tfrec, write_result  # noqa: E402

SETTINGS = ["--set", "model.hidden_dim=32", "--set", "model.intermediate_dim=64", "--set", "model.num_layers=1",
            "--set", "model.max_len=30", "--set", "pretrain.validate_every=100", "--learning-rate", "0.005"]


def timed(args: list[str], env: dict, log: str) -> dict:
    """Wall, user and system seconds and peak RSS of one child process (its own rusage, from wait4)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed (exit {proc.returncode}); the end of {log}:\n{open(log).read()[-3000:]}")
    return {"wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    base_env = {k: v for k, v in os.environ.items() if k != "MALLOC_TOP_PAD_"}
    variants = {"padding (default)": base_env, "glibc default (MALLOC_TOP_PAD_=0)": dict(base_env, MALLOC_TOP_PAD_="0")}
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        subprocess.run(tfrec("data", "prepare", "movielens-100k", "--path", os.path.join(data_dir(), "ml-100k"),
                             "--out", data), cwd=REPO, check=True, capture_output=True)
        runs = {name: [] for name in variants}
        for i in range(args.repeats):
            for name, env in variants.items():
                cmd = tfrec("pretrain", "--data", data, "--out", os.path.join(tmp, "run"), "--overwrite",
                            "--epochs", str(args.epochs), *SETTINGS)
                runs[name].append(timed(cmd, env, os.path.join(tmp, "log.txt")))
                print(f"run {i + 1}, {name}: {runs[name][-1]['wall']:.1f} s", flush=True)
    rows = {name: {k: median([r[k] for r in rs]) for k in ("wall", "user", "sys")} for name, rs in runs.items()}
    for name, rs in runs.items():
        rows[name]["peak_rss_mb"] = median([r["peak_rss_mb"] for r in rs])
    padded, plain = rows["padding (default)"], rows["glibc default (MALLOC_TOP_PAD_=0)"]
    print(f"\n`tfrec pretrain`, MovieLens-100K, {args.epochs} epochs, median of {args.repeats} ({machine()})\n")
    print("| malloc | wall s | user s | system s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['wall']:.1f} | {row['user']:.1f} | {row['sys']:.1f} | {row['peak_rss_mb']:.0f} |")
    print(f"| ratio default / padding | {plain['wall'] / padded['wall']:.2f} | {plain['user'] / padded['user']:.2f} "
          f"| {plain['sys'] / padded['sys']:.2f} | {plain['peak_rss_mb'] / padded['peak_rss_mb']:.2f} |")
    path = write_result("allocator", "ml-100k", {"epochs": args.epochs, "repeats": args.repeats, "medians": rows,
                                                  "runs": runs})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
