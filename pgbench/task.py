"""The task-adapter contract and the registry that finds adapters by name.

A task adapter is a file ``<name>.py`` that defines ``TASK = Task(...)``. pgbench looks for it
in, in order: the folders given with ``--tasks-dir`` (``extra_dirs``), the folders listed in the
``PGBENCH_TASKS`` environment variable (``os.pathsep``-separated), and the repository's
``tasks/`` folder. The first file found wins, so a user's folder can replace a built-in task.

An adapter reads its benchmark's *official* distribution format under a data directory and
turns one split into :class:`Example` s; the evaluation core (``pgbench.evaluation``) decodes
them, the training loop (``pgbench.train``) fits the targets, and ``Task.score`` scores
predictions with the metric in ``metrics/<Task.metric>``. Everything a task needs to know about
its benchmark lives in its one file: file names, split names, the prompt, the target, the
post-processing and the metric call.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pgbench.errors import PgbenchError

TASKS_ENV = "PGBENCH_TASKS"
BUILTIN_TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"

Options = Mapping[str, Any]


class TaskError(PgbenchError):
    """An unknown task, a task file that does not define a valid ``TASK``, or task data that
    does not follow the benchmark's official layout (names the file and what is wrong)."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One evaluation / training example, as an adapter reads it.

    id          the benchmark's own id, as a string (VQAv2 ``question_id``, Karpathy
                ``cocoid``, RefCOCO ``sent_id``, ...): predictions files are keyed by it.
    image       path of the image file (absolute, or relative to the data directory).
    prefix      the prompt, exactly as big_vision builds it (``"answer en what is ..."``),
                without the ``"\\n"`` separator (pgbench.batching adds it).
    references  what the metric compares a prediction with (human answers, captions);
                empty on unlabelled splits (test servers).
    targets     training suffixes; one is drawn per step. Empty means "use references".
    meta        per-example fields the metric or post-processing needs (answer_type,
                question type, the ground-truth mask's polygons, ...). JSON-serialisable.
    """

    id: str
    image: str
    prefix: str
    references: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def train_targets(self) -> tuple[str, ...]:
        return self.targets or self.references


@dataclasses.dataclass(frozen=True)
class Task:
    """A benchmark adapter. Callables take ``(data_dir: Path, split: str, options)``.

    name            registry name (the file's stem).
    metric          folder name in ``metrics/`` that scores it (``vqa_accuracy``, ``anls``, ...).
    splits          the benchmark's own split names, as its files spell them.
    eval_split      the split the paper reports (default for ``pgbench eval``).
    train_split     the split transfer trains on.
    layout          human-readable list of the files expected under ``--data`` (for errors,
                    ``pgbench tasks`` and the README table).
    expected_files  ``(data_dir, split, options) -> list[Path]``: the files a split needs
                    (images excluded); a missing one is an error naming all of them.
    load            ``(data_dir, split, options) -> list[Example]``.
    score           ``(examples, predictions: {id: post-processed text}, options) -> dict``:
                    the metric module's keys, unrounded. A missing id scores as "".
    postprocess     decoded text (EOS stripped) -> the text that is scored and written.
    max_decode_len  tokens to generate (big_vision's ``text_len`` for the task).
    beam            1 for greedy, else the beam width big_vision uses.
    paper           the paper / big_vision README headline for pt-224, for reports.
    hparams         App. J transfer settings (epochs, batch, lr, wd, dropout,
                    label_smoothing, freeze) for ``--hparams paper``.
    options         task-specific options and their defaults (``subset``, ``split_by``,
                    ``numeric``); the CLI passes ``--subset`` etc. through.
    source          where the format was checked (official site / loader), for the docs.
    """

    name: str
    metric: str
    splits: tuple[str, ...]
    eval_split: str
    train_split: str
    layout: str
    expected_files: Callable[[Path, str, Options], list[Path]]
    load: Callable[[Path, str, Options], list[Example]]
    score: Callable[[Sequence[Example], Mapping[str, str], Options], dict]
    postprocess: Callable[[str], str] = str.strip
    max_decode_len: int = 32
    beam: int = 1
    paper: str = ""
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    source: str = ""

    def resolve_options(self, given: Options | None = None) -> dict[str, Any]:
        """Defaults overlaid with the given options; an option the task lacks is an error."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise TaskError(f"task {self.name!r} has no option {', '.join(unknown)} (options: {known})")
        return {**self.options, **given}

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise TaskError(f"task {self.name!r} has no split {split!r}; its splits: {', '.join(self.splits)}")
        return split

    def check_files(self, data_dir: Path, split: str, options: Options) -> None:
        """Raise one error listing every expected file that is missing under ``data_dir``."""
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise TaskError(f"{self.name}: data directory {data_dir} does not exist; expected:\n{self.layout}")
        missing = [p for p in self.expected_files(data_dir, split, options) if not Path(p).exists()]
        if missing:
            listed = "\n".join(f"  {p}" for p in missing)
            raise TaskError(f"{self.name} split {split!r}: missing under {data_dir}:\n{listed}\n"
                            f"expected layout:\n{self.layout}")

    def examples(self, data_dir: Path, split: str | None = None, options: Options | None = None) -> list[Example]:
        """Check split, options and files, then load; an empty split is an error."""
        split = self.check_split(split or self.eval_split)
        opts = self.resolve_options(options)
        self.check_files(Path(data_dir), split, opts)
        found = self.load(Path(data_dir), split, opts)
        if not found:
            raise TaskError(f"{self.name} split {split!r} under {data_dir} has no examples")
        return found


def task_dirs(extra_dirs: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Search order: ``extra_dirs``, then ``$PGBENCH_TASKS``, then the built-in ``tasks/``."""
    env = [d for d in os.environ.get(TASKS_ENV, "").split(os.pathsep) if d]
    return [Path(d) for d in (*extra_dirs, *env)] + [BUILTIN_TASKS_DIR]


def available(extra_dirs: Sequence[str | os.PathLike] = ()) -> dict[str, Path]:
    """Task name -> adapter file, first one found in :func:`task_dirs` order."""
    found: dict[str, Path] = {}
    for d in task_dirs(extra_dirs):
        for f in sorted(d.glob("*.py")) if d.is_dir() else ():
            if not f.stem.startswith("_"):
                found.setdefault(f.stem, f)
    return found


def load_task(name: str, extra_dirs: Sequence[str | os.PathLike] = ()) -> Task:
    """Import ``<name>.py`` from the task folders and return its ``TASK``."""
    files = available(extra_dirs)
    if name not in files:
        raise TaskError(f"unknown task {name!r}; available tasks: {', '.join(sorted(files)) or 'none'}")
    path = files[name]
    mod_name = f"pgbench_tasks.{name}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    task = getattr(module, "TASK", None)
    if not isinstance(task, Task):
        raise TaskError(f"{path}: a task file must define TASK = pgbench.task.Task(...)")
    if task.name != name:
        raise TaskError(f"{path}: TASK.name is {task.name!r} but the file is named {name!r}")
    return task
