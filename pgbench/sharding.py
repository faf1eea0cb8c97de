"""Scale beyond one device: the device mesh, where every parameter lives, and multi-host start.

The mesh always has two axes, ``("data", "fsdp")`` (either may have size 1):

- ``data``: data parallelism. Parameters are replicated over it; the batch is split.
- ``fsdp``: fully sharded data parallelism. The batch is split over it too, and every
  large parameter, its gradient and its optimizer state are split over it, so each device
  holds 1/fsdp of them; XLA gathers a weight where a layer needs it.

``--mesh data=8`` is plain data parallelism, ``--mesh fsdp=8`` is FSDP, ``--mesh
data=2,fsdp=4`` is FSDP within groups of 4 devices and data parallelism across the groups.

Where a parameter lives is decided by ONE table, :data:`PARAM_SPECS`, from the parameter's
name (its "/"-joined path in the model, as ``pgbench.optim.param_names``: ``llm/blocks/gate``,
``img/patch_kernel``; per-layer blocks carry an index, ``llm/blocks/3/gate``) to the
``PartitionSpec`` of one layer's array. Stacked layers get a leading ``None`` for the
layer axis. The same table places optimizer state: an optimizer-state leaf whose path ends
with a parameter's name (``.../mu/llm/blocks/gate``) lives where that parameter does.

Batches are split over both axes along the example axis (:func:`batch_spec`). The Pallas
attention kernel cannot be partitioned by XLA, so under a mesh it runs per device with
``jax.shard_map`` over the example axis (:func:`batch_parallel`; the model calls it).
"""

from __future__ import annotations

import argparse
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pgbench.errors import InputError

# jax is imported inside the functions: the command line (which builds its parser from
# add_distributed_arguments) starts without it.

AXES = ("data", "fsdp")
BATCH_AXES = AXES  # the example axis of a batch is split over every mesh axis
FSDP = "fsdp"

# Parameter name (without the layer index) -> PartitionSpec entries of ONE layer's array.
# Every matrix is split along its tower's model width (2048 / 2304 / 3584 / 4608 for the LLMs, 1152
# for SigLIP: divisible by every power of two up to 128), which every matrix has; the
# vectors (norm scales, biases) are small and replicated. Kernels are [out, in] (ops.dense).
PARAM_SPECS: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"llm/input_embedding", (None, FSDP)),  # [V, D]
    (r"llm/blocks/(q|k|v|gate|up)", (None, FSDP)),  # [out, D]
    (r"llm/blocks/(attn_out|down)", (FSDP, None)),  # [D, in]
    (r"img/blocks/(q|k|v|mlp0)_kernel", (None, FSDP)),  # [out, C]
    (r"img/blocks/(out|mlp1)_kernel", (FSDP, None)),  # [C, in]
    (r"img/head_kernel", (None, FSDP)),  # [D_llm, C]
    (r"img/patch_kernel", (None, None, None, FSDP)),  # [P, P, 3, C]
    (r"img/pos_embedding", (None, None, FSDP)),  # [1, N, C]
    # LoRA adapters (pgbench.lora): the side along the model width is split as in the
    # projection they adapt; the rank side is small.
    (r"llm/blocks/lora/(q|k|v|gate|up)/a", (None, FSDP)),  # [r, D]
    (r"llm/blocks/lora/(attn_out|down)/b", (FSDP, None)),  # [D, r]
)
_LAYER_INDEX = re.compile(r"/blocks/(\d+)/")
_COMPILED = tuple((re.compile(rf"(?:^|.*/)({pat})"), spec) for pat, spec in PARAM_SPECS)


# ---------------------------------------------------------------------------------------
# The mesh


def parse_mesh(spec: str | None, n_devices: int) -> dict[str, int]:
    """``"data=2,fsdp=4"`` -> ``{"data": 2, "fsdp": 4}`` for ``n_devices`` devices.

    An axis left out has size 1, except that with one axis given as ``-1`` (or no spec at
    all: ``data=-1``) that axis takes every device the others leave. The sizes must
    multiply to ``n_devices``; anything else is one :class:`InputError`.
    """
    sizes = {a: 1 for a in AXES}
    fill = None
    for part in (spec or "data=-1").split(","):
        name, eq, value = part.strip().partition("=")
        if not eq or name not in AXES:
            raise InputError(f"--mesh {spec!r}: expected comma-separated AXIS=SIZE with AXIS in "
                             f"{', '.join(AXES)} (e.g. data=2,fsdp=4), got {part.strip()!r}")
        try:
            size = int(value)
        except ValueError:
            raise InputError(f"--mesh {spec!r}: size of {name!r} is not an integer: {value!r}") from None
        if size == -1 and fill is None:
            fill = name
        elif size < 1:
            raise InputError(f"--mesh {spec!r}: size of {name!r} must be positive (or -1 once)")
        sizes[name] = size
    if fill is not None:
        rest = int(np.prod([s for a, s in sizes.items() if a != fill]))
        if n_devices % rest:
            raise InputError(f"--mesh {spec!r}: {n_devices} devices cannot be split into groups of {rest}")
        sizes[fill] = n_devices // rest
    if int(np.prod(list(sizes.values()))) != n_devices:
        raise InputError(f"--mesh {spec!r} needs {int(np.prod(list(sizes.values())))} devices; "
                         f"there are {n_devices}")
    return sizes


