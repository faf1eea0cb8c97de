"""ops.dense: every evaluation order gives x @ w.T."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgbench.model.ops import FUSED_ROW_MAX_COLUMNS, WEIGHT_MAJOR_MAX_ROWS, _fused_row_product, dense


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


@pytest.mark.parametrize("k", [FUSED_ROW_MAX_COLUMNS, FUSED_ROW_MAX_COLUMNS + 8])
def test_one_bf16_row_either_side_of_the_fused_width(k):
    """One bf16 row at the widest fused product and just past it (the two-row product),
    against float64 to one rounding of the bf16 output."""
    rng = np.random.default_rng(k)
    x = jnp.asarray(rng.standard_normal((1, 1, k)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((24, k)), jnp.bfloat16)
    got = np.asarray(jax.jit(dense)(x, w), np.float64)
    want = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    assert np.all(np.abs(got - want) <= 2.0 ** -8 * np.abs(want) + 1e-6 * np.abs(want).max())


@pytest.mark.parametrize("k", [1024, FUSED_ROW_MAX_COLUMNS, FUSED_ROW_MAX_COLUMNS + 1024])
def test_one_bf16_row_reads_the_weight_in_place(k):
    """A one-row bf16 product converts the weight to float32 inside the matrix-vector
    product (up to FUSED_ROW_MAX_COLUMNS) or multiplies in bf16 (past it): either way the
    compiled program has no float32 copy of the weight (scratch memory under the bf16
    weight's own size). The control: past the width, XLA's CPU backend no longer fuses the
    conversion, and the fused form writes the copy (twice the bf16 bytes), which is why
    dense stops using it there."""
    w = jnp.ones((2048, k), jnp.bfloat16)
    x = jnp.ones((1, 1, k), jnp.bfloat16)
    assert jax.jit(dense).lower(x, w).compile().memory_analysis().temp_size_in_bytes < w.nbytes
    if k > FUSED_ROW_MAX_COLUMNS:
        fused = jax.jit(lambda x, w: _fused_row_product(x.reshape(1, k), w))
        assert fused.lower(x, w).compile().memory_analysis().temp_size_in_bytes >= 2 * w.nbytes


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
@pytest.mark.parametrize("rows", [1, 8, 266])
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


def test_bf16_backward_products_are_bf16_and_match_float64():
    """The gradient of a bf16 dense: both backward products take bf16 operands (no float32
    GEMM on upcast weights in the compiled program), and equal a float64 product of the
    same bf16 cotangent and operands to one bf16 rounding of the result (2**-8 relative)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 100, 96)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((40, 96)), jnp.bfloat16)
    c = jnp.asarray(rng.standard_normal((2, 100, 40)), jnp.float32)

    def loss(x, w):
        return jnp.sum(dense(x, w).astype(jnp.float32) * c)
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    dx, dw = grad(x, w)
    assert dx.dtype == dw.dtype == jnp.bfloat16
    g = np.asarray(c.astype(jnp.bfloat16), np.float64).reshape(200, 40)  # the bf16 output's cotangent
    want_dx = (g @ np.asarray(w, np.float64)).reshape(x.shape)
    want_dw = g.T @ np.asarray(x, np.float64).reshape(200, 96)
    for got, want in ((dx, want_dx), (dw, want_dw)):
        err = np.abs(np.asarray(got, np.float64) - want)
        assert np.all(err <= 2.0 ** -8 * np.abs(want) + 1e-6 * np.abs(want).max())
    # Both backward products are bf16 x bf16: dx = g @ w (JAX's own transpose makes it a
    # float32 product of an upcast copy of w) and dw = g.T @ x (contracting the rows, which
    # XLA's CPU backend upcasts to a float32 product unless ops pins the operands' layouts).
    dots = _dots(grad.lower(x, w).compile().as_text())
    for shape in ("f32[200,96]", "f32[40,96]"):
        products = [t for s, t in dots if s == shape]
        assert products and all(t == ["bf16", "bf16"] for t in products), (shape, dots)


def _dots(hlo: str) -> list[tuple[str, list[str]]]:
    """(result type, element types of the two operands) of every dot in an HLO module's text."""
    import re
    defs = dict(re.findall(r"%(\S+) = (\w+)\[", hlo))
    return [(out, [defs.get(name, "?") for name in re.findall(r"%([^\s,)]+)", args)[:2]])
            for out, args in re.findall(r"= (\w+\[[\d,]*\])\{[\d,]*\} dot\(([^)]*)\)", hlo)]


@pytest.mark.slow  # three compiled gradients of pg1-tiny (~60 s on a shared 2-core CPU)
def test_bf16_model_gradient_stays_near_float32(monkeypatch):
    """A bfloat16 model's training gradient (pg1-tiny, suffix loss) against the float32
    model's: every parameter's gradient within 5% (relative L2) of float32's, and the
    bf16 backward products no further from it than JAX's own transpose (the float32
    products on upcast operands they replace) plus 1% of the gradient (measured: ~1% for
    both)."""
    import equinox as eqx

    from pgbench.config import PRESETS
    from pgbench.checkpoints.random_params import init_params
    from pgbench.model import ops
    from pgbench.model import paligemma as pg

    cfg = PRESETS["pg1-tiny"]
    model = init_params(cfg, jax.random.key(1))
    rng = np.random.default_rng(0)
    b, t = 2, 12
    tokens = rng.integers(1, cfg.llm.vocab_size, (b, t)).astype(np.int32)
    mask_ar = (np.arange(t) >= 4).astype(np.int32)[None].repeat(b, 0)
    args = (rng.uniform(-1, 1, (b, cfg.vision.image_size, cfg.vision.image_size, 3)).astype(np.float32),
            tokens, np.ones((b, t), bool), mask_ar, mask_ar)

    def grads(dtype):
        m = pg.cast(model, dtype)
        g = eqx.filter_jit(eqx.filter_grad(lambda m: jnp.mean(pg.suffix_loss(m, *args))))(m)
        return [np.asarray(x, np.float64) for x in jax.tree.leaves(g)]

    ref = grads(jnp.float32)
    new = grads(jnp.bfloat16)
    monkeypatch.setattr(ops, "LOW_PRECISION", ())  # JAX's own transpose of the bf16 products
    old = grads(jnp.bfloat16)
    # a gradient that is zero in exact arithmetic (SigLIP's key bias: softmax ignores a shift
    # shared by all keys) is rounding noise in every dtype: relative to at least 1e-3 of the
    # largest parameter gradient
    floor = 1e-3 * max(np.linalg.norm(r) for r in ref)
    for r, n, o in zip(ref, new, old):
        norm = max(np.linalg.norm(r), floor)
        err_new, err_old = np.linalg.norm(n - r) / norm, np.linalg.norm(o - r) / norm
        assert err_new < 0.05 and err_new <= err_old + 0.01, (r.shape, err_new, err_old)


def test_float32_dense_gradient_unchanged():
    """float32 keeps JAX's own transpose: gradients equal float64 to float32 rounding."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((50, 96)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((40, 96)), jnp.float32)
    dx, dw = jax.grad(lambda x, w: jnp.sum(dense(x, w) ** 2), argnums=(0, 1))(x, w)
    y = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    np.testing.assert_allclose(dx, 2 * y @ np.asarray(w, np.float64), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dw, 2 * y.T @ np.asarray(x, np.float64), rtol=1e-4, atol=1e-3)
