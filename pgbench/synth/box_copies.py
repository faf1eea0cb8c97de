"""How often a model's boxes repeat their y bins as their x bins: a localisation failure.

    python -m pgbench.synth.box_copies RUN_DIR_OR_PREDICTIONS.jsonl [...]

A PaliGemma box is ``<loc y1><loc x1><loc y2><loc x2>``. With tied embeddings the token
just read is also the easiest one to predict next, and a small model that has not learned
to read x off the image writes ``x1 = y1`` and ``x2 = y2`` (a box on the diagonal of the
image). This counts such boxes in ``pgbench eval``'s ``predictions.jsonl`` (detection, or
refcoco's ``<loc>`` + ``<seg>`` chunks), beside the same count in the references, which
is the rate a model that localised perfectly would show.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pgbench.errors import InputError
from pgbench.rundir import predictions_path, read_predictions
from pgbench.structured import parse_detections


def copied(bins: tuple[int, int, int, int]) -> bool:
    """Whether a box (y1, x1, y2, x2 bins) has x1 = y1 and x2 = y2."""
    return bins[1] == bins[0] and bins[3] == bins[2]


def count(predictions: Path) -> dict[str, int]:
    """-> {"boxes", "copied", "reference_boxes", "reference_copied"} over one predictions file
    (well-formed boxes only; malformed chunks are the metric's business)."""
    out = dict.fromkeys(("boxes", "copied", "reference_boxes", "reference_copied"), 0)
    for row in read_predictions(predictions, strict=True):
        if not isinstance(row.get("prediction"), str):
            raise InputError(f"{predictions}: example {row['id']}: not a pgbench eval prediction line "
                             "(no 'prediction' string)")
        texts = [("", row["prediction"])] + [("reference_", r) for r in row.get("references") or []]
        for prefix, text in texts:
            for obj in parse_detections(text).objects:
                out[prefix + "boxes"] += 1
                out[prefix + "copied"] += copied(obj.bins)
    return out


def _share(part: int, whole: int) -> str:
    return f"{part} of {whole} ({part / whole:.0%})" if whole else "none with boxes"


def predictions_file(path: Path) -> Path:
    return predictions_path(path) if path.is_dir() else path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pgbench.synth.box_copies", description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", type=Path, help="pgbench eval run directories or predictions.jsonl files")
    args = ap.parse_args(argv)
    try:
        for path in args.paths:
            c = count(predictions_file(path))
            print(f"{path}: {_share(c['copied'], c['boxes'])} predicted boxes have x = y; "
                  f"references {_share(c['reference_copied'], c['reference_boxes'])}")
    except InputError as e:
        print(f"box_copies: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
