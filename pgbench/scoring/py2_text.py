"""Python 2.7's `unicode` lower(), split() and strip(), as the official VQA script ran them.

GT-Vision-Lab's vqaEval.py is Python 2 code reading its answers with `json.load`, so every
answer is a `unicode` string and its string methods follow Python 2.7's Unicode 5.2 tables.
Python 3's differ in three ways that change VQA scores:
  - U+180E MONGOLIAN VOWEL SEPARATOR is whitespace in Python 2 (Unicode 6.3 made it a format
    character): it is stripped and splits words there, not here;
  - 404 letters gained lower-case mappings after Unicode 5.2 (Cherokee, Georgian Mtavruli,
    Latin Extended-D additions, Osage, Adlam, ...): Python 2 leaves them as they are;
  - Python 3's lower() applies full case mapping (U+0130 -> "i" + U+0307) and the Greek final
    sigma rule; Python 2 maps each character alone (U+0130 -> "i", every capital sigma -> σ).
ASCII text behaves identically in both, and takes the plain str methods.

`tools/make_vqa_golden.py --check-tables` compares both tables below with a Python 2
interpreter's; the golden VQA questions in tests/metrics/data/ exercise every entry.
"""

from __future__ import annotations

import re

# Every character Python 2.7's unicode.isspace() accepts (U+180E included).
WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u180e\u2000\u2001\u2002\u2003"
              "\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_SPACE_RUN = re.compile("[" + WHITESPACE + "]+")

# The code points Python 2.7's unicode.lower() changes, as hex runs FIRST-LAST[/STEP].
# Each maps to what Python 3 maps it to, except U+0130 (handled below).
_LOWERED_RUNS = """
41-5A C0-D6 D8-DE 100-136/2 139-147/2 14A-178/2 179-17D/2 181-182 184-186/2 187-189/2
18A-18B 18E-191 193-194 196-198 19C-19D 19F-1A0 1A2-1A6/2 1A7-1A9/2 1AC-1AE/2 1AF-1B1/2
1B2-1B3 1B5-1B7/2 1B8 1BC 1C4-1C5 1C7-1C8 1CA-1CB 1CD-1DB/2 1DE-1EE/2 1F1-1F2 1F4-1F6/2
1F7-1F8 1FA-232/2 23A-23B 23D-23E 241-243/2 244-246 248-24E/2 370-372/2 376 386-388/2
389-38A 38C-38E/2 38F-391/2 392-3A1 3A3-3AB 3CF 3D8-3EE/2 3F4 3F7-3F9/2 3FA 3FD-42F
460-480/2 48A-4C0/2 4C1-4CD/2 4D0-524/2 531-556 10A0-10C5 1E00-1E94/2 1E9E-1EFE/2 1F08-1F0F
1F18-1F1D 1F28-1F2F 1F38-1F3F 1F48-1F4D 1F59-1F5F/2 1F68-1F6F 1F88-1F8F 1F98-1F9F 1FA8-1FAF
1FB8-1FBC 1FC8-1FCC 1FD8-1FDB 1FE8-1FEC 1FF8-1FFC 2126 212A-212B 2132 2160-216F 2183
24B6-24CF 2C00-2C2E 2C60-2C62/2 2C63-2C64 2C67-2C6D/2 2C6E-2C70 2C72 2C75 2C7E-2C80
2C82-2CE2/2 2CEB-2CED/2 A640-A65E/2 A662-A66C/2 A680-A696/2 A722-A72E/2 A732-A76E/2
A779-A77D/2 A77E-A786/2 A78B FF21-FF3A 10400-10427
"""


def _expand(runs: str) -> frozenset[str]:
    out = set()
    for run in runs.split():
        span, _, step = run.partition("/")
        first, _, last = span.partition("-")
        out.update(chr(c) for c in range(int(first, 16), int(last or first, 16) + 1, int(step or 1)))
    return frozenset(out)


LOWERED = _expand(_LOWERED_RUNS)
_SIMPLE_LOWER = {"\u0130": "i"}  # Python 3 gives the full mapping "i\u0307"


def lower(text: str) -> str:
    """Python 2.7 unicode.lower(): simple per-character mapping, Unicode 5.2 letters only."""
    if text.isascii():
        return text.lower()
    return "".join(_SIMPLE_LOWER.get(c) or (c.lower() if c in LOWERED else c) for c in text)


def split(text: str) -> list[str]:
    """Python 2.7 unicode.split() with no separator."""
    if text.isascii():
        return text.split()
    return [w for w in _SPACE_RUN.split(text) if w]


def strip(text: str) -> str:
    """Python 2.7 unicode.strip() with no argument."""
    if text.isascii():
        return text.strip()
    return text.strip(WHITESPACE)
