"""``decode.beam_decode`` against a plain-Python beam search over full (uncached)
forwards: the same W hypotheses per prompt, in the same order, with the same scores.
(tests/test_decode_beam.py checks scores of the returned beams; this checks the search.)"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from pgbench import decode
from pgbench.model import paligemma as pg
from tests.model._reference import load_case


def _prompts(inp):
    return (inp["decode_images"], inp["decode_tokens"], inp["decode_input_mask"],
            inp["decode_mask_ar"])


def reference_beam(model, inp, beam_size, steps, eos):
    """Hypotheses as Python lists; each step scores every live hypothesis with one full
    forward over [image, prompt, hypothesis] (no cache), log-softmax in float64. Step 0
    without the final soft-cap, later steps with it (big_vision's decode)."""
    images, tokens, mask, _ = _prompts(inp)
    b, t = tokens.shape
    w = beam_size
    cap = model.cfg.llm.final_logits_softcap
    n_img = model.cfg.num_image_tokens
    fwd = jax.jit(lambda *a: pg.forward(model, *a, final_softcap=False)[0])
    beams = [[([], 0.0, False)] for _ in range(b)]
    for step in range(steps):
        seq = np.zeros((b * w, t + steps), np.int32)
        valid = np.zeros_like(seq, bool)
        ar = np.ones_like(seq)
        last = np.zeros(b * w, int)
        for r in range(b):
            n = int(mask[r].sum())
            for j in range(w):
                hyp = beams[r][min(j, len(beams[r]) - 1)][0]
                row = r * w + j
                seq[row, :n] = tokens[r, :n]
                seq[row, n:n + len(hyp)] = hyp
                valid[row, :n + len(hyp)] = True
                ar[row, :n] = 0
                last[row] = n_img + n + len(hyp) - 1
        logits = np.asarray(fwd(np.repeat(images, w, 0), seq, valid, ar), np.float64)
        logits = logits[np.arange(b * w), last]
        if step > 0 and cap:
            logits = cap * np.tanh(logits / cap)
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        for r in range(b):
            cands = []
            for j, (hyp, score, done) in enumerate(beams[r]):
                if done:
                    cands.append((hyp, score, True))
                    continue
                for v in np.argsort(-logp[r * w + j])[:w]:
                    cands.append((hyp + [int(v)], score + logp[r * w + j, v], int(v) == eos))
            beams[r] = sorted(cands, key=lambda c: -c[1])[:w]
        if all(d for r in beams for _, _, d in r):
            break
    out = -np.ones((b, w, steps), np.int32)
    scores = np.zeros((b, w))
    for r in range(b):
        for j, (hyp, score, _) in enumerate(beams[r]):
            out[r, j, :len(hyp)] = hyp
            scores[r, j] = score
    return out, scores


@pytest.mark.parametrize("name", ["pg1_tiny", pytest.param("pg2_tiny", marks=pytest.mark.slow)])
def test_matches_python_beam_search(name):
    model, _, _, inp, out, _ = load_case(name)
    steps, w = 8, 4  # the shapes of test_decode_beam.py: the compiled search is shared
    # EOS = a token the greedy path emits at step 1: some hypotheses finish early
    eos = int(out["greedy_tokens"][0, 1])
    got = decode.beam_decode(model, *_prompts(inp), beam_size=w, max_new_tokens=steps,
                             eos_id=eos)
    want, want_scores = reference_beam(model, inp, w, steps, eos)
    np.testing.assert_array_equal(np.asarray(got.beams), want)
    np.testing.assert_allclose(np.asarray(got.scores), want_scores, atol=2e-4)
    np.testing.assert_array_equal(np.asarray(got.tokens), want[:, 0])
