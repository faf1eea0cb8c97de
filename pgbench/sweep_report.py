"""What ``pgbench sweep`` reports: per-budget statistics over seeds, ``sweep.md`` and ``sweep.png``.

Pure functions over the per-run records the sweep collects (one dict per budget x seed:
``budget``, ``seed``, ``score``, ``examples``, ``split_examples``, ``status``), so the numbers
can be checked by hand and the files rewritten without training anything.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

# The key of a metric module's result that the paper reports (metrics/<name>/README.md).
HEADLINE = {
    "vqa_accuracy": "accuracy",
    "anls": "anls",
    "coco_caption": "cider",
    "exact_match": "exact_match",
    "relaxed_accuracy": "relaxed_accuracy",
    "rsvqa_accuracy": "accuracy_average",
    "refcoco_miou": "miou",
    "detection_map": "map",
}


def headline_key(metric: str, metrics: Mapping[str, Any], override: str | None = None) -> str:
    """The key of ``metrics`` (a results.json ``metrics`` dict) a sweep reports: ``override``
    if given, else the metric's headline (:data:`HEADLINE`), else the first numeric key (a
    user's task whose scorer names its value differently)."""
    from pgbench.errors import InputError

    numeric = [k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if override is not None:
        if override not in numeric:
            raise InputError(f"--metric {override!r}: the results have no such number; "
                             f"they have {', '.join(numeric) or 'none'}")
        return override
    if HEADLINE.get(metric) in numeric:
        return HEADLINE[metric]
    if not numeric:
        raise InputError(f"metric {metric!r} returned no number to report: {dict(metrics)}")
    return numeric[0]


def paper_score(paper: str) -> float | None:
    """The full-data number a task's ``paper`` string starts with, in the metric's own units.

    The paper (and big_vision's README) report percentages and CIDEr x 100 while pgbench's
    metrics are fractions (CIDEr as pycocoevalcap gives it), so the number is divided by 100.
    Where the string lists several (``"73.40 / 68.32 / 67.65 mIoU val RefCOCO / ..."``) the
    first is the one for the task's default options. None when the string has no number."""
    m = re.match(r"\s*(\d+(?:\.\d+)?)", paper or "")
    return float(m.group(1)) / 100.0 if m else None


def aggregate(runs: Sequence[Mapping[str, Any]], budgets: Sequence[str]) -> list[dict[str, Any]]:
    """One row per budget (in ``budgets`` order) over the seeds that finished.

    mean, std (sample standard deviation, ddof=1; None for one seed), best (the maximum, the
    paper's "best of 5 seeds") and its seed, n finished seeds, examples used and the split's
    size (from the runs' config), and a note when the budget exceeds the split."""
    rows = []
    for label in budgets:
        mine = [r for r in runs if r["budget"] == label]
        done = [r for r in mine if r.get("status") == "done" and r.get("score") is not None]
        scores = [float(r["score"]) for r in done]
        known = next((r for r in mine if r.get("examples") is not None), None)
        examples = known["examples"] if known else None
        split = known.get("split_examples") if known else None
        row: dict[str, Any] = {"budget": label, "examples": examples, "split_examples": split,
                               "n": len(scores), "mean": None, "std": None, "best": None,
                               "best_seed": None, "failed": len(mine) - len(done), "note": None}
        if scores:
            mean = sum(scores) / len(scores)
            row["mean"] = mean
            if len(scores) > 1:
                row["std"] = math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - 1))
            best = max(done, key=lambda r: float(r["score"]))
            row["best"], row["best_seed"] = float(best["score"]), best["seed"]
        if label != "full" and examples is not None and split is not None and int(label) > split:
            row["note"] = f"budget {label} is larger than the split ({split} examples): all of it used"
        rows.append(row)
    return rows


def fmt_score(v: float | None) -> str:
    """A score as the tables print it (4 decimals; – for none)."""
    return "–" if v is None else f"{v:.4f}"


def markdown(report: Mapping[str, Any]) -> str:
    """``sweep.md``: a header, the per-budget table, then every run."""
    key = report["metric_key"]
    zs = report.get("zero_shot") or {}
    paper = report.get("paper")
    lines = [f"# {report['task']} sweep: {key} on {report['eval_split']}", "",
             f"checkpoint `{report['checkpoint']}`; seeds {', '.join(map(str, report['seeds']))}; "
             f"std is the sample standard deviation over seeds, best the maximum.", "",
             f"- zero-shot (no fine-tuning): {fmt_score(zs.get('score'))}"]
    if paper:
        lines.append(f"- paper, full data: {fmt_score(paper['score'])} ({paper['text']})")
    lines += ["", f"| budget | examples | seeds | mean {key} | std | best | best seed | note |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["summary"]:
        note = r["note"] or ""
        if r["failed"]:
            note = (note + "; " if note else "") + f"{r['failed']} run(s) not finished"
        lines.append(f"| {r['budget']} | {'–' if r['examples'] is None else r['examples']} | {r['n']} "
                     f"| {fmt_score(r['mean'])} | {fmt_score(r['std'])} | {fmt_score(r['best'])} "
                     f"| {'–' if r['best_seed'] is None else r['best_seed']} | {note} |")
    lines += ["", "## Runs", "", f"| budget | seed | {key} | steps | final loss | status | run directory |",
              "|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        loss = r.get("final_loss")
        lines.append(f"| {r['budget']} | {r['seed']} | {fmt_score(r.get('score'))} | {r.get('steps') or '–'} "
                     f"| {fmt_score(loss) if isinstance(loss, float) else '–'} | {r['status']}"
                     f"{': ' + r['error'] if r.get('error') else ''} | `{r['run_dir']}` |")
    return "\n".join(lines) + "\n"


def plot(report: Mapping[str, Any], path: Path) -> Path:
    """``sweep.png``: score against examples used (log x), mean +/- std per budget, the best
    seed marked, the zero-shot score as a horizontal line, the paper's full-data number as a
    star at the largest budget where the task knows it."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    key = report["metric_key"]
    rows = [r for r in report["summary"] if r["mean"] is not None and r["examples"]]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.set_xscale("log")
    if rows:
        xs = [r["examples"] for r in rows]
        ax.errorbar(xs, [r["mean"] for r in rows], yerr=[r["std"] or 0.0 for r in rows], fmt="o-",
                    capsize=4, color="tab:blue", label="mean ± std over seeds")
        ax.plot(xs, [r["best"] for r in rows], "^", color="tab:green", label="best seed")
        ticks: dict[int, list[str]] = {}
        for r in rows:
            ticks.setdefault(r["examples"], []).append(r["budget"])
        ax.set_xticks(list(ticks))
        ax.set_xticklabels([" / ".join(v) + (f"\n({x})" if "full" in v else "") for x, v in ticks.items()])
        ax.minorticks_off()
    zs = (report.get("zero_shot") or {}).get("score")
    if zs is not None:
        ax.axhline(zs, color="tab:gray", ls="--", label=f"zero-shot {zs:.4f}")
    paper = report.get("paper")
    if paper and paper.get("score") is not None:
        x = max((r["examples"] for r in rows), default=1)
        ax.plot([x], [paper["score"]], "*", ms=14, color="tab:red",
                label=f"paper, full data: {paper['score']:.4f}")
    ax.set_xlabel("training examples (budget)")
    ax.set_ylabel(key)
    ax.set_title(f"{report['task']}: {key} on {report['eval_split']} against the example budget")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
