"""Write tests/metrics/data/vqa_official_golden.json.gz: adversarial VQA questions scored by
the official GT-Vision-Lab `vqaEval.py`.

    python tools/make_vqa_golden.py --official-vqa-eval PATH/vqaEval.py --python2 PATH/python2.7

The official script is not part of pgbench: take `PythonEvaluationTools/vqaEvaluation/vqaEval.py`
from github.com/GT-Vision-Lab/VQA and keep it outside the repository. It is run UNMODIFIED under
a real Python 2 interpreter (no shims): the behaviour pgbench must reproduce is the script's as
Python 2 runs it (`re.UNICODE` landing in `count`, an ASCII-only `\\d`, Python 2's Unicode
tables for lower() / split() / strip()). Without a Python 2 interpreter this tool refuses to
run; pyenv (`pyenv install 2.7.18`) or any distribution's python2.7 will do.

The answers reach the script the way the official data does: through `json.load`, so as
Python 2 `unicode` strings. The harness (`benchmarks.metrics_bench.run_official_vqa`) feeds
them through two stand-in VQA objects and records each question's score before the script
rounds it (an override of `setEvalQA`, which receives the unrounded value).

The questions are built from a fixed seed, so rerunning with the same script gives the same
file. Format (gzip'd JSON): {"source": {...}, "strings": [str, ...], "questions":
[[prediction index, [answer indices], answer type, score repr], ...], "accuracy": repr,
"accuracy_by_type": {type: repr}}.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.metrics_bench import _find_python2, run_official_vqa  # noqa: E402
from pgbench.scoring.vqa import CONTRACTIONS, NUMBER_WORDS, PUNCTUATION  # noqa: E402

OUT = REPO_ROOT / "tests" / "metrics" / "data" / "vqa_official_golden.json.gz"
TYPES = ("yes/no", "number", "other")

# Whitespace in every Unicode flavour: Python 2's and 3's tables disagree on some (U+180E).
SPACES = ["\n", "\t", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0", "\u1680",
          "\u180e", "\u2000", "\u2003", "\u200b", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\ufeff"]
# Letters whose lower-casing differs between Unicode versions or between simple and full
# case mapping (U+0130, final sigma), digits that are `\d` only in Unicode regexes, and some
# ordinary non-ASCII text.
UNICODE_WORDS = ["café", "CAFÉ", "İstanbul", "İ", "ΣΑΣ", "ΟΔΟΣ", "Σ", "straße", "STRASSE", "ǅ", "ǈ",
                 "ᏣᏫᏗ", "ꮳꮻ", "Ა", "ᲐᲑ", "Ⰰ", "ꞵ", "Ꞵ", "ＡＢＣ", "ｔｗｏ", "２", "𐐀", "𐐨", "🙂", "e\u0301", "ﬁ",
                 "Ω", "K", "Å", "ℌ", "Ⅻ", "ⅻ", "½", "²", "٣", "٣,٤", "１,２", "٣.٤", "५", "۱,۲", "𝟏,𝟐",
                 "ǰ", "ΐ", "ẞ", "Ɐ", "ꟗ", "\u0345", "ᾈ", "Ǆ"]
NUMBER_LIKE = ["0", "1", "2", "10", "11", "1,000", "1000", "1 000", "1,000,000", "3.5", "3.50", ".5", "5.",
               "1.5.", "1,5", "a,1", "1,a", "1, 2", "1 ,2", "(1,2)", "red (1,2)", "2-3", "2 - 3", "$5", "5%",
               "12:30", "1/2", "1 / 2", "-1", "+1", "1e3", "one", "One", "ONE", "eleven", "twenty", "none",
               "None", "zero", "ten", "Ten.", "two!", "two?", "(two)", "two,three", "two, three", "a two"]
WORDS = ["yes", "no", "Yes", "NO", "yes.", "no!", "dog", "dogs", "the dog", "The Dog", "a dog", "an apple",
         "the", "a", "an", "A", "The", "the the", "a an the", "red", "red-blue", "red - blue", "red blue",
         "black/white", "black / white", "t-shirt", "t shirt", "mr. smith", "mr.smith", "u.s.a.", "etc.",
         "x.y.z", "..", "...", ".", "?", "!", "", " ", "hello\tworld", " yes\n", "it's", "its", "don't",
         "new york", "left", "right", "tennis", "frisbee", "skateboarding"]


def _punctuation_strings(rng: random.Random) -> list[str]:
    out = []
    for p in PUNCTUATION + (".", "'"):
        out += [p, f"a{p}b", f"a {p}b", f"a{p} b", f"a {p} b", f"{p}a", f"a{p}", f"{p}{p}", f"1{p}2",
                f"a{p}b 1,2", f"a{p}b{p}c", f"{p} a", f"two{p}", f"the{p}dog"]
    marks = "".join(PUNCTUATION) + ". '"
    for _ in range(250):  # random mixtures: the per-mark decision reads the input, the edits the output
        out.append("".join(rng.choice(marks + "ab1 ") for _ in range(rng.randint(1, 9))))
    return out


def _period_strings() -> list[str]:
    out = []
    for k in (1, 2, 16, 31, 32, 33, 34, 40, 64):
        out += ["x" + "." * k, "." * k, "." * k + "5", "a." * k, "1." * k, "a." * k + "1"]
    return out


def _contraction_strings() -> list[str]:
    # Every table key and value, as written and upper-cased (capitalised keys never match after
    # lower-casing; "somebody'd" maps to "somebodyd"), plus a few in sentences.
    out = []
    for k, v in CONTRACTIONS.items():
        out += [k, v, k.upper(), k.capitalize(), f"{k}!", f"i {k} know"]
    return out


def answer_pool(rng: random.Random) -> list[str]:
    pool = (WORDS + NUMBER_LIKE + UNICODE_WORDS + _punctuation_strings(rng) + _period_strings()
            + _contraction_strings() + [w for w in NUMBER_WORDS] + [w.capitalize() for w in NUMBER_WORDS])
    for s in SPACES:  # whitespace inside, around and alone
        pool += [f"{s}yes", f"yes{s}", f"two{s}dogs", f"the{s}dog", s, f"{s}{s}", f"a{s}", f"{s}-{s}"]
    return list(dict.fromkeys(pool))


def _mutate(rng: random.Random, s: str, pool: list[str]) -> str:
    """A near variant of s, so that normalisation decides whether two answers match."""
    r = rng.random()
    if r < 0.15:
        return s.upper()
    if r < 0.3:
        return rng.choice(["", " ", "\n", "\t", "\xa0", "\u180e"]) + s + rng.choice(["", " ", "\t", "\n", "\u3000"])
    if r < 0.45:
        return s + rng.choice(list(PUNCTUATION) + [".", "..", " .", "'"])
    if r < 0.55:
        return rng.choice(["the ", "a ", "an ", "The "]) + s
    if r < 0.7:
        return s.replace(" ", rng.choice(["  ", "\t", "-", "\u2003", "\u180e"]))
    return rng.choice(pool)


def questions(n: int, seed: int = 0):
    """n adversarial questions: (prediction, answers, answer type)."""
    rng = random.Random(seed)
    pool = answer_pool(rng)
    out = []
    # Every pool string once as the prediction against a disagreeing and an agreeing set.
    for s in pool:
        out.append((s, [s] * 5 + [_mutate(rng, s, pool) for _ in range(5)], rng.choice(TYPES)))
        out.append((_mutate(rng, s, pool), [s] * 10, rng.choice(TYPES)))
    while len(out) < n:
        main = rng.choice(pool)
        agree = rng.choice([10, 9, 8, 6, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0])
        size = rng.choice([10] * 8 + [1, 3, 5])  # VQAv2 has 10; the rule is defined for any count
        answers = [main] * min(agree, size)
        answers += [_mutate(rng, main, pool) for _ in range(size - len(answers))]
        rng.shuffle(answers)
        pred = rng.choice([main, _mutate(rng, main, pool), rng.choice(answers)])
        out.append((pred, answers, rng.choice(TYPES)))
    # Every letter Python 3 lower-cases, against its Python 3 lower case and itself: Python 2
    # lower-cases fewer of them (Unicode 5.2) and maps U+0130 and final sigmas differently.
    for c in map(chr, range(0x110000)):
        if not 0xD800 <= ord(c) <= 0xDFFF and c.lower() != c:
            out.append((c, [c.lower()] * 4 + [c] * 3 + ["x"] * 3, "other"))
    return out


# Python 2's own string tables, to check pgbench.scoring.py2_text against.
_TABLES = r"""
import json, sys
lower = dict((c, unichr(c).lower()) for c in range(sys.maxunicode + 1)
             if not 0xD800 <= c <= 0xDFFF and unichr(c).lower() != unichr(c))
