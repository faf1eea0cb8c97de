"""The synthetic families: for each, sample one image's worth of examples as plain records.

Each ``sample_<family>(rng, image_id, size)`` returns a dict with the scene (plain data,
rendered later by :func:`render`) and the text: questions with their 10 human answers,
captions, referring expressions, ... The records follow the vocabulary of the benchmark
they imitate (VQAv2 ``answer_type``/``question_type``, RSVQA question ``type``, DocVQA
``question_types``) so the format writers only have to lay them out.

Human answers imitate annotators: the canonical answer at least 5 times out of 10 (so the
canonical answer scores the maximum under VQA accuracy, leave-one-out included), plausible
variants that VQA normalisation maps to it ("two" for "2", "Red" for "red", "a circle"),
and up to two wrong answers.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import PIL.Image

from pgbench.synth import scenes

Record = dict[str, Any]

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_SIDES = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def human_answers(rng: np.random.Generator, canonical: str, variants: list[str], wrong: list[str]) -> list[str]:
    """Ten annotator answers: ``canonical`` 5-10 times, then variants and at most two wrong
    ones, in a shuffled order."""
    n_canon = int(rng.integers(5, 11))
    n_wrong = min(10 - n_canon, int(rng.integers(0, 3))) if wrong else 0
    rest = 10 - n_canon - n_wrong
    pool = variants or [canonical]
    answers = [canonical] * n_canon + [_pick(rng, pool) for _ in range(rest)]
    answers += [_pick(rng, wrong) for _ in range(n_wrong)]
    return [answers[i] for i in rng.permutation(10)]


def _word_variants(word: str) -> list[str]:
    return [word, word.capitalize(), f"{article(word)} {word}", word + "."]


def _number_variants(n: int) -> list[str]:
    return [str(n), NUMBER_WORDS[n]] if n < len(NUMBER_WORDS) else [str(n)]


def relation(a: scenes.Shape, b: scenes.Shape) -> str | None:
    """Where ``a`` is relative to ``b`` when that is unambiguous: clear separation along one
    axis and less offset along the other. None otherwise."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    gap = a.r + b.r
    if abs(dx) > gap and abs(dx) > abs(dy):
        return "left" if dx < 0 else "right"
    if abs(dy) > gap and abs(dy) > abs(dx):
        return "above" if dy < 0 else "below"
    return None


def _unique(objs, key) -> list[scenes.Shape]:
    counts: dict[Any, int] = {}
    for o in objs:
        counts[key(o)] = counts.get(key(o), 0) + 1
    return [o for o in objs if counts[key(o)] == 1]


# --------------------------------------------------------------------------------------
# VQA on shape scenes (VQAv2 layout).


def _vqa_candidates(rng: np.random.Generator, scene: scenes.ShapeScene) -> list[dict]:
    objs = scene.objects
    cands = []
    for o in _unique(objs, lambda o: o.shape):
        wrong = [c for c in scenes.COLORS if c != o.color]
        cands.append(dict(question=f"what color is the {o.shape}?", answer=o.color, answer_type="other",
                          question_type="what color is the", variants=_word_variants(o.color), wrong=wrong))
    for o in _unique(objs, lambda o: o.color):
        wrong = [s for s in scenes.SHAPES if s != o.shape]
        cands.append(dict(question=f"what shape is the {o.color} object?", answer=o.shape, answer_type="other",
                          question_type="what shape is the", variants=_word_variants(o.shape), wrong=wrong))
    shape = _pick(rng, scenes.SHAPES)
    n = sum(o.shape == shape for o in objs)
    cands.append(dict(question=f"how many {shape}s are there?", answer=str(n), answer_type="number",
                      question_type="how many", variants=_number_variants(n),
                      wrong=[str(k) for k in range(5) if k != n]))
    n = len(objs)
    cands.append(dict(question="how many objects are there?", answer=str(n), answer_type="number",
                      question_type="how many", variants=_number_variants(n),
                      wrong=[str(k) for k in range(1, 6) if k != n]))
    present = bool(rng.random() < 0.5) and len(objs) > 0
    if present:
        o = _pick(rng, objs)
        color, shape = o.color, o.shape
    else:
        color, shape = _pick(rng, list(scenes.COLORS)), _pick(rng, scenes.SHAPES)
    ans = "yes" if any(o.color == color and o.shape == shape for o in objs) else "no"
    cands.append(dict(question=f"is there {article(color)} {color} {shape}?", answer=ans, answer_type="yes/no",
                      question_type="is there a", variants=[ans, ans.capitalize()],
                      wrong=["no" if ans == "yes" else "yes"]))
    named = _unique(objs, lambda o: o.name)
    pairs = [(a, b, relation(a, b)) for a in named for b in named if a is not b]
    pairs = [p for p in pairs if p[2] is not None]
    if pairs:
        a, b, side = _pick(rng, pairs)
        asked = side if rng.random() < 0.5 else _pick(rng, [s for s in _SIDES if s != side])
        ans = "yes" if asked == side else "no"
        cands.append(dict(question=f"is the {a.name} {_SIDES[asked]} the {b.name}?", answer=ans,
                          answer_type="yes/no", question_type="is the", variants=[ans, ans.capitalize()],
                          wrong=["no" if ans == "yes" else "yes"]))
    return cands


