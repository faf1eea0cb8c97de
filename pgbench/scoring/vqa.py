"""VQA accuracy (VQAv2, TextVQA, VizWiz): the GT-Vision-Lab rules, quirks included.

Official: GT-Vision-Lab/VQA `PythonEvaluationTools/vqaEvaluation/vqaEval.py` (Python 2).
big_vision: `big_vision/evaluators/proj/paligemma/transfers/vqav2.py` (same rules, two
quirks differ, see `normalize_big_vision`) and `.../transfers/vqa.py` (the "simple" mode).

Modes of `vqa_accuracy`:
  "official"   leave-one-out over the human answers, normalisation only when the answers
               disagree, normalisation exactly as the Python-2 script behaves (below).
  "big_vision" the same scoring with big_vision's vqav2 normalisation.
  "simple"     big_vision's vqa.py (OK-VQA, A-OKVQA): min(1, #matches / 3) on the raw strings,
               no stripping, no normalisation, no leave-one-out.
"""

from __future__ import annotations

import re

from pgbench.scoring import _inputs, py2_text

# The official punctuation list, in the official order (order matters: each character's
# delete-or-space decision is taken on the *input* text, the edits on the running output).
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
               ">", "<", "@", "`", ",", "?", "!")
ARTICLES = frozenset({"a", "an", "the"})
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
# The official contraction table (including its odd entries: the capitalised keys can never
# match after lower-casing, and "somebody'd" maps *to* "somebodyd").
CONTRACTIONS = dict(pair.split("=", 1) for pair in """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's
howd=how'd howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd
itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't
mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've
neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at
'ow'sat='ow's'at shant=shan't shed've=she'd've she'dve=she'd've she's=she's shouldve=should've
shouldnt=shouldn't shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd
somebodyd've=somebody'd've somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's
someoned=someone'd someoned've=someone'd've someone'dve=someone'd've someonell=someone'll
someones=someone's somethingd=something'd somethingd've=something'd've
something'dve=something'd've somethingll=something'll thats=that's thered=there'd
thered've=there'd've there'dve=there'd've therere=there're theres=there's theyd=they'd
theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas
wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll
whatre=what're whats=what's whatve=what've whens=when's whered=where'd wheres=where's
whereve=where've whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's
whove=who've whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't
wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll
yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've
you'dve=you'd've youll=you'll youre=you're youve=you've
""".split())
# One table for the word step: a word is mapped to a digit or a contraction, never both
# (no number word is a contraction key and no digit string is one either).
_WORD_MAP = {**CONTRACTIONS, **NUMBER_WORDS}

_ANY_PUNCT = re.compile("[" + re.escape("".join(PUNCTUATION)) + "]")
# The official script runs under Python 2 with patterns compiled without re.UNICODE, so its
# `\d` means [0-9] only; big_vision runs the same patterns under Python 3 where `\d` is any
# Unicode decimal digit.
_DIGIT_COMMA_ASCII = re.compile(r"[0-9],[0-9]")
_DIGIT_COMMA_UNICODE = re.compile(r"\d,\d")
# The official `(?!<=\d)(\.)(?!\d)`: its first group is a look-ahead for the literal "<=",
# which can never match where a "." stands, so only the trailing look-ahead has any effect.
_PERIOD_ASCII = re.compile(r"\.(?![0-9])")
_PERIOD_UNICODE = re.compile(r"\.(?!\d)")
# vqaEval.py calls `periodStrip.sub("", text, re.UNICODE)`: the flag lands in `count`, and
# re.UNICODE == 32, so at most 32 periods are removed.
_OFFICIAL_PERIOD_COUNT = 32


def _punctuation(text: str, digit_comma: re.Pattern, period: re.Pattern, count: int) -> str:
    out = text
    if _ANY_PUNCT.search(text) is not None:
        # The digit-comma-digit test is the same for every p: hoist it out of the loop.
        delete_all = digit_comma.search(text) is not None
        for p in PUNCTUATION:
            if p in out:  # replacing an absent character is a no-op
                if delete_all or (p + " ") in text or (" " + p) in text:
                    out = out.replace(p, "")
                else:
                    out = out.replace(p, " ")
    if "." in out:
        out = period.sub("", out, count)
    return out


