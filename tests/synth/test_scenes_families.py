"""Scenes draw what their specs say; the families' text is consistent with the scene."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pgbench.scoring import vqa
from pgbench.synth import families, scenes


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=20, deadline=None)
def test_objects_do_not_overlap_and_masks_are_what_is_painted(seed):
    rng = np.random.default_rng(seed)
    scene = scenes.sample_shape_scene(rng, 96)
    pixels = np.asarray(scenes.render_shapes(scene))
    masks = [scenes.polygon_mask(o.polygon(), scene.size) for o in scene.objects]
    assert not np.any(np.sum(masks, axis=0) > 1)  # disjoint
    for o, m in zip(scene.objects, masks):
        assert m.sum() > 20
        assert np.all(pixels[m] == scenes.COLORS[o.color])  # the mask is exactly the painted area
        x, y, w, h = o.bbox_xywh()
        ys, xs = np.nonzero(m)
        assert x - 1 <= xs.min() and xs.max() <= x + w + 1 and y - 1 <= ys.min() and ys.max() <= y + h + 1


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_canonical_answer_scores_full_vqa_accuracy(seed):
    """At least 5 of 10 annotators give the canonical answer, so it scores 1.0 under the
    official leave-one-out VQA accuracy whatever the other five said."""
    rng = np.random.default_rng(seed)
    record = families.sample_vqa(rng, 1, 96)
    for q in record["questions"]:
        assert len(q["answers"]) == 10
        assert vqa.vqa_accuracy([q["answer"]], [q["answers"]])["accuracy"] == 1.0


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_vqa_answers_are_true_of_the_scene(seed):
    rng = np.random.default_rng(seed)
    record = families.sample_vqa(rng, 1, 96, questions_per_image=10)
    objs = record["scene"].objects
    for q in record["questions"]:
        text, ans = q["question"], q["answer"]
        if text == "how many objects are there?":
            assert ans == str(len(objs))
        elif text.startswith("how many "):
            shape = text.split()[2][:-1]
            assert ans == str(sum(o.shape == shape for o in objs))
        elif text.startswith("what color is the "):
            shape = text[len("what color is the "):-1]
            assert [o.color for o in objs if o.shape == shape] == [ans]
        elif text.startswith("what shape is the "):
            color = text.split()[4]
            assert [o.shape for o in objs if o.color == color] == [ans]
        elif text.startswith("is there "):
            color, shape = text[:-1].split()[-2:]
            assert ans == ("yes" if any(o.name == f"{color} {shape}" for o in objs) else "no")


def test_relations():
    a = scenes.Shape("circle", "red", 20, 50, 10)
    b = scenes.Shape("square", "blue", 80, 50, 10)
    assert families.relation(a, b) == "left" and families.relation(b, a) == "right"
    c = scenes.Shape("square", "blue", 25, 90, 10)
    assert families.relation(a, c) == "above" and families.relation(c, a) == "below"
    d = scenes.Shape("square", "blue", 35, 58, 10)  # too close to say
    assert families.relation(a, d) is None


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_referring_expressions_name_one_object(seed):
    record = families.sample_refer(np.random.default_rng(seed), 1, 96)
    objs = record["scene"].objects
    for ref in record["refs"]:
        target = objs[ref["object"]]
        assert sum(o.name == target.name for o in objs) == 1
        for s in ref["sentences"]:
            assert target.shape in s
            if target.color not in s:  # "the circle": only when the shape alone is unique
                assert sum(o.shape == target.shape for o in objs) == 1


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=20, deadline=None)
def test_rsvqa_answers_follow_the_counts(seed):
    record = families.sample_rsvqa(np.random.default_rng(seed), 1, 96)
    counts = record["scene"].counts
    for q in record["questions"]:
        if q["type"] == "count":
            assert q["answer"].isdigit()
        elif q["type"] == "rural_urban":
            assert q["answer"] == ("urban" if record["scene"].urban else "rural")
        else:
            assert q["answer"] in ("yes", "no")
    assert set(counts) == {"field", "water", "road", "building"}


@pytest.mark.parametrize("family", sorted(families.SAMPLERS))
def test_every_family_renders_rgb(family):
    key = "0123456789abcdef" if family == "textvqa" else 7
    record = families.SAMPLERS[family](np.random.default_rng(0), key, 64)
    img = families.render(record)
    assert img.mode == "RGB" and img.size == (64, 64)


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_signs_sit_on_the_patch_grid_inside_their_band(seed):
    size = 128  # the default model's image size: both bands start on the grid
    scene = scenes.sample_sign_scene(np.random.default_rng(seed), size, families.SIGN_WORDS)
    band = size // len(scene.signs)
    for k, s in enumerate(scene.signs):
        x0, y0, x1, y1 = s.box
        assert x0 % scenes.SIGN_GRID == 0 and y0 % scenes.SIGN_GRID == 0
        assert 0 <= x0 and x1 <= size and k * band <= y0 and y1 <= (k + 1) * band
    # The same word at the same size has the same box size, so it falls the same way on the patches.
    again = scenes.sample_sign_scene(np.random.default_rng(seed + 1), size, families.SIGN_WORDS)
    for a in scene.signs:
        for b in again.signs:
            if a.text == b.text and a.font_size == b.font_size:
                assert (a.box[2] - a.box[0], a.box[3] - a.box[1]) == (b.box[2] - b.box[0], b.box[3] - b.box[1])
