"""ops.dense: both evaluation orders give x @ w.T."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgbench.model.ops import WEIGHT_MAJOR_MAX_ROWS, dense


@pytest.mark.parametrize("rows", [1, 3, WEIGHT_MAJOR_MAX_ROWS, WEIGHT_MAJOR_MAX_ROWS + 1, 200])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dense_is_x_times_w_transposed(rows, dtype):
    """Against a float64 numpy product of the same (rounded) inputs; float32 to 1e-5 of the
    largest |output| (summation order differs between the two paths), bfloat16 to one
    rounding of the output (2**-8 relative)."""
    rng = np.random.default_rng(rows)
    x = jnp.asarray(rng.standard_normal((rows, 1, 96)), dtype)  # [B, N, K], N = 1 as in decoding
    w = jnp.asarray(rng.standard_normal((40, 96)), dtype)  # [out, in]
    got = jax.jit(dense)(x, w)
    assert got.shape == (rows, 1, 40) and got.dtype == dtype
    want = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    scale = np.abs(want).max()
    tol = 1e-5 * scale if dtype == jnp.float32 else 2.0 ** -8 * np.abs(want) + 1e-6 * scale
    assert np.all(np.abs(np.asarray(got, np.float64) - want) <= tol)


def test_dense_out_dtype():
    x = jnp.ones((2, 8), jnp.bfloat16)
    w = jnp.ones((3, 8), jnp.bfloat16)
    assert dense(x, w, out_dtype=jnp.float32).dtype == jnp.float32


def _loop_temp_bytes(product, x, w) -> int:
    """Scratch memory of the compiled program running ``product`` four times in a loop."""
    def loop(x, w):
        return jax.lax.fori_loop(0, 4, lambda i, x: product(x, w)[..., :x.shape[-1]], x)
    return jax.jit(loop).lower(x, w).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("rows", [8, 266])
def test_dense_in_a_loop_keeps_the_weights_in_place(dtype, rows):
    """Inside a decode loop the weights are loop-invariant; XLA's CPU backend once chose to
    transpose every bf16 weight into a second copy before such a loop (3-D x): twice the
    memory and a transpose of every weight per decode call. Checked on the compiled
    program's memory analysis: its scratch memory is smaller than one weight, so no
    weight-sized copy exists. The control (a product that does copy the transposed
    weight) shows the measure sees such a copy."""
    w = jnp.ones((4096, 1024), dtype)
    x = jnp.ones((rows, 1, 1024), dtype)
    assert _loop_temp_bytes(dense, x, w) < w.nbytes

    def copying(x, w):
        wt = jax.lax.optimization_barrier(w.T)  # [in, out] materialised in a second buffer
        return jnp.einsum("bnk,kj->bnj", x, wt, preferred_element_type=jnp.float32).astype(x.dtype)
    assert _loop_temp_bytes(copying, x, w) >= w.nbytes


def _lowered(x, w, platform: str) -> str:
    from jax import export
    return export.export(jax.jit(dense), platforms=[platform])(x, w).mlir_module()


def test_cpu_product_order_only_in_programs_for_one_cpu_device():
    """The weight-major order (marked by its optimisation barrier) is lowered into a
    program for a CPU, never into one for a GPU or TPU, even when traced on a CPU host;
    and only for the small row counts it was measured faster for."""
    w = jnp.ones((32, 64), jnp.float32)
    decoding, prefill = jnp.ones((8, 1, 64), jnp.float32), jnp.ones((200, 64), jnp.float32)
    assert "optimization_barrier" in _lowered(decoding, w, "cpu")  # the control
    assert "optimization_barrier" not in _lowered(decoding, w, "cuda")
    assert "optimization_barrier" not in _lowered(decoding, w, "tpu")
    assert "optimization_barrier" not in _lowered(prefill, w, "cpu")


def test_simulated_multi_device_run_uses_the_accelerator_order():
    """With 8 simulated CPU devices the CPU stands in for an accelerator mesh: dense
    lowers to the accelerator's product (no CPU-only branch)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import jax, jax.numpy as jnp\n"
            "from jax import export\n"
            "from pgbench.model.ops import dense\n"
            "assert len(jax.devices()) == 8\n"
            "x, w = jnp.ones((8, 1, 64)), jnp.ones((32, 64))\n"
            "print('optimization_barrier' in export.export(jax.jit(dense), platforms=['cpu'])(x, w).mlir_module())\n")
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               PYTHONPATH=str(root), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
