"""Every released preset traces end to end (forward, loss, greedy decode) with the right
output shapes, without allocating any weights (``jax.eval_shape``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from pgbench import decode
from pgbench.config import PRESETS
from pgbench.model import paligemma as pg
from pgbench.checkpoints.bigvision_layout import expected_shapes, from_bigvision_params


def _abstract_model(cfg, dtype=jnp.bfloat16):
    flat = {k: jax.ShapeDtypeStruct(s, dtype) for k, s in expected_shapes(cfg).items()}
    return jax.eval_shape(lambda f: from_bigvision_params(f, cfg), flat)


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if "tiny" not in n))
def test_preset_traces(name):
    cfg = PRESETS[name]
    if cfg.llm.family == "gemma2":  # the transformers option too: windowed local layers
        cfg = cfg.replace_llm(apply_sliding_window=True)
    model = _abstract_model(cfg)
    b, t, r = 2, 6, cfg.image_size
    images = jax.ShapeDtypeStruct((b, r, r, 3), jnp.float32)
    ints = jax.ShapeDtypeStruct((b, t), jnp.int32)
    mask = jax.ShapeDtypeStruct((b, t), bool)
    logits, zimg = jax.eval_shape(pg.forward, model, images, ints, mask, ints)
    n = cfg.num_image_tokens
    assert logits.shape == (b, n + t, cfg.llm.vocab_size) and logits.dtype == jnp.float32
    assert zimg.shape == (b, n, cfg.llm.width)
    loss = jax.eval_shape(pg.suffix_loss, model, images, ints, mask, ints, ints)
    assert loss.shape == (b,)
    out = jax.eval_shape(
        lambda m, i, tk, im, ar: decode._decode(
            m, i, tk, im, ar, jax.random.key(0), jnp.int32(1), max_new_tokens=4,
            cache_dtype="bfloat16", attn_impl="xla", sampler=decode.Sampler()),
        model, images, ints, mask, ints)
    assert out.tokens.shape == (b, 4)
