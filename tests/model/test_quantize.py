"""Weight-only int8 (model/quantize.py): the rounding bound, the CPU's fused one-row product
against the plain product, and the accuracy cost on the big_vision parity cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pgbench import decode
from pgbench.model import quantize as Q
from pgbench.model.layer_forms import is_stacked, unstack_layers
from pgbench.model.ops import dense
from tests.model._reference import CASES, forward_logits, load_case, rel_err


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 9), k=st.sampled_from([1, 7, 96, 1031, 2304, 3000]), seed=st.integers(0, 99))
def test_dequantized_weights_are_within_half_a_step(n, k, seed):
    """Every weight within scale / 2 of its original (round to nearest), a row's largest |w|
    exact up to float32 rounding, and the chunks join back to the original column order."""
    w = np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)
    w[0] = 0.0  # an all-zero row stays zero
    q = Q.quantize_matrix(w)
    c = Q.chunks_of(k)
    assert q.q.shape == (c, n, k // c) and q.q.dtype == jnp.int8 and q.shape == (n, k)
    back = np.asarray(Q.dequantize(q))
    scale = np.asarray(q.scale)[:, None]
    assert np.all(np.abs(back - w) <= scale / 2 * (1 + 1e-6))
    assert np.all(back[0] == 0.0)
    assert np.all(np.abs(np.asarray(q.q, np.int32)) <= 127)
    assert k // c <= Q.MAX_CHUNK or c == 1


def test_chunks_cut_gemma_widths_into_pieces_the_cpu_fuses():
    assert [Q.chunks_of(k) for k in (2048, 2304, 16384, 9216, 4608)] == [2, 3, 16, 9, 6]
    assert Q.chunks_of(1031) == 1  # a prime: one chunk rather than pieces of one column


@pytest.mark.parametrize("rows", [1, 2, 3, 17])
@pytest.mark.parametrize("k", [96, 2304])
def test_int8_product_is_x_times_the_dequantized_weights(rows, k):
    """Each path (the CPU's fused rows for 1-2 rows, the converted product otherwise) against a
    float64 product with the dequantized weights, to 1e-5 of the largest |output|."""
    rng = np.random.default_rng(rows + k)
    w = Q.quantize_matrix(rng.standard_normal((40, k)).astype(np.float32))
    x = jnp.asarray(rng.standard_normal((rows, 1, k)), jnp.float32)
    got = jax.jit(dense)(x, w)
    assert got.shape == (rows, 1, 40) and got.dtype == jnp.float32
    want = np.asarray(x, np.float64) @ np.asarray(Q.dequantize(w), np.float64).T
    assert np.max(np.abs(np.asarray(got, np.float64) - want)) <= 1e-5 * np.abs(want).max()


def test_a_non_finite_row_gives_nan_not_a_wrong_number():
    w = Q.quantize_matrix(np.ones((4, 8), np.float32))
    x = jnp.asarray([[1.0, np.inf, 0, 0, 0, 0, 0, 0]], jnp.float32)
    assert np.all(np.isnan(np.asarray(jax.jit(dense)(x, w))))


def test_decode_loop_keeps_int8_weights_int8():
    """Inside a loop XLA would hoist the float32 conversion of loop-invariant int8 weights
    out of it (a float32 copy of every weight); the product ties them to its row."""
    w = Q.quantize_matrix(np.random.default_rng(0).standard_normal((1024, 512)).astype(np.float32))

    def loop(x, w):
        return jax.lax.fori_loop(0, 4, lambda i, x: dense(x, w)[:, :512], x)

    compiled = jax.jit(loop).lower(jnp.ones((1, 512), jnp.float32), w).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < 1024 * 512  # < the int8 weight itself


def test_embedding_rows_are_the_dequantized_rows():
    w = Q.quantize_matrix(np.random.default_rng(1).standard_normal((50, 2304)).astype(np.float32))
    tokens = jnp.asarray([[3, 0, 49], [7, 7, 1]])
    np.testing.assert_array_equal(np.asarray(Q.embedding_rows(w, tokens)),
                                  np.asarray(Q.dequantize(w))[np.asarray(tokens)])


@pytest.mark.parametrize("name", sorted(CASES))
def test_int8_model_stays_close_to_float32_on_the_parity_cases(name):
    """The accuracy cost on big_vision's tiny random checkpoints: logits within 10% of the
    largest float32 logit (measured 7.1% pg1, 5.4% pg2: random tiny models amplify every
    perturbation, see docs/model.md) and the same argmax at >= 90% of valid positions; the
    stacked and per-layer forms agree; only the decoder is quantized."""
    model, cfg, header, inp, out, flat = load_case(name)
    qmodel = Q.quantize_decoder(model)
    assert Q.is_quantized(qmodel) and not Q.is_quantized(model)
    assert all(a is b for a, b in zip(jax.tree.leaves(qmodel.img), jax.tree.leaves(model.img)))
    args = (inp["images"], inp["tokens"], inp["input_mask"], inp["mask_ar"])
    lf, lq = forward_logits(model, *args), forward_logits(qmodel, *args)
    n_img = lf.shape[1] - inp["tokens"].shape[1]
    valid = np.concatenate([np.ones((lf.shape[0], n_img), bool), inp["input_mask"]], axis=1)[..., None]
    assert 1e-3 < rel_err(lq, lf, valid) < 0.10
    same = (np.argmax(lq, -1) == np.argmax(lf, -1))[valid[..., 0]]
    assert same.mean() >= 0.9
    assert is_stacked(model.llm.blocks)
    per_layer = Q.quantize_decoder(eqx_replace_blocks(model, unstack_layers(model.llm.blocks)))
    assert rel_err(forward_logits(per_layer, *args), lq, valid) < 1e-5


def eqx_replace_blocks(model, blocks):
    import equinox as eqx

    return eqx.tree_at(lambda m: m.llm.blocks, model, blocks)


@pytest.mark.parametrize("name", sorted(CASES))
def test_int8_greedy_decoding_is_the_same_at_batch_one_and_in_a_batch(name):
    """The fused one-row path (batch 1) and the converted path (batch > 2) generate the same
    tokens for the same prompt."""
    model, cfg, header, inp, out, flat = load_case(name)
    qmodel = Q.quantize_decoder(model)
    # The decode batch twice over: more rows than the fused path takes.
    d = {k[len("decode_"):]: np.concatenate([v, v]) for k, v in inp.items() if k.startswith("decode_")}
    assert len(d["tokens"]) > Q.FUSED_MAX_ROWS
    k = out["greedy_tokens"].shape[1]
    batch = decode.greedy_decode(qmodel, d["images"], d["tokens"], d["input_mask"], d["mask_ar"],
                                 max_new_tokens=k)
    for row in range(len(d["tokens"])):
        one = decode.greedy_decode(qmodel, *(d[a][row:row + 1] for a in ("images", "tokens", "input_mask", "mask_ar")),
                                   max_new_tokens=k)
        np.testing.assert_array_equal(np.asarray(one)[0], np.asarray(batch)[row])


def test_quantize_decoder_rejects_unknown_weights():
    with pytest.raises(ValueError, match="weights must be one of"):
        Q.quantize_decoder(None, "int4")
