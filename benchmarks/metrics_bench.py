"""Metric scoring speed: pgbench's evaluate modules vs the official implementations.

  VQA:      200,000 VQAv2-style questions (10 human answers each) scored by
            `metrics/vqa_accuracy` and by GT-Vision-Lab's `vqaEval.py` (target: >= 5x faster,
            and the same accuracy to the last bit).
  Captions: 40,000 captions (5 references each) through `metrics/coco_caption` and through
            pycocoevalcap called directly (target: no slower, same scores).

The official VQA script is not part of pgbench. Point the benchmark at a copy of
`PythonEvaluationTools/vqaEvaluation/vqaEval.py` from github.com/GT-Vision-Lab/VQA with
`--official-vqa-eval PATH` (or PGBENCH_OFFICIAL_VQAEVAL). It is a Python 2 script: it runs
unmodified under a Python 2 interpreter (`--python2 PATH`, PGBENCH_PYTHON2, or `python2.7` on
PATH); without one, it runs under this Python 3 after a mechanical rewrite of its `print`
statements (the only Python-2-only syntax in it), done in a temporary directory and labelled
as such in the results. Only `VQAEval.evaluate()` is timed, with its progress output discarded.

    python -m benchmarks.metrics_bench [--quick] [--official-vqa-eval PATH] [--python2 PATH]

Figures go to benchmarks/results/metrics.json and metrics.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
FULL = {"vqa": 200_000, "captions": 40_000}
QUICK = {"vqa": 5_000, "captions": 200}

# ----------------------------------------------------------------------------- data

_YESNO = ["yes", "no", "Yes", "no.", "yes!", "nope"]
_NUMBER = ["2", "two", "Two", "3", "three", "1,000", "1000", "10", "ten", "0", "none", "1.5", "4 ", "5\n"]
_OTHER = ["red", "the dog", "dog", "a dog", "dogs", "dont know", "don't know", "tennis", "frisbee",
          "blue and white", "blue, white", "black/white", "cat.", "café", "left", "t-shirt", "t shirt",
          "(maybe)", "mr. smith", "new york", "pizza", "grass", "skateboarding", "baseball bat"]


def vqa_data(n: int, seed: int = 0):
    """n questions: predictions, 10 answers each, answer types (VQAv2-like mix and agreement)."""
    rng = random.Random(seed)
    preds, refs, types = [], [], []
    for _ in range(n):
        r = rng.random()
        kind, pool = ("yes/no", _YESNO) if r < 0.38 else ("number", _NUMBER) if r < 0.5 else ("other", _OTHER)
        main = rng.choice(pool)
        agree = rng.choice([10, 10, 9, 8, 7, 5, 3, 2])
        answers = [main] * agree + [rng.choice(pool) for _ in range(10 - agree)]
        rng.shuffle(answers)
        pred = main if rng.random() < 0.6 else rng.choice(pool)
        preds.append(pred); refs.append(answers); types.append(kind)
    return preds, refs, types


_WORDS = ("a man woman dog cat two three red blue green small large riding sitting standing on in "
          "with near the of street field table plate pizza bus train surfboard wave frisbee park "
          "kitchen bed room grass water sky building tree people group playing holding eating").split()


def caption_data(n: int, seed: int = 0):
    rng = random.Random(seed)
    sentence = lambda: " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 13))).capitalize() + "."  # noqa: E731
    preds = [sentence() for _ in range(n)]
    refs = [[sentence() for _ in range(5)] for _ in range(n)]
    return preds, refs

# ----------------------------------------------------------------------------- official VQA

# The harness around the official class (ours): feeds it the data through two stand-in VQA
# objects, records the unrounded mean it computes, times `evaluate()`. Python 2 and 3.
_DRIVER = r'''
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from vqaEval import VQAEval

class QA(object):
    def __init__(self, qa):
        self.qa = qa
    def getQuesIds(self):
        return sorted(self.qa)

data = json.load(open(sys.argv[2]))
gts, res = {}, {}
for i, (pred, answers, kind) in enumerate(zip(data["preds"], data["refs"], data["types"])):
    gts[i] = {"question_type": "q", "answer_type": kind,
              "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                          for k, a in enumerate(answers)]}
    res[i] = {"answer": pred}

class Recording(VQAEval):
    per_question = {}
    def setEvalQA(self, quesId, acc):
        self.per_question[quesId] = acc
        VQAEval.setEvalQA(self, quesId, acc)
    def setAccuracy(self, accQA, accQuesType, accAnsType):
        self.raw = float(sum(accQA)) / len(accQA)
        self.raw_types = dict((k, float(sum(v)) / len(v)) for k, v in accAnsType.items())
        VQAEval.setAccuracy(self, accQA, accQuesType, accAnsType)

ev = Recording(QA(gts), QA(res), n=2)
real_stdout = sys.stdout
sys.stdout = open(os.devnull, "w")
t0 = time.time()
ev.evaluate()
seconds = time.time() - t0
sys.stdout = real_stdout
out = {"seconds": seconds, "accuracy": repr(ev.raw),
       "types": dict((k, repr(v)) for k, v in ev.raw_types.items()),
       "reported": ev.accuracy["overall"], "python": sys.version.split()[0]}
if len(sys.argv) > 3 and sys.argv[3] == "--per-question":
    out["per_question"] = [repr(ev.per_question[i]) for i in range(len(data["preds"]))]
print(json.dumps(out))
'''


def _find_python2(explicit: str | None) -> str | None:
    for cand in [explicit, os.environ.get("PGBENCH_PYTHON2"), shutil.which("python2.7"), shutil.which("python2")]:
        if not cand:
            continue
        try:  # pyenv shims exist on PATH even when they refuse to run
            ok = subprocess.run([cand, "-c", "import sys; assert sys.version_info[0] == 2"],
                                capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return cand
    return None


def run_official_vqa(official: Path, preds, refs, types, python2: str | None, *,
                     per_question: bool = False, require_python2: bool = False) -> dict:
    """Score with the official VQAEval.evaluate(); unrounded values as repr() strings.

    per_question: also return "per_question", each question's unrounded score (the value
    the script passes to setEvalQA before rounding it). require_python2: fail rather than
    fall back to the Python 3 rewrite (whose `\\d` is Unicode, unlike the script's).
    """
    with tempfile.TemporaryDirectory(prefix="pgbench-official-vqa-") as tmp:
        tmp = Path(tmp)
        src = official.read_text(encoding="utf-8")
        interpreter = _find_python2(python2)
        if interpreter is None and require_python2:
            raise RuntimeError("no Python 2 interpreter found: pass --python2 PATH (or set PGBENCH_PYTHON2)")
        if interpreter is None:
            # Python 3 fallback: only the two `print "..."` statements need rewriting.
            src = re.sub(r'^(\s*)print "(.*)"\s*$', r'\1print("\2")', src, flags=re.M)
            label = "vqaEval.py under Python 3 (print statements rewritten, nothing else)"
            interpreter = sys.executable
        else:
            label = "vqaEval.py unmodified under Python 2"
        (tmp / "vqaEval.py").write_text(src, encoding="utf-8")
        (tmp / "driver.py").write_text(_DRIVER, encoding="utf-8")
        (tmp / "data.json").write_text(json.dumps({"preds": preds, "refs": refs, "types": types}), encoding="utf-8")
        cmd = [interpreter, str(tmp / "driver.py"), str(tmp), str(tmp / "data.json")]
        proc = subprocess.run(cmd + (["--per-question"] if per_question else []), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"official VQA evaluation failed:\n{proc.stderr[-2000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["how"] = label
        return out

# ----------------------------------------------------------------------------- ours

def _load(name: str):
    import evaluate
    return evaluate.load(str(REPO_ROOT / "metrics" / name))


def bench_vqa(n: int, official: Path | None, python2: str | None) -> dict:
    preds, refs, types = vqa_data(n)
    t = time.perf_counter()
    metric = _load("vqa_accuracy")
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    ours = metric.compute(predictions=preds, references=refs, answer_types=types)
    ours_s = time.perf_counter() - t
    out = {"n": n, "refs_per_question": 10, "pgbench_seconds": ours_s, "pgbench_load_seconds": load_s,
           "pgbench_accuracy": ours["accuracy"]}
    if official is None:
        out["official"] = "skipped: pass --official-vqa-eval PATH (GT-Vision-Lab vqaEval.py)"
        return out
    off = run_official_vqa(official, preds, refs, types, python2)
    out.update(official_seconds=off["seconds"], official_how=off["how"], official_python=off["python"],
               official_accuracy=float(off["accuracy"]), official_reported=off["reported"],
               speedup=off["seconds"] / ours_s,
               identical=float(off["accuracy"]) == ours["accuracy"]
               and all(float(v) == ours[f"accuracy/{k}"] for k, v in off["types"].items()))
    return out


def _pycocoevalcap_direct(preds, refs) -> dict:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
    res = tok.tokenize({i: [{"caption": p}] for i, p in enumerate(preds)})
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res)
    return {"bleu_4": bleu[3], "meteor": Meteor().compute_score(gts, res)[0],
            "rouge_l": Rouge().compute_score(gts, res)[0], "cider": Cider().compute_score(gts, res)[0]}


def bench_captions(n: int) -> dict:
    if shutil.which("java") is None:
        return {"n": n, "skipped": "java not on PATH (pycocoevalcap needs it)"}
    preds, refs = caption_data(n)
    metric = _load("coco_caption")
    t = time.perf_counter()
    direct = _pycocoevalcap_direct(preds, refs)
    direct_s = time.perf_counter() - t
    t = time.perf_counter()
    ours = metric.compute(predictions=preds, references=refs)
    ours_s = time.perf_counter() - t
    return {"n": n, "refs_per_caption": 5, "pgbench_seconds": ours_s, "pycocoevalcap_seconds": direct_s,
            "ratio_pgbench_over_direct": ours_s / direct_s,
            "identical": all(ours[k] == v for k, v in direct.items()),
            "pgbench_cider": ours["cider"], "pgbench_bleu_4": ours["bleu_4"]}

# ----------------------------------------------------------------------------- report

def _machine() -> dict:
    from benchmarks.machine import _cpu_model

    import evaluate
    import pycocotools

    java = shutil.which("java")
    java_v = ""
    if java:
        java_v = subprocess.run([java, "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    from importlib.metadata import version
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "evaluate": evaluate.__version__, "pycocoevalcap": version("pycocoevalcap"),
            "pycocotools": getattr(pycocotools, "__version__", version("pycocotools")), "java": java_v,
            "load_average": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _markdown(res: dict) -> str:
    v, c = res["vqa"], res["captions"]
    lines = [f"# Metric scoring speed ({res['mode']})", "",
             f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores, load average "
             f"{res['machine']['load_average']:.1f}, Python {res['machine']['python']}, "
             f"evaluate {res['machine']['evaluate']}, pycocoevalcap {res['machine']['pycocoevalcap']}, "
             f"{res['machine']['java']}; {res['machine']['date']}.", "",
             "| task | size | pgbench (s) | reference (s) | reference | ratio | same values |",
             "|---|---|---|---|---|---|---|"]
    if "official_seconds" in v:
        lines.append(f"| VQA accuracy | {v['n']:,} q x 10 answers | {v['pgbench_seconds']:.2f} | "
                     f"{v['official_seconds']:.2f} | {v['official_how']} (Python {v['official_python']}) | "
                     f"{v['speedup']:.1f}x faster | {v['identical']} |")
    else:
        lines.append(f"| VQA accuracy | {v['n']:,} | {v['pgbench_seconds']:.2f} | - | {v['official']} | - | - |")
    if "pycocoevalcap_seconds" in c:
        lines.append(f"| COCO captions | {c['n']:,} x 5 refs | {c['pgbench_seconds']:.2f} | "
                     f"{c['pycocoevalcap_seconds']:.2f} | pycocoevalcap called directly | "
                     f"{c['ratio_pgbench_over_direct']:.2f}x the time | {c['identical']} |")
    else:
        lines.append(f"| COCO captions | {c['n']:,} | - | - | {c['skipped']} | - | - |")
    lines += ["", "pgbench times are `evaluate.load(...).compute(...)` on Python lists (module load "
              f"excluded: {v['pgbench_load_seconds']:.2f} s); the official VQA time is `VQAEval.evaluate()` only.", ""]
    return "\n".join(lines)


def run(results: dict, quick: bool = False, official_vqa_eval: str | None = None,
        python2: str | None = None, write: bool = True, captions: bool | None = None,
        out_dir: Path = RESULTS) -> dict:
    """Run both benchmarks, store them under results["metrics"], write the result files.

    quick: small sizes; captions are then skipped unless `captions=True`, because starting
    METEOR's JVM (it loads its paraphrase tables) takes 10-40 s per run by itself.
    """
    sizes = QUICK if quick else FULL
    if captions is None:
        captions = not quick
    official = official_vqa_eval or os.environ.get("PGBENCH_OFFICIAL_VQAEVAL")
    out = {"mode": "quick" if quick else "full", "machine": _machine(),
           "vqa": bench_vqa(sizes["vqa"], Path(official) if official else None, python2),
           "captions": bench_captions(sizes["captions"]) if captions else
           {"n": sizes["captions"], "skipped": "quick mode (METEOR's JVM start alone is 10-40 s); pass --captions"}}
    results["metrics"] = out
    if write:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        suffix = "_quick" if quick else ""
        (out_dir / f"metrics{suffix}.json").write_text(json.dumps(out, indent=2) + "\n")
        (out_dir / f"metrics{suffix}.md").write_text(_markdown(out))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"small sizes {QUICK} (CI); results go to metrics_quick.*")
    ap.add_argument("--official-vqa-eval", help="path to GT-Vision-Lab's vqaEval.py (kept outside the repo)")
    ap.add_argument("--python2", help="a Python 2 interpreter to run the official script unmodified")
    ap.add_argument("--captions", action="store_true", help="also time captions in --quick mode")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for metrics[_quick].{json,md}")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
    out = run({}, quick=args.quick, official_vqa_eval=args.official_vqa_eval, python2=args.python2,
              captions=True if args.captions else None, out_dir=args.out)
    print(_markdown(out))


if __name__ == "__main__":
    main()