def sample_vqa(rng: np.random.Generator, image_id: int, size: int, questions_per_image: int = 3) -> Record:
    """An image with up to ``questions_per_image`` questions of different kinds."""
    scene = scenes.sample_shape_scene(rng, size)
    cands = _vqa_candidates(rng, scene)
    chosen = sorted(rng.choice(len(cands), size=min(questions_per_image, len(cands)), replace=False))
    qs = []
    for k, i in enumerate(chosen):
        c = cands[int(i)]
        qs.append(dict(question_id=image_id * 10 + k, question=c["question"], answer=c["answer"],
                       answers=human_answers(rng, c["answer"], c["variants"], c["wrong"]),
                       answer_type=c["answer_type"], question_type=c["question_type"]))
    return dict(image_id=image_id, scene=scene, questions=qs)


# --------------------------------------------------------------------------------------
# Captions (Karpathy layout): five captions per image.


def _listing(objs) -> str:
    names = [f"{article(o.color)} {o.name}" for o in objs]
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def captions_for(rng: np.random.Generator, scene: scenes.ShapeScene) -> list[str]:
    """Five different descriptions; objects listed left to right."""
    objs = sorted(scene.objects, key=lambda o: (o.cx, o.cy))
    n = len(objs)
    listing = _listing(objs)
    count = f"{NUMBER_WORDS[n]} shape{'s' if n > 1 else ''}"
    caps = [f"{listing} on a plain background", f"{count}: {listing}", f"there is {listing}",
            f"an image with {listing}", f"a picture of {count} on a light background"]
    if n >= 2 and (side := relation(objs[0], objs[1])) is not None:
        caps[2] = f"{article(objs[0].color)} {objs[0].name} {_SIDES[side]} {article(objs[1].color)} {objs[1].name}"
    if n == 1:
        caps[1] = f"a single {objs[0].name}"
    order = rng.permutation(5)
    return [caps[i] for i in order]


def sample_caption(rng: np.random.Generator, image_id: int, size: int) -> Record:
    scene = scenes.sample_shape_scene(rng, size)
    return dict(image_id=image_id, scene=scene, captions=captions_for(rng, scene))


# --------------------------------------------------------------------------------------
# Referring expressions (RefCOCO layout).


def referring_sentences(rng: np.random.Generator, scene: scenes.ShapeScene, target: scenes.Shape) -> list[str]:
    """Expressions that pick out ``target`` alone (its colour+shape is unique in the scene)."""
    sents = [f"the {target.name}", f"{target.name}"]
    if sum(o.shape == target.shape for o in scene.objects) == 1:
        sents.append(f"the {target.shape}")
    others = [(o, relation(target, o)) for o in scene.objects if o is not target]
    others = [(o, s) for o, s in others if s is not None]
    if others:
        o, side = _pick(rng, others)
        other = o.shape if sum(x.shape == o.shape for x in scene.objects) == 1 else o.name
        words = {"left": "left of", "right": "right of", "above": "above", "below": "below"}[side]
        sents.append(f"the {target.name} {words} the {other}")
    k = min(len(sents), int(rng.integers(2, 4)))
    return [sents[i] for i in sorted(rng.choice(len(sents), size=k, replace=False))]


def sample_refer(rng: np.random.Generator, image_id: int, size: int) -> Record:
    """One or two referred objects per image. ``refs[i]['object']`` indexes ``scene.objects``;
    every object of the scene is an annotation (instances.json lists them all)."""
    for _ in range(100):
        scene = scenes.sample_shape_scene(rng, size, min_objects=2, max_objects=4)
        named = [i for i, o in enumerate(scene.objects) if o in _unique(scene.objects, lambda x: x.name)]
        if named:
            break
    k = min(len(named), int(rng.integers(1, 3)))
    targets = sorted(int(i) for i in rng.choice(named, size=k, replace=False))
    refs = [dict(object=i, sentences=referring_sentences(rng, scene, scene.objects[i])) for i in targets]
    return dict(image_id=image_id, scene=scene, refs=refs)


