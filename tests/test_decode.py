"""Cached decoding against big_vision's greedy decode (prefill + extend_cache).

Tokens must match exactly; log-probs within the case tolerance relative to the largest
decode logit (case.json ``relative_to_max_abs`` × max|decode_logits|).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgbench import decode
from pgbench.errors import InputError
from tests.model._reference import CASES, load_case, tolerance


def _batch(inp, rows=slice(None)):
    return (inp["decode_images"][rows], inp["decode_tokens"][rows],
            inp["decode_input_mask"][rows], inp["decode_mask_ar"][rows])


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    model, cfg, header, inp, out, _ = load_case(request.param)
    result = decode.decode(model, *_batch(inp), max_new_tokens=out["greedy_tokens"].shape[1])
    return dict(model=model, cfg=cfg, header=header, inp=inp, out=out, result=result,
                name=request.param)


def test_greedy_tokens_match_big_vision(case):
    np.testing.assert_array_equal(np.asarray(case["result"].tokens), case["out"]["greedy_tokens"])


def test_greedy_logp_match_big_vision(case):
    """Step 0's log-probs come from un-capped prefill logits, later ones from capped
    extend logits; a mix-up would shift them by far more than the tolerance."""
    out = case["out"]
    live = out["greedy_tokens"] >= 0
    got = np.asarray(case["result"].logp)
    bound = tolerance(case["header"]) * np.max(np.abs(out["decode_logits"]))
    assert np.max(np.abs(got - out["greedy_logp"])[live]) <= bound
    assert np.all(got[~live] == 0)


def test_same_shapes_reuse_the_compiled_loop(case):
    """New prompts, images and EOS id of the same shapes: no new trace."""
    inp, out = case["inp"], case["out"]
    before = decode._decode._cache_size()
    images, tokens, mask, ar = _batch(inp)
    k = out["greedy_tokens"].shape[1]
    again = decode.decode(case["model"], images[::-1], tokens[::-1], mask[::-1], ar[::-1],
                          max_new_tokens=k, eos_id=7)
    assert decode._decode._cache_size() == before
    # reversing the batch reverses the answer (EOS 7 never occurs in these outputs)
    assert not np.any(np.asarray(again.tokens) == 7)
    raw = out["bv_decode_tokens"]
    np.testing.assert_array_equal(np.asarray(again.tokens), raw[::-1])


def test_minus_one_after_the_first_eos(case):
    """Pick as EOS a token that row 0 generates mid-way: the row ends there (EOS kept),
    the other row is cut only where it emits that token itself."""
    raw = case["out"]["bv_decode_tokens"]
    eos = int(raw[0, 2])
    got = np.asarray(decode.decode(case["model"], *_batch(case["inp"]),
                                   max_new_tokens=raw.shape[1], eos_id=eos).tokens)
    for row in range(raw.shape[0]):
        hits = np.flatnonzero(raw[row] == eos)
        end = hits[0] + 1 if hits.size else raw.shape[1]
        np.testing.assert_array_equal(got[row, :end], raw[row, :end])
        assert np.all(got[row, end:] == -1)


@pytest.mark.parametrize("name", ["pg1_tiny", pytest.param("pg2_tiny", marks=pytest.mark.slow)])
def test_bfloat16_cache_matches_big_vision_default(name):
    model, _, _, inp, out, _ = load_case(name)
    got = decode.decode(model, *_batch(inp),
                        max_new_tokens=out["greedy_tokens_bf16cache"].shape[1],
                        cache_dtype=jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(got.tokens), out["greedy_tokens_bf16cache"])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_batch_equals_single_rows(name):
    """Each prompt decoded alone gives its row of the batched result."""
    model, _, _, inp, out, _ = load_case(name)
    want = out["greedy_tokens"]
    for row in range(want.shape[0]):
        got = decode.greedy_decode(model, *_batch(inp, slice(row, row + 1)),
                                   max_new_tokens=want.shape[1])
        np.testing.assert_array_equal(np.asarray(got)[0], want[row])


@pytest.mark.slow
def test_sampling():
    """top_k=1 is greedy whatever the key; a key fixes the sample; keys differ."""
    model, _, _, inp, out, _ = load_case("pg1_tiny")
    k = out["greedy_tokens"].shape[1]
    top1 = decode.sample_decode(model, *_batch(inp), key=jax.random.key(3), max_new_tokens=k,
                                top_k=1, temperature=2.0)
    np.testing.assert_array_equal(np.asarray(top1), out["greedy_tokens"])
    hot = dict(max_new_tokens=k, temperature=5.0, top_p=0.99)
    a = decode.sample_decode(model, *_batch(inp), key=jax.random.key(0), **hot)
    b = decode.sample_decode(model, *_batch(inp), key=jax.random.key(0), **hot)
    c = decode.sample_decode(model, *_batch(inp), key=jax.random.key(1), **hot)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert np.all((np.asarray(a) >= -1) & (np.asarray(a) < model.cfg.llm.vocab_size))


def test_select_top_k_and_top_p_restrict_the_support():
    """The sampler's filters, on a known distribution: many draws, never outside."""
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]], jnp.float32)).repeat(2000, axis=0)
    select = jax.jit(decode._select, static_argnames="sampler")  # eager ops compile one by one
    for sampler, allowed in [(decode.Sampler("sample", 1.0, 2, 1.0), {0, 1}),
                             (decode.Sampler("sample", 1.0, 0, 0.7), {0, 1}),
                             (decode.Sampler("sample", 1.0, 0, 0.81), {0, 1, 2})]:
        tok, logp = select(logits, jax.random.key(0), sampler)
        seen = set(np.unique(np.asarray(tok)).tolist())
        assert seen == allowed, (sampler, seen)
        np.testing.assert_allclose(np.asarray(logp), np.log([0.5, 0.3, 0.15, 0.05])[np.asarray(tok)],
                                   rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=4, sampler=decode.Sampler("beam")), "sampler kind"),
    (dict(max_new_tokens=4, sampler=decode.Sampler("sample")), "PRNG key"),
])
def test_bad_arguments_are_rejected(kwargs, match):
    model, _, _, inp, _, _ = load_case("pg1_tiny")
    with pytest.raises(InputError, match=match):
        decode.decode(model, *_batch(inp), **kwargs)


def test_mismatched_shapes_are_rejected():
    model, _, _, inp, _, _ = load_case("pg1_tiny")
    images, tokens, mask, ar = _batch(inp)
    with pytest.raises(InputError, match="share one"):
        decode.decode(model, images, tokens, mask[:, :-1], ar, max_new_tokens=2)
    with pytest.raises(InputError, match="images for"):
        decode.decode(model, images[:1], tokens, mask, ar, max_new_tokens=2)
