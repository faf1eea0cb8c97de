"""The whole model through each attention implementation against big_vision: the
Pallas kernels (interpreted on CPU) and jax.nn.dot_product_attention give the same
forward (case tolerance) and the same greedy tokens (exact) as the xla reference."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from pgbench import decode
from pgbench.model import paligemma as pg
from tests.model._reference import CASES, load_case, rel_err, tolerance


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["pallas", "cudnn"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_impl_matches_big_vision(name, impl):
    if impl == "pallas":
        pytest.importorskip("pgbench.kernels")
    model, cfg, header, inp, out, _ = load_case(name)
    fwd = jax.jit(pg.forward, static_argnames=("attn_impl", "final_softcap", "compute_dtype"))
    logits, zimg = fwd(model, inp["images"], inp["tokens"], inp["input_mask"], inp["mask_ar"],
                       attn_impl=impl)
    n_img = cfg.num_image_tokens
    valid = np.concatenate([np.ones((2, n_img), bool), inp["input_mask"]], 1)[:, :, None]
    assert rel_err(zimg, out["zimg"]) <= tolerance(header)
    assert rel_err(logits, out["logits"], valid) <= tolerance(header)
    got = decode.greedy_decode(model, inp["decode_images"], inp["decode_tokens"],
                               inp["decode_input_mask"], inp["decode_mask_ar"],
                               max_new_tokens=out["greedy_tokens"].shape[1], attn_impl=impl)
    np.testing.assert_array_equal(np.asarray(got), out["greedy_tokens"])
