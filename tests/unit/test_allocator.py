"""tfrec.allocator: freed heap memory is kept for the next allocation instead of faulted in again."""

import ctypes.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

# Allocates 20 MiB in 100 KiB blocks (below glibc's mmap threshold, so from the heap), frees them
# all, and again, 12 times; counts the page faults of rounds 2 to 12.
ROUNDS = """
import ctypes, ctypes.util, json, resource
from tfrec.allocator import keep_freed_memory
took = keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
def round_():
    blocks = [libc.malloc(100 << 10) for _ in range(200)]
    for b in blocks:
        libc.memset(b, 1, 100 << 10)  # touch every page
    for b in reversed(blocks):
        libc.free(b)
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(11):
    round_()
print(json.dumps({"took": took, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def faults(**env_changes) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TOP_PAD_"}
    env.update(env_changes)
    r = subprocess.run([sys.executable, "-c", ROUNDS], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or not ctypes.util.find_library("c"), reason="glibc only")
def test_freed_memory_is_reused_without_page_faults():
    tuned = faults()
    default = faults(MALLOC_TOP_PAD_="0")  # the user's own setting wins: here, glibc's default behaviour
    assert tuned["took"] is True and default["took"] is False
    # Without padding each round gives its 20 MiB back to the kernel and faults it in again (about 5,000
    # pages of 4 KiB a round, 55,000 over 11 rounds); with it, the pages stay.
    assert default["faults"] > 20_000, default
    assert tuned["faults"] < default["faults"] / 10, (tuned, default)
