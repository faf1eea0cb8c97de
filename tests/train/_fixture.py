"""A tiny transfer setup: a random pg1-tiny checkpoint, a task file and its data on disk."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from pgbench.config import PRESETS
from tests.conftest import REPO_ROOT

TOKENIZER = REPO_ROOT / "tests" / "fixtures" / "tiny_tokenizer" / "tokenizer.model"
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "white": (250, 250, 250)}

TASK_FILE = '''
import json
from pathlib import Path
from pgbench.task import Example, Task


def expected_files(data_dir, split, options):
    return [Path(data_dir) / f"{split}.json"]


def load(data_dir, split, options):
    rows = json.loads((Path(data_dir) / f"{split}.json").read_text())
    return [Example(id=str(r["id"]), image=r["image"], prefix=r["prefix"],
                    references=tuple(r["answers"])) for r in rows]


def score(examples, predictions, options):
    hits = [predictions.get(e.id, "") in e.references for e in examples]
    return {"accuracy": sum(hits) / len(hits)}


TASK = Task(name="tinycolours", metric="exact_match", splits=("train", "val"), eval_split="val",
            train_split="train", layout="<split>.json + images/", expected_files=expected_files,
            load=load, score=score, max_decode_len=4,
            hparams={"epochs": 1, "batch": 4, "lr": 1e-5, "wd": 0.0, "dropout": 0.0,
                     "label_smoothing": 0.0, "freeze": False})
'''


def write_checkpoint(path: Path, seed: int = 0) -> Path:
    from pgbench.checkpoints import write_bigvision_npz
    from pgbench.checkpoints.bigvision_layout import to_bigvision_params
    from pgbench.checkpoints.random_params import init_params

    model = init_params(PRESETS["pg1-tiny"], jax.random.key(seed))
    write_bigvision_npz({k: np.ascontiguousarray(v) for k, v in to_bigvision_params(model).items()}, path)
    return path


def write_task(tasks_dir: Path) -> Path:
    tasks_dir.mkdir(parents=True, exist_ok=True)
    path = tasks_dir / "tinycolours.py"
    path.write_text(TASK_FILE)
    return path


def write_data(data_dir: Path, n_per_colour: int = 1) -> Path:
    """train.json / val.json: each image a solid colour, the answer its name."""
    (data_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, rgb in COLOURS.items():
        for k in range(n_per_colour):
            img = np.zeros((56, 56, 3), np.uint8) + np.array(rgb, np.uint8)
            rel = f"images/{name}_{k}.png"
            Image.fromarray(img).save(data_dir / rel)
            rows.append({"id": f"{name}{k}", "image": rel, "prefix": "answer en what color",
                         "answers": [name]})
    for split in ("train", "val"):
        (data_dir / f"{split}.json").write_text(json.dumps(rows))
    return data_dir


def setup(root: Path) -> dict[str, str]:
    """Files for a transfer run under ``root`` -> the TransferConfig path arguments."""
    return dict(task="tinycolours", data=str(write_data(root / "data")),
                checkpoint=str(write_checkpoint(root / "tiny.npz")), tokenizer=str(TOKENIZER),
                tasks_dir=(str(write_task(root / "tasks").parent),))
