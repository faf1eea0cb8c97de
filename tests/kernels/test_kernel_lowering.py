"""The non-interpret lowerings, cross-compiled from this CPU (no accelerator needed).

``jax.export`` with ``platforms=['cuda']`` runs the Pallas -> Triton lowering and
``['tpu']`` the Pallas -> Mosaic lowering, so kernel bodies that use an op those
backends cannot express fail here. Triton-to-PTX and Mosaic's own compiler run only on
the device, so this is necessary, not sufficient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import export

from pgbench.kernels import _common
from pgbench.kernels.attention import _flash
from pgbench.kernels.blocks import default_block_sizes

_CHECKS = [export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton"),
           export.DisabledSafetyCheck.custom_call("tpu_custom_call")]


def _export(platform, backend, monkeypatch, n=512, d=256, h=8, kvh=4):
    if platform == "tpu":  # Mosaic asks the (absent) device for its generation
        from jax._src.pallas.mosaic import tpu_info
        monkeypatch.setattr(tpu_info, "get_device_kind", lambda: "TPU v5 lite")
        monkeypatch.setattr(tpu_info, "get_num_device_cores", lambda: 1)
    cfg = _common.KernelConfig(default_block_sizes(backend, d, n, n), 50.0, backend, False)
    q = jax.ShapeDtypeStruct((1, h, n, d), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((1, kvh, n, d), jnp.bfloat16)
    meta = jax.ShapeDtypeStruct((1, 1, n), jnp.int32)

    def fwd_bwd(q, k, v, *meta):
        f = lambda q, k, v: _flash(q, k, v, *meta, cfg).astype(jnp.float32).sum()
        return jax.value_and_grad(f, (0, 1, 2))(q, k, v)

    return export.export(jax.jit(fwd_bwd), platforms=[platform], disabled_checks=_CHECKS)(
        q, kv, kv, meta, meta, meta, meta).mlir_module()


def test_triton_lowering(monkeypatch):
    text = _export("cuda", "gpu", monkeypatch)
    assert text.count("__gpu$xla.gpu.triton") == 3  # fwd, dK/dV, dQ


def test_mosaic_lowering(monkeypatch):
    """Pallas -> Mosaic MLIR for a TPU v5e (faked device kind); Mosaic's own compile is untested."""
    text = _export("tpu", "tpu", monkeypatch)
    assert text.count("tpu_custom_call") == 3
