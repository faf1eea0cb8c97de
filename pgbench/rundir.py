"""The run directory of ``pgbench eval`` / ``pgbench score``: what is in it and how it resumes.

::

    config.json                  everything the run resolved (paths, options, versions)
    predictions.jsonl            one line per example: id, prompt, prediction, references, error
    predictions.<process>.jsonl  one file per process while a multi-host run is going on
    results.json                 task, split, num_examples, num_failed, metrics, seconds, ...
    results.md                   the same as a table

Predictions are appended and flushed one batch at a time, so a killed run loses at most the
batch in flight. :func:`read_predictions` reads a file back, skipping a last line cut short by
the kill; :func:`check_config` refuses to resume a run directory made for something else.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, Iterable, Mapping

from pgbench.errors import InputError

CONFIG = "config.json"
PREDICTIONS = "predictions.jsonl"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


# Identity keys config.json gained later (fingerprints of the checkpoint's and tokenizer's
# bytes): compared only when the saved config has them, so older run directories resume.
LATER_KEYS = ("inputs",)


def key_differs(saved: Mapping[str, Any], now: Mapping[str, Any], key: str) -> bool:
    """Whether a resume must refuse on ``key``: its values differ, unless it is one of
    :data:`LATER_KEYS` and the saved config predates it."""
    return saved.get(key) != now.get(key) and not (key in LATER_KEYS and key not in saved)


class RunDirError(InputError):
    """A run directory that cannot be used: made for another run, or holding a broken file."""


def predictions_path(run_dir: Path, process: int | None = None) -> Path:
    """``predictions.jsonl``, or ``predictions.<process>.jsonl`` for one process's shard."""
    return Path(run_dir) / (PREDICTIONS if process is None else f"predictions.{process}.jsonl")


def versions() -> dict[str, str]:
    """Versions of what decides the numbers (recorded in config.json)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("pgbench", "jax", "jaxlib", "equinox", "numpy", "grain", "sentencepiece", "pillow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(Path(path), json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def check_config(run_dir: Path, config: Mapping[str, Any], identity: Iterable[str]) -> bool:
    """Compare ``config`` with the run directory's saved ``config.json`` on the ``identity`` keys.

    Returns True when the directory holds a run to resume (same identity), False when it has
    no config yet. Any difference raises :class:`RunDirError` naming every key that differs
    with both values.
    """
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return False
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path}: unreadable run config ({e}); use another --run-dir") from None
    diffs = [f"  {k}: saved {saved.get(k)!r}, now {config.get(k)!r}"
             for k in identity if key_differs(saved, config, k)]
    if diffs:
        raise RunDirError(f"{run_dir} holds a different run; refusing to resume it. "
                          "Differences:\n" + "\n".join(diffs) +
                          "\nUse another --run-dir (or delete this one) to start afresh.")
    return True


def read_predictions(path: Path, *, strict: bool = False) -> list[dict]:
    """The JSON lines of a predictions file, in file order.

    A last line without its newline (the process was killed while writing it) is dropped,
    as :class:`PredictionWriter` cuts it off before appending. With ``strict`` (a user's file for ``pgbench
    score``) every line must be a JSON object with a string ``id``; otherwise a bad line
    inside the file is an error too, since only the last line can be torn by a kill.
    """
    path = Path(path)
    if not path.is_file():
        if strict:
            raise RunDirError(f"{path}: no such predictions file")
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn_tail = not data.endswith(b"\n")
    rows = []
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        if n == len(lines) and torn_tail and not strict:
            break  # cut short by a kill (PredictionWriter cuts it off): decoded again
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise RunDirError(f"{path}: line {n} is not valid JSON ({e})") from None
        if not isinstance(row, dict) or "id" not in row:
            raise RunDirError(f"{path}: line {n} is not a JSON object with an \"id\" key")
        if not isinstance(row["id"], (str, int)) or isinstance(row["id"], bool):
            raise RunDirError(f"{path}: line {n}: \"id\" must be a string or an integer, "
                              f"got {row['id']!r}")
        row["id"] = str(row["id"])
        rows.append(row)
    return rows


class PredictionWriter:
    """Appends prediction rows to a JSONL file, one flush (and fsync) per batch.

    A torn last line left by a kill is cut off first, so the file stays valid JSONL.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(self.path, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def merge_shards(run_dir: Path, num_processes: int) -> Path:
    """Concatenate ``predictions.<p>.jsonl`` (p < num_processes) into ``predictions.jsonl``
    (one row per id; the shard files are removed once the merged file is written)."""
    seen, rows = set(), []
    for p in range(num_processes):
        for row in read_predictions(predictions_path(run_dir, p)):
            if row["id"] not in seen:
                seen.add(row["id"])
                rows.append(row)
    dest = predictions_path(run_dir)
    _atomic_write(dest, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    for p in range(num_processes):
        predictions_path(run_dir, p).unlink(missing_ok=True)
    return dest


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def results_markdown(results: Mapping[str, Any]) -> str:
    """``results.md``: a header line and one table row per metric (nested dicts flattened)."""
    lines = [f"# {results['task']} / {results['split']}", "",
             f"{results['num_examples']} examples, {results['num_failed']} failed"
             + (f", {results['num_missing']} missing from the predictions file"
                if results.get("num_missing") else "")
             + (f"; {results['seconds']:.1f} s, {results['examples_per_second']:.2f} examples/s"
                if results.get("seconds") is not None else ""),
             "", "| metric | value |", "|---|---|"]

    def rows(prefix: str, m: Mapping[str, Any]):
        for k, v in m.items():
            if isinstance(v, Mapping):
                yield from rows(f"{prefix}{k}/", v)
            elif isinstance(v, (int, float, str, bool)) or v is None:
                yield f"| {prefix}{k} | {_fmt(v)} |"

    lines.extend(rows("", results["metrics"]))
    return "\n".join(lines) + "\n"


def write_results(run_dir: Path, results: Mapping[str, Any]) -> None:
    write_json(Path(run_dir) / RESULTS_JSON, results)
    _atomic_write(Path(run_dir) / RESULTS_MD, results_markdown(results))
