"""COCO caption scores through pycocoevalcap (CIDEr-D, BLEU-1..4, ROUGE-L, METEOR).

Nothing here reimplements a score: captions are tokenised with pycocoevalcap's PTBTokenizer
(Stanford CoreNLP, Java) and scored with its `Bleu(4)`, `Meteor`, `Rouge` and `Cider` classes,
exactly as `pycocoevalcap.eval.COCOEvalCap` does. Examples are identified by position.
SPICE is left out (it needs a model download).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import shutil

from pgbench.errors import PgbenchError
from pgbench.scoring import _inputs


class JavaMissingError(PgbenchError):
    """pycocoevalcap's tokenizer and METEOR need a Java runtime."""


def require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise JavaMissingError(
            "coco_caption needs a Java runtime: pycocoevalcap's PTBTokenizer and METEOR run "
            "`java`, which is not on PATH. Install a JRE (e.g. `apt-get install default-jre-headless`; "
            "`make install` runs tools/ensure_java.sh to do this) and try again.")
    return java


def coco_caption(predictions, references) -> dict[str, float]:
    """{"cider", "bleu_1".."bleu_4", "rouge_l", "meteor"} for one caption per example."""
    predictions = _inputs.check_strings("predictions", predictions)
    references = _inputs.check_string_lists("references", references)
    _inputs.check_same_length(predictions=predictions, references=references)
    require_java()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = {i: [{"caption": r} for r in refs] for i, refs in enumerate(references)}
    res = {i: [{"caption": p}] for i, p in enumerate(predictions)}
    tokenizer = PTBTokenizer()
    # Same package calls as COCOEvalCap, overlapped: the Java work (the two tokenisations,
    # METEOR's start-up and scoring) runs in threads that mostly wait on subprocess pipes,
    # while this thread computes BLEU, ROUGE-L and CIDEr in Python. Every scorer is
    # deterministic and sees the same tokenised dicts, so the values do not change.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        meteor_scorer = pool.submit(Meteor)
        gts_future = pool.submit(tokenizer.tokenize, gts)
        res = tokenizer.tokenize(res)
        gts = gts_future.result()
        meteor_future = pool.submit(lambda g=gts, r=res: meteor_scorer.result().compute_score(g, r))
        with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its n-gram counts
            bleu, _ = Bleu(4).compute_score(gts, res)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
        meteor, _ = meteor_future.result()
    out = {f"bleu_{n + 1}": float(b) for n, b in enumerate(bleu)}
    out.update(meteor=float(meteor), rouge_l=float(rouge), cider=float(cider))
    return out
