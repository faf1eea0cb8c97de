"""The jaxtyping shape/dtype annotations of the public entry points hold on real calls
and reject inputs that break them (checked with beartype; the library does not check
them on every call)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from beartype import beartype
from jaxtyping import TypeCheckError, jaxtyped

from pgbench import decode, kernels
from pgbench.kernels import BlockSizes
from pgbench.model import paligemma as pg
from pgbench.model.attention import attention
from pgbench.model.masks import SegmentInfo
from tests.model._reference import load_case


def checked(f):
    return jaxtyped(typechecker=beartype)(f)


@pytest.fixture(scope="module")
def case():
    model, _, _, inp, _, _ = load_case("pg1_tiny")
    return model, inp


def test_forward_and_loss_annotations(case):
    model, inp = case
    args = (inp["images"], inp["tokens"], inp["input_mask"], inp["mask_ar"])
    logits, zimg = checked(pg.forward)(model, *args)
    assert logits.shape[:2] == (2, zimg.shape[1] + inp["tokens"].shape[1])
    loss = checked(pg.suffix_loss)(model, *args, inp["mask_loss"])
    assert loss.shape == (2,)
    with pytest.raises(TypeCheckError):  # a mask one token longer than the tokens
        checked(pg.forward)(model, inp["images"], inp["tokens"],
                            np.pad(inp["input_mask"], ((0, 0), (0, 1))), inp["mask_ar"])
    with pytest.raises(TypeCheckError):  # float tokens
        checked(pg.forward)(model, inp["images"], inp["tokens"].astype(np.float32),
                            *args[2:])


def test_decode_annotations(case):
    model, inp = case
    args = (inp["decode_images"], inp["decode_tokens"], inp["decode_input_mask"],
            inp["decode_mask_ar"])
    out = checked(decode.greedy_decode)(model, *args, max_new_tokens=3)
    assert out.shape == (2, 3)
    assert checked(decode.decode)(model, *args, max_new_tokens=2).tokens.shape == (2, 2)
    with pytest.raises(TypeCheckError):  # images for a different batch
        checked(decode.decode)(model, args[0][:1], *args[1:], max_new_tokens=2)


def _qkv(b=2, n=8, h=4, kvh=2, d=8):
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(b, n, h, d)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(b, n, kvh, d)), jnp.float32) for _ in range(2))
    return q, k, v, SegmentInfo.bidirectional(b, n)


def test_attention_annotations():
    q, k, v, info = _qkv()
    assert checked(attention)(q, k, v, info).shape == q.shape
    assert checked(kernels.reference_attention)(q, k, v, info).shape == q.shape
    out = checked(kernels.prefix_lm_attention)(q, k, v, info, block_sizes=BlockSizes(8, 8, 8, 8))
    assert out.shape == q.shape
    with pytest.raises(TypeCheckError):  # K/V head_dim differs from the queries'
        checked(attention)(q, k[..., :4], v[..., :4], info)
    with pytest.raises(TypeCheckError):  # integer queries
        checked(attention)(q.astype(jnp.int32), k, v, info)
    with pytest.raises(TypeCheckError):
        checked(kernels.general_attention)(q, k[:1], v[:1], info)
    assert jax.eval_shape(checked(attention), q, k, v, info).shape == q.shape  # traced too
