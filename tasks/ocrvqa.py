"""OCR-VQA (ocr-vqa.github.io).

Format source: the release's ``dataset.json`` (book key -> ``imageURL, questions[],
answers[], title, authorName, genre, split`` with split 1 = train, 2 = val, 3 = test) and
``images/<book key><extension of imageURL>`` as the release's ``loadDataset.py`` saves them
(also what mmpretrain's OCRVQA loader reads). One example per (book, question), id
``<book key>_<question index>``. big_vision has no public builder (its config reads an
internal TFDS); prompt ``answer en {question}``, target the answer (``transfers/ocrvqa.py``).
Post-processing lower-cases; metric ``exact_match`` with ``to_lower`` (big_vision's ``vqa``
evaluator with a single ``answer``).
"""

from pathlib import Path

from pgbench import taskio
from pgbench.scoring import short_answer
from pgbench.task import Example, Task, TaskError

SPLITS = ("train", "val", "test")
CODES = {"train": 1, "val": 2, "test": 3}


def expected_files(data_dir: Path, split, options):
    return [data_dir / "dataset.json"]


def load(data_dir: Path, split, options):
    path = data_dir / "dataset.json"
    books = taskio.read_json(path)
    if not isinstance(books, dict):
        raise TaskError(f"{path}: the top level should be a JSON object keyed by book id, found {type(books).__name__}")
    out = []
    for key, b in books.items():
        where = f"[{key!r}]"
        if taskio.field(b, "split", path, where, int) != CODES[split]:
            continue
        questions = taskio.string_list(b, "questions", path, where)
        answers = taskio.string_list(b, "answers", path, where)
        if len(questions) != len(answers):
            raise TaskError(f"{path}: {where} has {len(questions)} questions but {len(answers)} answers")
        ext = Path(taskio.field(b, "imageURL", path, where, str)).suffix or ".jpg"
        for i, (q, a) in enumerate(zip(questions, answers)):
            out.append(Example(id=f"{key}_{i}", image=f"images/{key}{ext}", prefix=f"answer en {q}", references=(a,)))
    return out


def score(examples, predictions, options):
    examples = taskio.labelled(examples, "ocrvqa")
    return short_answer.exact_match(taskio.aligned(examples, predictions), [list(e.references) for e in examples],
                                    to_lower=True)


TASK = Task(
    name="ocrvqa", metric="exact_match", splits=SPLITS, eval_split="test", train_split="train",
    layout="dataset.json (split codes 1/2/3 = train/val/test), images/<book id><ext of imageURL>",
    expected_files=expected_files, load=load, score=score, postprocess=taskio.lower_strip, max_decode_len=32,
    paper="73.24 accuracy test (pt-224, big_vision README)",
    hparams=taskio.hparams(3, 128, 3e-6),
    source="ocr-vqa.github.io dataset.json + loadDataset.py; big_vision transfers/ocrvqa.py",
)
