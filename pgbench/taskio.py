"""Small helpers shared by the task adapters in ``tasks/``.

Reading a benchmark's files: :func:`read_json` and :func:`field` turn a malformed file into
one :class:`~pgbench.task.TaskError` naming the file and the key; :func:`load_pickle_builtins`
reads the RefCOCO ``refs(*).p`` pickles with an unpickler that admits only plain builtin
containers and scalars, so a tampered pickle cannot run code. Scoring: :func:`aligned`
lines predictions up with examples (a missing id is the empty string, i.e. wrong).
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any, Mapping, Sequence

from pgbench.task import Example, TaskError

_MISSING = object()


def read_json(path: Path) -> Any:
    """Parsed JSON of ``path``; unreadable or malformed -> one TaskError naming the file."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise TaskError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TaskError(f"{path}: cannot read it ({e})") from None
    except json.JSONDecodeError as e:
        raise TaskError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


def field(record: Any, key: str, path: Path, where: str, kind: type | tuple[type, ...] | None = None,
          default: Any = _MISSING) -> Any:
    """``record[key]``, or a TaskError naming file, position and key (and the expected type)."""
    # Hot path (millions of calls on VQAv2): JSON objects are plain dicts, exact types match.
    if type(record) is dict and key in record:
        value = record[key]
        if kind is None or type(value) is kind or (type(kind) is tuple and type(value) in kind):
            return value
    return _field_slow(record, key, path, where, kind, default)