def make_mesh(spec: str | None = None, devices: Sequence | None = None):
    """The ``("data", "fsdp")`` mesh of ``spec`` (see :func:`parse_mesh`) over ``devices``
    (default: every device of every process, ``jax.devices()``). fsdp is the inner axis, so
    an FSDP group's gathers stay among neighbouring devices."""
    import jax

    devs = list(devices if devices is not None else jax.devices())
    sizes = parse_mesh(spec, len(devs))
    return jax.sharding.Mesh(np.array(devs).reshape([sizes[a] for a in AXES]), AXES)


def local_mesh(devices: Sequence | None = None):
    """Data parallelism over ``devices`` (default: this process's devices,
    ``jax.local_devices()``): evaluation's mesh, one per process."""
    import jax

    return make_mesh(None, jax.local_devices() if devices is None else devices)


def describe(mesh) -> str:
    return ",".join(f"{a}={n}" for a, n in mesh.shape.items())


# ---------------------------------------------------------------------------------------
# Parameters and optimizer state


def base_spec(name: str) -> tuple[str | None, ...] | None:
    """The table's PartitionSpec entries for one layer of parameter ``name`` (None: replicated).
    ``name`` may carry a prefix (an optimizer-state path) and a layer index."""
    plain = _LAYER_INDEX.sub("/blocks/", name)
    for rx, spec in _COMPILED:
        if rx.fullmatch(plain):
            return spec
    return None


def param_spec(name: str, shape: Sequence[int], mesh):
    """PartitionSpec of the array ``name`` of ``shape`` on ``mesh``: the table's spec, with a
    leading ``None`` for stacked layers. A split dimension that the mesh axis does not
    divide is an :class:`InputError` naming the parameter."""
    from jax.sharding import PartitionSpec

    spec = base_spec(name)
    if spec is None or mesh.shape[FSDP] == 1:
        return PartitionSpec()
    if len(shape) == len(spec) + 1:  # stacked layers: the leading [L] axis
        spec = (None, *spec)
    if len(spec) != len(shape):
        raise InputError(f"parameter {name!r} has shape {tuple(shape)}; the sharding table "
                         f"expects {len(spec)} dimensions ({spec})")
    for dim, axis in zip(shape, spec):
        if axis is not None and dim % mesh.shape[axis]:
            raise InputError(f"parameter {name!r} {tuple(shape)}: dimension {dim} is not divisible "
                             f"by --mesh {axis}={mesh.shape[axis]}")
    return PartitionSpec(*spec)


def param_sharding(name: str, shape: Sequence[int], mesh):
    """The NamedSharding of parameter ``name`` of ``shape`` on ``mesh`` (:func:`param_spec`)."""
    from jax.sharding import NamedSharding

    return NamedSharding(mesh, param_spec(name, shape, mesh))


def _name(path) -> str:
    from pgbench.optim import _name as name
    return name(path)


def tree_shardings(tree, mesh):
    """A pytree like ``tree`` (a model, its trained or frozen part, gradients or optimizer
    state) with a NamedSharding in place of every array (None and non-array leaves kept)."""
    def one(path, x):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            return x
        return param_sharding(_name(path), x.shape, mesh)
    import jax

    return jax.tree_util.tree_map_with_path(one, tree)


def shard_tree(tree, mesh):
    """Every array of ``tree`` placed on ``mesh`` by the table, one array at a time."""
    import jax
    from jax.sharding import NamedSharding

    shardings = tree_shardings(tree, mesh)
    return jax.tree.map(lambda x, s: jax.device_put(x, s) if isinstance(s, NamedSharding) else x,
                        tree, shardings)


def replicate(tree, mesh):
    """Every array of ``tree`` copied onto each device of ``mesh`` (no-op on one device)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    if mesh.devices.size == 1:
        return tree
    rep = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda x: jax.device_put(x, rep) if isinstance(x, (jax.Array, np.ndarray)) else x,
                        tree)


def init_opt_state(tx, trainable, mesh):
    """``tx.init(trainable)`` created directly in its shards (each moment where its
    parameter lives; counters replicated): the state never exists whole on one device."""
    import jax

    shapes = jax.eval_shape(tx.init, trainable)
    return jax.jit(tx.init, out_shardings=tree_shardings(shapes, mesh))(trainable)


# ---------------------------------------------------------------------------------------
# Batches


def batch_spec(leading: int = 0):
    """Split the example axis (after ``leading`` unsplit axes, e.g. 1 for micro-batches
    ``[K, m, ...]``) over every mesh axis."""
    from jax.sharding import PartitionSpec

    return PartitionSpec(*([None] * leading), BATCH_AXES)


def shard_batch(batch: Mapping[str, Any], mesh, *, leading: int = 0) -> dict[str, Any]:
    """Place host arrays (the same full batch on every process) split over the example
    axis. The example count must be a multiple of the mesh's device count."""
    import jax
    from jax.sharding import NamedSharding

    s = NamedSharding(mesh, batch_spec(leading))
    out = {}
    for k, v in batch.items():
        n = np.shape(v)[leading]
        if n % mesh.devices.size:
            raise InputError(f"batch {k!r}: {n} examples per (micro-)batch do not split over "
                             f"{mesh.devices.size} devices ({describe(mesh)})")
        out[k] = jax.device_put(v, s) if mesh.devices.size > 1 else jax.numpy.asarray(v)
    return out


