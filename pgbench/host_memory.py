"""Host memory between steps: keep what XLA frees for the next step.

XLA's CPU runtime allocates a step's temporaries and outputs afresh on every call
(``malloc``). glibc serves large blocks with ``mmap`` and gives them back on ``free``, and
its per-thread arenas give back their free tops, so every step faults all of that memory
in again page by page (about 1 GB, 250k+ page faults per train-mid training step on CPU:
a tenth or more of the step in kernel time). :func:`keep_freed_memory` makes glibc keep
freed memory for reuse instead: the process's resident size stays at its peak.
"""

from __future__ import annotations

import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
# glibc stores the trim threshold as a size_t: -1 reads as SIZE_MAX, i.e. never trim (mallopt
# takes an int, and a step can free more than the largest positive one, 2 GiB, at once)
NEVER = -1
OPT_OUT = "PGBENCH_RETURN_FREED_MEMORY"  # set to 1: leave glibc's defaults alone


def keep_freed_memory() -> bool:
    """Ask glibc to serve every block from its heap (no ``mmap``), never to trim the heap,
    and to use one arena for all threads (the other arenas would
    still ``mmap`` large blocks). Process-wide; call it before JAX creates its threads (first
    device use). Returns whether it applied: False off Linux/glibc or with
    ``PGBENCH_RETURN_FREED_MEMORY=1``."""
    if os.environ.get(OPT_OUT) == "1" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all([mallopt(M_MMAP_MAX, 0), mallopt(M_TRIM_THRESHOLD, NEVER), mallopt(M_ARENA_MAX, 1)])
