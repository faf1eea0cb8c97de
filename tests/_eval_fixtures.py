"""A tiny task adapter, its data and a tiny random checkpoint for the evaluation tests.

The adapter (``tinyqa``) is written into a folder that the tests pass with ``--tasks-dir``,
the way a user adds a task: ``<split>.json`` holds ``[{"qid", "image", "question",
"answers"}]``, images sit in ``images/``; the score is the fraction of predictions equal to
one of the answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import REPO_ROOT

TOKENIZER = REPO_ROOT / "tests" / "fixtures" / "tiny_tokenizer" / "tokenizer.model"

TASK_SOURCE = '''
import json
from pathlib import Path

from pgbench.task import Example, Task


def _files(data_dir, split, options):
    return [Path(data_dir) / f"{split}.json"]


def _load(data_dir, split, options):
    rows = json.loads((Path(data_dir) / f"{split}.json").read_text())
    return [Example(id=str(r["qid"]), image=f"images/{r['image']}", prefix=r["question"],
                    references=tuple(r["answers"])) for r in rows]


def _score(examples, predictions, options):
    hits = [predictions.get(e.id, "") in e.references for e in examples]
    return {"accuracy": sum(hits) / len(hits), "num_correct": sum(hits)}


TASK = Task(name="tinyqa", metric="exact_match", splits=("train", "val"), eval_split="val",
            train_split="train", layout="<split>.json  [{qid, image, question, answers}]\\nimages/<image>",
            expected_files=_files, load=_load, score=_score,
            postprocess=lambda s: s.strip().lower(), max_decode_len=4, options={"flavour": "plain"})
'''

QUESTIONS = ["caption en", "answer en what is it", "caption en",
             "answer en who is it", "caption en",
             "answer en where", "caption en"]


def write_task(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tinyqa.py").write_text(TASK_SOURCE)
    return folder


def write_data(root: Path, n: int = 7, *, corrupt: tuple[int, ...] = (), missing: tuple[int, ...] = (),
               split: str = "val", seed: int = 0) -> Path:
    """``n`` examples with prompts of two padded lengths (8 and 16 tokens) and random images;
    examples in ``corrupt`` get a file that is not an image, those in ``missing`` no file."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = f"img_{i:03d}.png"
        if i in corrupt:
            name = f"img_{i:03d}.jpg"
            (root / "images" / name).write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
        elif i not in missing:
            h, w = 20 + 7 * (i % 3), 30 + 5 * (i % 4)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(root / "images" / name)
        rows.append({"qid": 100 + i, "image": name, "question": QUESTIONS[i % len(QUESTIONS)],
                     "answers": [f"ans{i}", "x"]})
    (root / f"{split}.json").write_text(json.dumps(rows))
    return root


def write_checkpoint(path: Path, seed: int = 0) -> Path:
    """A pg1-tiny checkpoint whose vocabulary is exactly the tiny tokenizer's."""
    import jax

    from pgbench.checkpoints import to_bigvision_params, write_bigvision_npz
    from pgbench.checkpoints.random_params import init_params
    from pgbench.config import get_preset
    from pgbench.tokenizer import Tokenizer

    tok = Tokenizer(TOKENIZER, require_locseg=False)
    cfg = get_preset("pg1-tiny").replace_llm(vocab_size=tok.vocab_size)
    write_bigvision_npz(to_bigvision_params(init_params(cfg, jax.random.key(seed))), path)
    return path


VQA_QUESTIONS = ["what is it", "who", "what color", "where is it", "how many"]


def write_vqav2(root: Path, n: int = 5, split: str = "val2014", seed: int = 0) -> Path:
    """``n`` VQAv2 questions in the official layout (pgbench.synth.formats), 2 per image."""
    from pgbench.synth import formats

    rng = np.random.default_rng(seed)
    image_ids = [9 + 2 * k for k in range((n + 1) // 2)]
    images = {i: rng.integers(0, 256, (24 + i, 32, 3), np.uint8) for i in image_ids}
    records = [{"question_id": 1000 + q, "image_id": image_ids[q // 2],
                "question": VQA_QUESTIONS[q % len(VQA_QUESTIONS)],
                "answers": [f"a{q}"] * 6 + ["other"] * 4,
                "answer_type": "yes/no" if q % 2 else "other"} for q in range(n)]
    formats.write_vqav2(root, split, records, images)
    return root
