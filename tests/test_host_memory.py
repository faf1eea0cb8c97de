"""keep_freed_memory: a block freed by a worker thread is reused without faulting its pages in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = r"""
import ctypes, resource, sys, threading
from pgbench.host_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
SIZE = 64 << 20
faults = []
def worker():  # as XLA's threads: big blocks allocated, touched and freed, step after step
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(SIZE); libc.memset(p, 1, SIZE); libc.free(p)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=worker); t.start(); t.join()
print(applied, sum(faults[1:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_blocks_are_reused_without_page_faults():
    pages = (64 << 20) // 4096  # one block's 4 KiB pages
    out = {mode: subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                                check=True).stdout.split() for mode in ("keep", "default")}
    if out["keep"][0] != "True":
        pytest.skip("not glibc")
    assert int(out["keep"][1]) < pages // 10  # 4 reuses, (almost) no page faulted in again
    # glibc's defaults give the block back and fault it in again on every reuse (or, with
    # transparent huge pages, in 2 MiB pages): the measure can tell the two apart
    assert int(out["default"][1]) > int(out["keep"][1])
