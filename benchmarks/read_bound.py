"""The machine's read bandwidth, measured the way decoding reads its weights.

One decode step streams every decoder weight from memory once, read-only, on all cores. So
the bound is measured with that access pattern: a buffer as large as the weights one step
reads (so it cannot sit in any cache), summed by every core at once, counting each byte once
(it is read, never written). Two readers are timed and the faster one is the bound:
  - numpy: one thread per core, each reducing its own contiguous slice (numpy releases the
    GIL inside a reduction);
  - jax: one jitted sum over the buffer laid out as [cores, n] (XLA's own CPU threading).
Nothing that reads every weight once per step can beat (weight bytes) / (this bandwidth);
a decode measured faster than that is flagged, not celebrated.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def _best_of(fn, repeats: int) -> float:
    fn()  # first touch / compile
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure(nbytes: int, repeats: int = 5) -> dict:
    """Read bandwidth (bytes/s) over a float32 buffer of ~nbytes, all cores, read-only."""
    import jax
    import jax.numpy as jnp

    cores = os.cpu_count() or 1
    n = max(cores * 1024, (nbytes // 4) // cores * cores)  # float32 elements, a multiple of cores
    # One buffer at a time (a 3B model's weights are ~10 GB in float32), each written once
    # when made, so every page is resident before the timing.
    dev = jnp.ones((cores, n // cores), jnp.float32)
    total = jax.jit(lambda x: jnp.sum(x, axis=1))
    t_jax = _best_of(lambda: total(dev).block_until_ready(), repeats)
    del dev
    buf = np.ones(n, np.float32)
    parts = np.split(buf, cores)
    with ThreadPoolExecutor(cores) as pool:
        t_np = _best_of(lambda: list(pool.map(np.add.reduce, parts)), repeats)
    del parts, buf
    read = 4 * n
    rates = {"numpy_threads": read / t_np, "jax_sum": read / t_jax}
    best = max(rates, key=rates.get)
    return {"bytes": read, "cores": cores, "bytes_per_s": rates[best], "reader": best,
            "by_reader_bytes_per_s": rates,
            "how": "best of 5 read-only reductions over the buffer, all cores, bytes counted once"}