# --------------------------------------------------------------------------------------
# Detection (`detect a ; b` prompts).


def sample_detection(rng: np.random.Generator, image_id: int, size: int) -> Record:
    """Prompt ``detect <shape> [; <shape>]`` over shapes present; objects = every instance of
    the asked shapes, in prompt order then top-to-bottom, left-to-right, as
    ``(label, (x0, y0, x1, y1) pixels)``."""
    scene = scenes.sample_shape_scene(rng, size)
    present = sorted({o.shape for o in scene.objects}, key=scenes.SHAPES.index)
    k = min(len(present), int(rng.integers(1, 3)))
    asked = [present[i] for i in sorted(rng.choice(len(present), size=k, replace=False))]
    objects = []
    for label in asked:
        for o in sorted((o for o in scene.objects if o.shape == label), key=lambda o: (o.cy, o.cx)):
            x, y, w, h = o.bbox_xywh()
            objects.append((label, (x, y, x + w, y + h)))
    return dict(image_id=image_id, scene=scene, labels=asked, objects=objects)


# --------------------------------------------------------------------------------------
# Scene text (TextVQA layout).

SIGN_WORDS = ["open", "stop", "cafe", "hotel", "bank", "exit", "pizza", "taxi", "books", "sale", "park",
              "bakery", "music", "shoes", "market", "garden", "museum", "school", "police", "cinema",
              "pharmacy", "station", "library", "dental", "salon", "bar", "gym", "zoo", "farm", "toys",
              "24", "42", "105", "7", "88", "360", "2019", "13"]


def _case_style(rng: np.random.Generator, word: str) -> str:
    return _pick(rng, [word, word.upper(), word.capitalize()])


def sign_words(rng: np.random.Generator) -> list[str]:
    """Every sign word in a letter case drawn for it (what a TextVQA scene picks from)."""
    return [_case_style(rng, w) for w in SIGN_WORDS]


def sample_textvqa(rng: np.random.Generator, image_id: str, size: int) -> Record:
    """Signs with one word each; answers are the lower-cased word (annotators also typed it
    as printed, or with a typo)."""
    scene = scenes.sample_sign_scene(rng, size, sign_words(rng))
    qs = []
    signs = scene.signs
    for k, s in enumerate(signs):
        word = s.text.lower()
        if len(signs) == 1:
            q = _pick(rng, ["what does the sign say?", "what is written on the sign?", "what word is on the sign?"])
        else:
            q = _pick(rng, [f"what is written on the {s.color} sign?",
                            f"what does the {'top' if k == 0 else 'bottom'} sign say?"])
        typo = word[:-1] if len(word) > 2 else word + word[-1]
        qs.append(dict(question=q, answer=word, answers=human_answers(rng, word, [word, s.text], [typo, "unanswerable"])))
    return dict(image_id=image_id, scene=scene, questions=qs)


# --------------------------------------------------------------------------------------
# Documents (DocVQA layout).

DOC_TITLES = ["INVOICE", "RECEIPT", "MEMO", "ORDER FORM", "REPORT", "STATEMENT", "LETTER", "NOTICE"]
_SURNAMES = ["Smith", "Brown", "Garcia", "Miller", "Davis", "Lopez", "Wilson", "Moore", "Clark", "Young"]
_CITIES = ["Boston", "Denver", "Austin", "Seattle", "Chicago", "Miami", "Portland", "Dallas"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]


def _doc_value(rng: np.random.Generator, key: str) -> tuple[str, list[str]]:
    """A value and the answers an annotator would accept for it."""
    if key == "Date":
        d, m, y = int(rng.integers(1, 29)), int(rng.integers(12)), int(rng.integers(1960, 2000))
        v = f"{_MONTHS[m]} {d}, {y}"
        return v, [v]
    if key == "Total":
        v = f"{int(rng.integers(1, 1000))}.{int(rng.integers(100)):02d}"
        return f"${v}", [f"${v}", v]
    if key == "Name":
        v = f"{chr(65 + int(rng.integers(26)))}. {_pick(rng, _SURNAMES)}"
        return v, [v]
    if key == "City":
        v = _pick(rng, _CITIES)
        return v, [v]
    if key == "Number":
        v = str(int(rng.integers(1000, 100000)))
        return v, [v]
    v = f"{int(rng.integers(200, 1000))}-{int(rng.integers(1000, 10000))}"  # Phone
    return v, [v]