def shard_rows(x, mesh):
    """One array split over its first axis on a data-parallel ``mesh`` (no-op on one device)."""
    import jax
    from jax.sharding import NamedSharding

    if mesh.devices.size == 1:
        return x
    return jax.device_put(x, NamedSharding(mesh, batch_spec()))


# ---------------------------------------------------------------------------------------
# Kernels XLA cannot partition


def _batch_axes_in_context() -> tuple[str, ...]:
    import jax

    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return ()
    return tuple(a for a in BATCH_AXES if a in mesh.axis_names and mesh.shape[a] > 1)


def batch_parallel(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` run per device over its slice of the examples.

    Under a mesh in context (``jax.set_mesh``) whose batch axes span several devices, every
    array in ``args`` (pytrees allowed) has its leading example axis split over them and the
    result ([B, ...]) is split the same way; keyword arguments that are arrays (e.g. a traced
    sliding window) are replicated, the others are static. Without such a mesh it is
    ``fn(*args, **kwargs)``. For kernels (Pallas) that XLA cannot partition itself; the
    example count must be a multiple of the batch axes' size."""
    import jax
    from jax.sharding import PartitionSpec

    axes = _batch_axes_in_context()
    if not axes:
        return fn(*args, **kwargs)
    traced = {k: v for k, v in kwargs.items() if isinstance(v, jax.Array)}
    static = {k: v for k, v in kwargs.items() if k not in traced}

    def body(args, traced):
        return fn(*args, **static, **traced)

    spec = PartitionSpec(axes)
    in_specs = (jax.tree.map(lambda _: spec, args), jax.tree.map(lambda _: PartitionSpec(), traced))
    return jax.shard_map(body, in_specs=in_specs, out_specs=spec, check_vma=False)(args, traced)


# ---------------------------------------------------------------------------------------
# The training step


def shard_train_step(step_fn: Callable, mesh, trainable, frozen, opt_state):
    """Wrap ``step_fn(trainable, frozen, opt_state, micro_batches, step) -> (trainable,
    opt_state, metrics)`` (``pgbench.train_step.make_train_step``'s) to run on ``mesh``.

    The returned function expects its arguments placed as :func:`shard_tree`,
    :func:`init_opt_state` and ``shard_batch(..., leading=1)`` place them; it keeps the
    trained parameters and optimizer state in those shards across steps (donated) and runs
    under the mesh, so the Pallas kernel takes its shard_map path."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    t_s, o_s = tree_shardings(trainable, mesh), tree_shardings(opt_state, mesh)
    rep = NamedSharding(mesh, PartitionSpec())
    jitted = jax.jit(step_fn, out_shardings=(t_s, o_s, rep), donate_argnums=(0, 2))
    del frozen  # placed by the caller; stays where it is

    def run(trainable, frozen, opt_state, micro_batches, step):
        with jax.set_mesh(mesh):
            return jitted(trainable, frozen, opt_state, micro_batches, step)
    return run


# ---------------------------------------------------------------------------------------
# Several hosts


def add_distributed_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--distributed", action="store_true",
                   help="multi-host: call jax.distributed.initialize (cluster auto-detected, "
                        "or --coordinator/--num-processes/--process-id)")
    p.add_argument("--coordinator", metavar="HOST:PORT", help="with --distributed")
    p.add_argument("--num-processes", type=int, metavar="N", help="with --distributed")
    p.add_argument("--process-id", type=int, metavar="I", help="with --distributed")


def initialize_distributed(args: argparse.Namespace) -> tuple[int, int, Callable | None]:
    """``jax.distributed.initialize`` when ``--distributed`` was given (before any other JAX
    call) -> (process index, process count, a barrier taking a name or None)."""
    if not getattr(args, "distributed", False):
        return 0, 1, None
    import jax
    from jax.experimental import multihost_utils

    kw = {k: v for k, v in (("coordinator_address", args.coordinator),
                            ("num_processes", args.num_processes),
                            ("process_id", args.process_id)) if v is not None}
    try:
        jax.distributed.initialize(**kw)
    except (RuntimeError, ValueError) as e:
        raise InputError(f"--distributed: jax.distributed.initialize failed ({e}); outside a "
                         "detected cluster pass --coordinator, --num-processes and --process-id") from None
    return jax.process_index(), jax.process_count(), multihost_utils.sync_global_devices