space = [c for c in range(sys.maxunicode + 1) if unichr(c).isspace()]
print(json.dumps({"lower": lower, "space": space, "maxunicode": sys.maxunicode}))
"""


def check_tables(python2: str) -> None:
    """Fail unless pgbench's restatement of Python 2's lower()/isspace() is that interpreter's."""
    from pgbench.scoring import py2_text

    proc = subprocess.run([python2, "-c", _TABLES], capture_output=True, text=True, check=True)
    tables = json.loads(proc.stdout)
    if tables["maxunicode"] != 0x10FFFF:
        raise SystemExit(f"{python2} is a narrow (UCS-2) build: use a wide one, as Linux distributions ship")
    lower = {chr(int(k)): v for k, v in tables["lower"].items()}
    space = {chr(c) for c in tables["space"]}
    wrong = [c for c in lower if py2_text.lower(c) != lower[c]] + sorted(py2_text.LOWERED - set(lower))
    if wrong or space != set(py2_text.WHITESPACE):
        raise SystemExit(f"pgbench.scoring.py2_text disagrees with {python2}: lower() at "
                         f"{[hex(ord(c)) for c in wrong][:20]}, whitespace {sorted(space ^ set(py2_text.WHITESPACE))}")
    print(f"py2_text tables match {python2}: {len(lower)} lower-cased letters, {len(space)} spaces")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-vqa-eval", required=True, help="path to GT-Vision-Lab's vqaEval.py")
    ap.add_argument("--python2", help="a Python 2 interpreter (default: python2.7 / python2 on PATH)")
    ap.add_argument("--official-commit", default="", help="the GT-Vision-Lab/VQA commit the script came from")
    ap.add_argument("-n", type=int, default=4000, help="adversarial questions besides the per-letter ones")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    python2 = _find_python2(args.python2)
    if python2 is None:
        raise SystemExit("no Python 2 interpreter: pass --python2 PATH (e.g. pyenv's 2.7.18)")
    check_tables(python2)
    qs = questions(args.n)
    preds, refs, types = [q[0] for q in qs], [q[1] for q in qs], [q[2] for q in qs]
    script = Path(args.official_vqa_eval)
    off = run_official_vqa(script, preds, refs, types, python2, per_question=True, require_python2=True)
    strings = list(dict.fromkeys([*preds, *(a for r in refs for a in r)]))
    index = {s: i for i, s in enumerate(strings)}
    golden = {
        "source": {"script": "GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py",
                   "commit": args.official_commit,
                   "sha256": hashlib.sha256(script.read_bytes()).hexdigest(),
                   "how": off["how"], "python": off["python"],
                   "command": "python tools/make_vqa_golden.py --official-vqa-eval PATH/vqaEval.py "
                              "--python2 PATH/python2.7" + (f" --official-commit {args.official_commit}"
                                                            if args.official_commit else "")},
        "strings": strings,
        "questions": [[index[p], [index[a] for a in r], t, s]
                      for p, r, t, s in zip(preds, refs, types, off["per_question"])],
        "accuracy": off["accuracy"],
        "accuracy_by_type": off["types"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(golden, ensure_ascii=True, separators=(",", ":")).encode()
    # mtime=0: the same questions and scores give the same bytes.
    args.out.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    print(f"{len(qs)} questions, {len(strings)} distinct strings, accuracy {off['accuracy']} "
          f"({off['how']}, Python {off['python']}) -> {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