_DOC_QUESTIONS = {"Date": "What is the date on the document?", "Total": "What is the total amount?",
                  "Name": "What is the name given on the document?", "City": "Which city is mentioned?",
                  "Number": "What is the number given?", "Phone": "What is the phone number?"}


def sample_docvqa(rng: np.random.Generator, doc_id: int, size: int) -> Record:
    """A page with a title and 3-4 fields; two questions (field values or the title)."""
    keys = [str(k) for k in rng.choice(list(_DOC_QUESTIONS), size=int(rng.integers(3, 5)), replace=False)]
    fields, answers = [], {}
    for k in keys:
        v, acc = _doc_value(rng, k)
        fields.append((k, v))
        answers[k] = acc
    title = _pick(rng, DOC_TITLES)
    doc = scenes.Document(size, title, tuple(fields))
    cands = [(_DOC_QUESTIONS[k], answers[k], ["form"]) for k in keys]
    cands.append(("What is the title of the document?", [title, title.lower()], ["layout"]))
    chosen = sorted(rng.choice(len(cands), size=2, replace=False))
    qs = [dict(question=cands[i][0], answers=cands[i][1], question_types=cands[i][2]) for i in chosen]
    return dict(doc_id=doc_id, document=doc, questions=qs)


# --------------------------------------------------------------------------------------
# Remote sensing (RSVQA-LR layout).

_RS_NAMES = {"road": ("a road", "roads"), "water": ("a water area", "water areas"),
             "building": ("a building", "buildings"), "field": ("a field", "fields")}


def sample_rsvqa(rng: np.random.Generator, image_id: int, size: int) -> Record:
    """Questions of the four RSVQA-LR types: presence, comp, rural_urban (answers yes/no,
    rural/urban) and count (numbers; dropped by the "nonum" splits)."""
    scene = scenes.sample_aerial_scene(rng, size)
    counts = scene.counts
    qs = []
    if rng.random() < 0.4:
        qs.append(dict(type="rural_urban", question="Is it a rural or an urban area",
                       answer="urban" if scene.urban else "rural"))
    # Presence and comparison answers are balanced: draw the answer first, then a question
    # with that answer when the tile has one (otherwise any question), so a blind guess
    # per type sits near 50 %.
    want = bool(rng.random() < 0.5)
    kinds = [str(k) for k in rng.permutation(list(_RS_NAMES))]
    kind = next((k for k in kinds if bool(counts[k]) == want), kinds[0])
    qs.append(dict(type="presence", question=_pick(rng, [f"Is there {_RS_NAMES[kind][0]}?",
                                                         f"Are there {_RS_NAMES[kind][1]}?"]),
                   answer="yes" if counts[kind] else "no"))
    want = bool(rng.random() < 0.5)
    comps = []
    for a, b in (kinds[i:i + 2] for i in range(0, 3)):
        comps.append((f"Are there more {_RS_NAMES[a][1]} than {_RS_NAMES[b][1]}?", counts[a] > counts[b]))
        comps.append((f"Is the number of {_RS_NAMES[a][1]} equal to the number of {_RS_NAMES[b][1]}?",
                      counts[a] == counts[b]))
    order = [int(i) for i in rng.permutation(len(comps))]
    q, ans = next((comps[i] for i in order if comps[i][1] == want), comps[order[0]])
    qs.append(dict(type="comp", question=q, answer="yes" if ans else "no"))
    kind = _pick(rng, ["building", "field", "road"])
    qs.append(dict(type="count", question=f"How many {_RS_NAMES[kind][1]} are there?", answer=str(counts[kind])))
    return dict(image_id=image_id, scene=scene, questions=qs, noise_seed=int(rng.integers(2**31)))


# --------------------------------------------------------------------------------------


def render(record: Record) -> PIL.Image.Image:
    """The record's image (RGB), drawn from its scene."""
    if "document" in record:
        return scenes.render_document(record["document"])
    scene = record["scene"]
    if isinstance(scene, scenes.ShapeScene):
        return scenes.render_shapes(scene)
    if isinstance(scene, scenes.SignScene):
        return scenes.render_signs(scene)
    return scenes.render_aerial(scene, np.random.default_rng(record["noise_seed"]))


SAMPLERS: dict[str, Callable[..., Record]] = {
    "vqav2": sample_vqa, "cococap": sample_caption, "refcoco_seg": sample_refer,
    "textvqa": sample_textvqa, "docvqa": sample_docvqa, "rsvqa_lr": sample_rsvqa,
    "detection": sample_detection,
}