def _field_slow(record, key, path, where, kind, default):
    if not isinstance(record, dict):
        raise TaskError(f"{path}: {where} should be a JSON object, found {type(record).__name__}")
    if key not in record:
        if default is not _MISSING:
            return default
        raise TaskError(f"{path}: {where} has no key {key!r} (keys: {', '.join(map(str, list(record)[:12]))})")
    value = record[key]
    kinds = () if kind is None else (kind if isinstance(kind, tuple) else (kind,))
    if kinds and (not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise TaskError(f"{path}: {where}[{key!r}] should be {names}, found {type(value).__name__} {value!r:.60}")
    return value


def items(container: Any, key: str | None, path: Path) -> list:
    """The JSON list at ``container[key]`` (or ``container`` itself when key is None)."""
    value = container if key is None else field(container, key, path, "the top level")
    if not isinstance(value, list):
        where = "the top level" if key is None else f"[{key!r}]"
        raise TaskError(f"{path}: {where} should be a JSON list, found {type(value).__name__}")
    return value


def string_list(record: Any, key: str, path: Path, where: str, *, default: Any = _MISSING) -> tuple[str, ...]:
    """A list of strings under ``key`` (answers, captions)."""
    value = field(record, key, path, where, list, default=default)
    if not all(isinstance(v, str) for v in value):
        raise TaskError(f"{path}: {where}[{key!r}] should be a list of strings, found {value!r:.80}")
    return tuple(value)


# Builtins a data pickle may name: plain containers and scalars, nothing that can call out.
_SAFE_BUILTINS = frozenset({"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
                            "int", "float", "complex", "bool", "NoneType"})


class _BuiltinsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return super().find_class("builtins", name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only builtin containers and "
                                     "scalars are allowed in a data pickle")


def load_pickle_builtins(path: Path) -> Any:
    """Unpickle ``path`` admitting only builtin containers/scalars (no code runs).

    Python-2 pickles (the RefCOCO ``refs(*).p`` files) are read with ``encoding="latin1"``
    so their byte strings become ``str``.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise TaskError(f"{path}: cannot read it ({e})") from None
    try:
        return _BuiltinsOnly(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a malformed file
        raise TaskError(f"{path}: not a readable data pickle ({type(e).__name__}: {e})") from None


def aligned(examples: Sequence[Example], predictions: Mapping[str, str]) -> list[str]:
    """One prediction per example, in order; a missing id is "" (scored as wrong)."""
    return [predictions.get(ex.id, "") for ex in examples]


def labelled(examples: Sequence[Example], task: str) -> list[Example]:
    """The examples that carry references; none -> TaskError (a test-server split)."""
    kept = [ex for ex in examples if ex.references]
    if not kept:
        raise TaskError(f"{task}: these examples have no ground truth (a test-server split?); "
                        "score a labelled split or submit the predictions to the official server")
    return kept


def hparams(epochs: float, batch: int, lr: float, wd: float = 0.0, dropout: float = 0.0,
            label_smoothing: float = 0.0, freeze: bool = False) -> dict[str, Any]:
    """The paper's App. J transfer settings (224 px) in the keys Task.hparams uses."""
    return {"epochs": epochs, "batch": batch, "lr": lr, "wd": wd, "dropout": dropout,
            "label_smoothing": label_smoothing, "freeze": freeze}


def lower_strip(text: str) -> str:
    """big_vision's ``to_lower`` post-processing, after stripping surrounding whitespace."""
    return text.strip().lower()


def vqa_layout(data_dir: Path, questions_file: str, annotations_file: str | None, image_folder: str,
               prefix_format: str = "answer en {question}") -> list[Example]:
    """Examples from the VQA JSON layout (VQAv2, OK-VQA): questions joined with annotations
    by ``question_id``; ``meta`` carries ``answer_type`` and ``question_type`` when annotated.
    Image ``<image_folder>/COCO_<image_folder>_<image_id:012d>.jpg``."""
    qpath = data_dir / questions_file
    questions = items(read_json(qpath), "questions", qpath)
    annotations: dict[int, Any] = {}
    if annotations_file is not None:
        apath = data_dir / annotations_file
        for k, a in enumerate(items(read_json(apath), "annotations", apath)):
            where = f"annotations[{k}]"
            qid = field(a, "question_id", apath, where, int)
            answers = field(a, "answers", apath, where, list)
            texts = tuple(field(x, "answer", apath, f"{where}['answers'][{j}]", str) for j, x in enumerate(answers))
            annotations[qid] = (texts, {"answer_type": field(a, "answer_type", apath, where, str, default="other"),
                                        "question_type": field(a, "question_type", apath, where, str, default="")})
    examples = []
    for k, q in enumerate(questions):
        where = f"questions[{k}]"
        qid = field(q, "question_id", qpath, where, int)
        image_id = field(q, "image_id", qpath, where, int)
        question = field(q, "question", qpath, where, str)
        refs, meta = (), {}
        if annotations_file is not None:
            if qid not in annotations:
                raise TaskError(f"{data_dir / annotations_file}: no annotation for question_id {qid} "
                                f"(listed in {qpath})")
            refs, meta = annotations[qid]
        examples.append(Example(id=str(qid), image=f"{image_folder}/COCO_{image_folder}_{image_id:012d}.jpg",
                                prefix=prefix_format.format(question=question), references=refs, meta=dict(meta)))
    return examples


def rsvqa_layout(data_dir: Path, prefix: str, split: str, image_folder: str, image_ext: str,
                 skip_types: frozenset[str], bin_answer) -> list[Example]:
    """Examples from the RSVQA JSONs ``<prefix>_<split>_{questions,answers}.json``: questions
    and answers zipped by position, inactive entries skipped, questions of ``skip_types``
    dropped; the answer (binned by ``bin_answer(answer, type)``, lower-cased) is the reference,
    ``meta["question_type"]`` the type. Image ``<image_folder>/<img_id><image_ext>``."""
    qpath = data_dir / f"{prefix}_{split}_questions.json"
    apath = data_dir / f"{prefix}_{split}_answers.json"
    questions = items(read_json(qpath), "questions", qpath)
    answers = items(read_json(apath), "answers", apath)
    if len(questions) != len(answers):
        raise TaskError(f"{qpath} lists {len(questions)} questions but {apath} lists {len(answers)} answers")
    out = []
    for k, (q, a) in enumerate(zip(questions, answers)):
        where = f"questions[{k}]"
        if not field(q, "active", qpath, where, bool, default=True):
            continue
        qtype = field(q, "type", qpath, where, str)
        if qtype in skip_types:
            continue
        qid = field(q, "id", qpath, where, int)
        if field(a, "question_id", apath, f"answers[{k}]", int) != qid:
            raise TaskError(f"{apath}: answers[{k}] belongs to question {a['question_id']}, "
                            f"but {qpath} questions[{k}] is question {qid}")
        answer = field(a, "answer", apath, f"answers[{k}]", str)
        img = field(q, "img_id", qpath, where, int)
        out.append(Example(id=str(qid), image=f"{image_folder}/{img}{image_ext}",
                           prefix=f"answer en {field(q, 'question', qpath, where, str)}",
                           references=(bin_answer(answer, qtype).lower(),), meta={"question_type": qtype}))
    return out
