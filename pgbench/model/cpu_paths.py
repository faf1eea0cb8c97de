"""The CPU-only numerical choices, in one place, and when they apply.

XLA's CPU GEMMs are fastest with product orders an accelerator does not want
(benchmarks/results/dense_orientation.md). Such a choice is made per device, never from
``jax.default_backend()``:

- at lowering time, through ``lax.platform_dependent``: a program compiled for a GPU or
  TPU (even one traced while the default backend is the CPU) never contains the CPU
  branch;
- at trace time, the CPU branch is dropped for multi-device runs (the operands'
  sharding or the mesh in context span several devices, or the process has several CPU
  devices, as under ``XLA_FLAGS=--xla_force_host_platform_device_count=8``): there the
  CPU stands in for an accelerator mesh, so it runs the accelerator's math, and a row
  count seen in the trace is a global, not a per-device, one.
"""

from __future__ import annotations

from typing import Callable

import jax


def _spans_several_devices(a) -> bool:
    if isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer):
        return len(a.sharding.device_set) > 1
    mesh = getattr(getattr(jax.typeof(a), "sharding", None), "mesh", None)
    return mesh is not None and not mesh.empty and mesh.size > 1


def single_cpu_device_run(*operands) -> bool:
    """Whether a computation on ``operands`` (arrays or pytrees of them) may take a
    CPU-only path: the process has one CPU device and neither the operands nor the mesh in
    context span several devices."""
    if len(jax.devices("cpu")) != 1:
        return False
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.size > 1:
        return False
    return not any(_spans_several_devices(a) for a in jax.tree.leaves(operands))


def cpu_or_default(cpu: Callable, default: Callable, *operands):
    """``cpu(*operands)`` where the computation runs on a single CPU device, else
    ``default(*operands)``; both must return the same shapes and dtypes."""
    if not single_cpu_device_run(*operands):
        return default(*operands)
    return jax.lax.platform_dependent(*operands, cpu=cpu, default=default)
