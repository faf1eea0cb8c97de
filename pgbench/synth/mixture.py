"""The default model's pre-training mixture: synthetic training splits as one ``jsonl`` task.

Each family's training split is read through its real adapter (the prompt exactly as the
adapter builds it, its training targets; refcoco_seg's 4 ``<loc>`` + 16 ``<seg>`` target
encoded with the synthetic VQ-VAE), and every example becomes one line of
``<out>/train.jsonl`` in the ``jsonl`` adapter's format: ``{"id": "<family>/<id>", "image":
path relative to <out>, "prefix", "suffix": [targets]}`` (one target drawn per step).
``pgbench transfer --task jsonl --data <out>`` then trains on the mixture, the paper's
stage-1 multi-task pre-training in miniature. Families in ``exclude`` stay out (held out
for transfer). ``upweight`` repeats a family's lines so it makes a given share of the file
(the stage-2 mixture, which up-weights reading: ``default_model.py``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

from pgbench.errors import InputError

MIXTURE_FILE = "train.jsonl"


def _manifest(synth_dir: Path) -> dict:
    return json.loads((synth_dir / "manifest.json").read_text())


def mixture_lines(synth_dir: str | Path, out: str | Path, exclude: Sequence[str] = (),
                  larger: Mapping[str, str | Path] | None = None) -> dict[str, list[dict]]:
    """family -> its ``jsonl`` lines (images relative to ``out``), families in the order of
    ``synth_dir``'s ``manifest.json``. ``larger`` maps a family to another ``pgbench synth``
    folder holding a larger training split of it (same seed: its first images are
    ``synth_dir``'s), read instead of ``synth_dir``'s."""
    from pgbench import segmentation
    from pgbench.task import load_task

    synth_dir, out = Path(synth_dir), Path(out)
    manifest = _manifest(synth_dir)
    unknown = [f for f in exclude if f not in manifest["families"]]
    if unknown:
        raise InputError(f"families to hold out {unknown} are not in {synth_dir}/manifest.json")
    larger = {family: Path(folder) for family, folder in (larger or {}).items()}
    missing = [f for f in larger if f not in manifest["families"] or f in exclude]
    if missing:
        raise InputError(f"a larger training split of {missing} was given, but {synth_dir} "
                         "has no such family in the mixture")
    lines: dict[str, list[dict]] = {}
    for family, fam in manifest["families"].items():
        if family in exclude:
            continue
        src = larger.get(family, synth_dir)
        if src != synth_dir:
            fam = _manifest(src)["families"][family]
        task = load_task(fam["task"])
        options = task.resolve_options(dict(fam.get("options", {})))
        data = src / fam["data"]
        (split,) = fam["splits"]["train"]
        examples = task.examples(data, split, options)
        vae = None
        if family == "refcoco_seg":
            if not options.get("vae"):
                raise InputError(f"{synth_dir}: refcoco_seg has no VQ-VAE (generate it with --vae) "
                                 "to encode its training masks")
            # the adapter's own training target (load_task registered its module)
            target_string = sys.modules[f"pgbench_tasks.{fam['task']}"].target_string
            vae = segmentation.load_vqvae(options["vae"])
        rows = []
        for ex in examples:
            image = ex.image if os.path.isabs(ex.image) else os.path.relpath(data / ex.image, out)
            targets = [target_string(ex, vae)] if vae is not None else list(ex.train_targets)
            rows.append({"id": f"{family}/{ex.id}", "image": image, "prefix": ex.prefix, "suffix": targets})
        lines[family] = rows
    return lines


def upweighted(lines: Mapping[str, list[dict]], shares: Mapping[str, float]) -> dict[str, list[dict]]:
    """``lines`` with each family in ``shares`` repeated whole so that it makes about that
    share (0-1) of all lines; the other families keep their lines and their proportions
    among themselves. A repeat's id is ``<id>#<k>`` (k = 1, 2, ...: the ``jsonl`` adapter
    wants unique ids); every family is kept at least once."""
    unknown = [f for f in shares if f not in lines]
    if unknown:
        raise InputError(f"cannot up-weight {unknown}: not in the mixture ({', '.join(lines)})")
    if not all(0 < w < 1 for w in shares.values()) or sum(shares.values()) >= 1:
        raise InputError(f"up-weighting shares {dict(shares)} must each lie in (0, 1) and sum below 1")
    rest = sum(len(rows) for f, rows in lines.items() if f not in shares)
    if not rest:
        raise InputError("up-weighting needs at least one family that is not up-weighted")
    total = rest / (1 - sum(shares.values()))
    out = {}
    for family, rows in lines.items():
        if family not in shares or not rows:
            out[family] = list(rows)
            continue
        copies = max(1, round(shares[family] * total / len(rows)))
        out[family] = [r if k == 0 else {**r, "id": f"{r['id']}#{k}"} for k in range(copies) for r in rows]
    return out


def relocated(lines: Mapping[str, list[dict]], old: str | Path, new: str | Path) -> dict[str, list[dict]]:
    """``lines`` written for ``old`` with their relative image paths made relative to ``new``
    (a second mixture from the same examples, without reading the adapters again)."""
    def move(image: str) -> str:
        return image if os.path.isabs(image) else os.path.relpath(Path(old) / image, new)

    return {family: [{**r, "image": move(r["image"])} for r in rows] for family, rows in lines.items()}


def write_lines(out: str | Path, lines: Mapping[str, list[dict]]) -> dict[str, int]:
    """Write ``<out>/train.jsonl`` from family -> lines; returns lines per family."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / MIXTURE_FILE, "w", encoding="utf-8") as f:
        for rows in lines.values():
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return {family: len(rows) for family, rows in lines.items()}


def write_mixture(synth_dir: str | Path, out: str | Path, exclude: Sequence[str] = (),
                  larger: Mapping[str, str | Path] | None = None,
                  upweight: Mapping[str, float] | None = None) -> dict[str, int]:
    """Write ``<out>/train.jsonl`` (:func:`mixture_lines`' families and order, up-weighted
    families repeated as :func:`upweighted`); returns lines per family."""
    lines = mixture_lines(synth_dir, out, exclude, larger)
    return write_lines(out, upweighted(lines, upweight) if upweight else lines)
