"""Beam search: beam 1 is greedy; every returned beam's score is the summed log-prob of
its tokens recomputed by an independent full forward (no cache)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from pgbench import decode
from pgbench.errors import InputError
from pgbench.model import paligemma as pg
from tests.model._reference import load_case


def _batch(inp, rows=slice(None)):
    return (inp["decode_images"][rows], inp["decode_tokens"][rows],
            inp["decode_input_mask"][rows], inp["decode_mask_ar"][rows])


@pytest.fixture(scope="module")
def pg1():
    model, _, _, inp, out, _ = load_case("pg1_tiny")
    return model, inp, out


def test_beam_one_is_greedy(pg1):
    model, inp, out = pg1
    got = decode.beam_decode(model, *_batch(inp), max_new_tokens=8, beam_size=1)
    np.testing.assert_array_equal(np.asarray(got.tokens), out["greedy_tokens"])
    np.testing.assert_allclose(np.asarray(got.score), out["greedy_logp"].sum(1), atol=1e-4)


def _rescore(model, inp, beams, eos_id):
    """Summed log-probs of each beam through one uncached, right-padded forward:
    step 0 without the final soft-cap (prefill), later steps with it."""
    images, tokens, mask, _ = _batch(inp)
    b, w, k = beams.shape
    t = tokens.shape[1]
    seq = np.zeros((b * w, t + k), np.int32)
    flags = np.ones((b * w, t + k), np.int32)
    valid = np.zeros((b * w, t + k), bool)
    spans = []
    for row in range(b):
        prompt = tokens[row][mask[row]]
        for j in range(w):
            gen = beams[row, j][beams[row, j] >= 0]
            n = len(prompt)
            r = row * w + j
            seq[r, :n + len(gen)] = np.concatenate([prompt, gen])
            flags[r, :n] = 0
            valid[r, :n + len(gen)] = True
            spans.append((n, gen))
    fwd = jax.jit(pg.forward, static_argnames="final_softcap")
    imgs = np.repeat(images, w, axis=0)
    raw = np.asarray(fwd(model, imgs, seq, valid, flags, final_softcap=False)[0], np.float64)
    capped = np.asarray(fwd(model, imgs, seq, valid, flags)[0], np.float64)
    n_img = model.cfg.num_image_tokens
    scores = np.zeros(b * w)
    for r, (n, gen) in enumerate(spans):
        for i, tok in enumerate(gen):
            lg = (raw if i == 0 else capped)[r, n_img + n - 1 + i]
            lse = lg.max() + np.log(np.exp(lg - lg.max()).sum())
            scores[r] += lg[tok] - lse
    return scores.reshape(b, w)


@pytest.mark.parametrize("eos_from_greedy", [pytest.param(False, marks=pytest.mark.slow), True])
def test_beam_scores_match_an_uncached_rescoring(pg1, eos_from_greedy):
    model, inp, out = pg1
    # with EOS = a token greedy emits mid-way, some beams finish early and stop scoring
    eos = int(out["greedy_tokens"][0, 2]) if eos_from_greedy else 1
    got = decode.beam_decode(model, *_batch(inp), max_new_tokens=8, beam_size=4, eos_id=eos)
    beams, scores = np.asarray(got.beams), np.asarray(got.scores)
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first
    for row in beams.reshape(-1, beams.shape[-1]):  # -1 only after an EOS
        live = row >= 0
        if not live.all():
            end = np.flatnonzero(~live)[0]
            assert row[end - 1] == eos and not live[end:].any()
    np.testing.assert_allclose(scores, _rescore(model, inp, beams, eos), atol=2e-4)
    if eos_from_greedy:
        assert (beams == -1).any()
    else:  # here the wider search finds better sequences than greedy
        assert np.all(scores[:, 0] > out["greedy_logp"].sum(1))


@pytest.mark.slow
def test_beam_batch_equals_single_rows(pg1):
    model, inp, _ = pg1
    both = decode.beam_decode(model, *_batch(inp), max_new_tokens=6, beam_size=3)
    for row in range(2):
        one = decode.beam_decode(model, *_batch(inp, slice(row, row + 1)), max_new_tokens=6,
                                 beam_size=3)
        np.testing.assert_array_equal(np.asarray(one.beams)[0], np.asarray(both.beams)[row])


def test_bad_beam_size_is_rejected(pg1):
    model, inp, _ = pg1
    with pytest.raises(InputError, match="beam_size"):
        decode.beam_decode(model, *_batch(inp), max_new_tokens=2, beam_size=0)
