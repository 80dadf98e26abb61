"""The embedded server under faults and hostile input: requests answered, failures, memory and threads.

Runs the fault-injection scenarios of ``tests/integration/test_serving_faults.py`` (each against
its own ``tfrec serve`` process over copies of a real export) and prints, per scenario, what it
measured beside its own baseline from the same run: the server's threads and memory before the
fault and during or after it, requests answered and failed under load.  Writes
``benchmarks/results/serving_faults_synthetic.json``.

    python benchmarks/serving_faults.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, machine, write_result  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        figures = os.path.join(tmp, "figures.json")
        start = time.time()
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/integration/test_serving_faults.py"], cwd=REPO,
                           env=dict(os.environ, TFREC_FAULT_FIGURES=figures), capture_output=True, text=True)
        seconds = time.time() - start
        summary = [ln for ln in r.stdout.splitlines() if " passed" in ln or " failed" in ln]
        if r.returncode != 0 or not os.path.exists(figures):
            sys.exit(f"the fault scenarios failed (exit {r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}")
        with open(figures) as f:
            rows = json.load(f)
    print(f"machine: {machine()}; {summary[-1] if summary else ''} in {seconds:.0f} s\n")
    for row in rows:
        print(f"- {row['scenario']}")
        print("  " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "scenario"))
    path = write_result("serving_faults", "synthetic", {"scenarios": rows, "pytest": summary[-1] if summary else "",
                                                         "seconds": round(seconds)})
    print(f"\nresults: {os.path.relpath(path, REPO)}")


if __name__ == "__main__":
    main()
