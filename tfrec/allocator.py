"""glibc malloc padding suited to TensorFlow's allocation pattern.

A training or serving step frees and allocates the same large buffers again and again (batches,
activations, gradients, top-k candidates).  By default glibc hands the freed top of each heap back
to the kernel and asks for it again on the next step, so every step pays page faults that zero the
same memory once more.  On a 2-core machine that was a quarter of a training run's CPU time, spent
in the kernel: `tfrec pretrain` on MovieLens-100K took 8.2 s of system time in a 27 s run, and 1.9 s
with 64 MiB of top padding (`docs/BENCHMARKS.md`, "Allocator padding").

:func:`keep_freed_memory` sets ``M_TOP_PAD`` through ``mallopt``: each heap keeps up to that much
freed memory at its top instead of returning it.  The CLI calls it first thing; it changes nothing
where the process does not run on glibc, or where ``MALLOC_TOP_PAD_`` is already set in the
environment (the user's own choice wins; ``MALLOC_TOP_PAD_=0`` turns the padding off).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

TOP_PAD_BYTES = 64 << 20
ENV_VAR = "MALLOC_TOP_PAD_"
_M_TOP_PAD = -2  # mallopt parameter number, from glibc's malloc.h


def keep_freed_memory(pad_bytes: int = TOP_PAD_BYTES) -> bool:
    """Lets each malloc heap keep `pad_bytes` of freed memory; True when the setting took effect."""
    if ENV_VAR in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt(_M_TOP_PAD, int(pad_bytes)) == 1


def environment(pad_bytes: int = TOP_PAD_BYTES) -> dict:
    """The environment variable giving a child process (a notebook kernel, a worker) the same padding."""
    return {ENV_VAR: str(int(pad_bytes))}