def _words(text: str, py2: bool) -> str:
    out = []
    words = py2_text.split(py2_text.lower(text)) if py2 else text.lower().split()
    for word in words:
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            out.append(CONTRACTIONS.get(word, word))
    return " ".join(out)


def normalize_official(text: str) -> str:
    """vqaEval.py's processPunctuation then processDigitArticle, as run by Python 2
    (its lower() and split() included: see `py2_text`)."""
    return _words(_punctuation(text, _DIGIT_COMMA_ASCII, _PERIOD_ASCII, _OFFICIAL_PERIOD_COUNT), py2=True)


def normalize_big_vision(text: str) -> str:
    """big_vision's postprocess_vqav2_text: Unicode `\\d`, and every period is removed."""
    return _words(_punctuation(text, _DIGIT_COMMA_UNICODE, _PERIOD_UNICODE, 0), py2=False)


def _strip_py2(text: str) -> str:
    return py2_text.strip(text.replace("\n", " ").replace("\t", " "))


def _strip_py3(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


MODES = ("official", "big_vision", "simple")


def question_scores(predictions: list[str], references: list[list[str]],
                    mode: str = "official") -> list[float]:
    """Per-question VQA score in [0, 1]; inputs are assumed validated."""
    if mode == "simple":
        return [min(1.0, sum(r == p for r in refs) / 3.0) for p, refs in zip(predictions, references)]
    official = mode == "official"
    normalize = normalize_official if official else normalize_big_vision
    strip = _strip_py2 if official else _strip_py3
    # Answers repeat massively across a dataset ("yes", "2", ...): normalise each string once.
    strip_cache: dict[str, str] = {}
    norm_cache: dict[str, str] = {}

    def stripped(s: str) -> str:
        t = strip_cache.get(s)
        if t is None:
            t = strip_cache[s] = strip(s)
        return t

    def normed(s: str) -> str:
        t = norm_cache.get(s)
        if t is None:
            t = norm_cache[s] = normalize(s)
        return t

    scores = []
    for pred, refs in zip(predictions, references):
        answers = [stripped(r) for r in refs]
        pred = stripped(pred)
        first = answers[0]
        # Normalise only when the humans disagree (the official script's OCR safeguard).
        if any(a != first for a in answers):
            answers = [normed(a) for a in answers]
            pred = normed(pred)
        matches = sum(a == pred for a in answers)
        # Leave-one-out: answer i sees `matches - [a_i == pred]` agreeing others. Summed
        # left to right like the official list, so the float result is identical.
        hit = min(1, (matches - 1) / 3)
        miss = min(1, matches / 3)
        scores.append(sum([hit if a == pred else miss for a in answers]) / len(answers))
    return scores


def vqa_accuracy(predictions, references, answer_types=None, mode: str = "official") -> dict[str, float]:
    """Mean VQA accuracy, and per answer type when `answer_types` is given.

    Returns {"accuracy": float} plus {"accuracy/<type>": float}; unrounded (the official
    script reports round(100 * value, 2)).
    """
    predictions = _inputs.check_strings("predictions", predictions)
    references = _inputs.check_string_lists("references", references)
    mode = _inputs.check_choice("mode", mode, MODES)
    if answer_types is not None:
        answer_types = _inputs.check_strings("answer_types", answer_types)
    _inputs.check_same_length(predictions=predictions, references=references, answer_types=answer_types)
    scores = question_scores(predictions, references, mode)
    out = {"accuracy": sum(scores) / len(scores)}
    if answer_types is not None:
        by_type: dict[str, list[float]] = {}
        for t, s in zip(answer_types, scores):
            by_type.setdefault(t, []).append(s)
        for t, vals in by_type.items():
            out[f"accuracy/{t}"] = sum(vals) / len(vals)
    return out
