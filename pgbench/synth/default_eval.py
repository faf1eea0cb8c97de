"""``make eval`` without a task: the shipped default model on every synthetic family.

    python -m pgbench.synth.default_eval [--model default_model] [--data runs/synth]
                                         [--out runs/default-eval] [--limit 64]

1. the synthetic evaluation splits are generated once into ``--data`` (the seed, image size
   and sizes of the model's own data, ``<model>/synth_manifest.json``; training splits are
   left empty: only the evaluation splits are read) and reused while they match;
2. each family's evaluation split is decoded and scored by ``pgbench eval`` (its real task
   adapter and metric; refcoco_seg through the shipped VQ-VAE, detection with
   ``--option metric=detection_map``) into ``<out>/<family>/``, started afresh each time;
3. one table — family, task, split, metric, score, chance level, examples — is printed and
   written to ``<out>/results.md`` and ``<out>/results.json``. The chance levels are the
   generator's blind baselines on the full evaluation split (``synth_manifest.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from pgbench.errors import InputError

DEFAULT_MODEL = "default_model"
DEFAULT_LIMIT = 100
MANIFEST = "synth_manifest.json"
TABLE_MD = "results.md"
TABLE_JSON = "results.json"


def read_model_manifest(model: Path) -> dict:
    path = model / MANIFEST
    if not path.is_file():
        raise InputError(f"{model}: no {MANIFEST}; is it a model built by `make default-model`?")
    return json.loads(path.read_text())


def ensure_eval_data(model_manifest: dict, data: Path, families: list[str], vae: Path) -> dict:
    """The evaluation splits under ``data`` (generated when missing or made with other
    settings); returns their manifest."""
    from pgbench.synth import generate

    sizes = {"train": 0, "val": model_manifest["sizes"]["val"], "test": model_manifest["sizes"]["test"]}
    want = {"seed": model_manifest["seed"], "sizes": sizes, "image_size": model_manifest["image_size"]}
    have = generate.reusable_manifest(data, **want)
    if have and set(families) <= set(have["families"]) and have.get("vae_sha") == file_digest(vae):
        return have
    if data.exists():
        shutil.rmtree(data)
    print(f"pgbench: writing the synthetic evaluation splits to {data} (seed {want['seed']})", flush=True)
    manifest = generate.generate(data, seed=want["seed"], sizes=sizes, family_names=families,
                                 image_size=want["image_size"], with_chance=False, vae_path=vae)
    manifest["vae_sha"] = file_digest(vae)
    (data / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def cpu_name() -> str:
    """The processor's model name (Linux), else what ``platform`` knows."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def file_digest(path: str | Path) -> str:
    """The first 16 hex digits of a file's sha256: which bytes a cached result came from."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def eval_args(model: Path, data: Path, fam: dict, run_dir: Path, limit: int | None, batch_size: int,
              weights: str = "float") -> list[str]:
    """The ``pgbench eval`` arguments for one family."""
    args = ["eval", "--task", fam["task"], "--data", str(data / fam["data"]), "--split", fam["eval_split"],
            "--checkpoint", str(model), "--run-dir", str(run_dir), "--batch-size", str(batch_size),
            "--no-progress"]
    for key, value in sorted(fam.get("options", {}).items()):
        if key == "vae":
            args += ["--vae", str(model / "vae.npz")]
        else:
            args += ["--option", f"{key}={value}"]
    if limit:
        args += ["--limit", str(limit)]
    if weights != "float":
        args += ["--weights", weights]
    return args


def run(model: Path, data: Path, out: Path, *, limit: int | None = DEFAULT_LIMIT,
        families: list[str] | None = None, batch_size: int = 16, weights: str = "float") -> list[dict]:
    """Evaluate every family; returns the table rows (also written under ``out``)."""
    from pgbench import cli

    model_manifest = read_model_manifest(model)
    from pgbench.synth.generate import FAMILIES

    names = families or [f for f in FAMILIES if f in model_manifest["families"]]
    unknown = [f for f in names if f not in model_manifest["families"]]
    if unknown:
        raise InputError(f"families {unknown} are not in {model / MANIFEST}")
    start = time.perf_counter()
    manifest = ensure_eval_data(model_manifest, data, names, model / "vae.npz")
    held_out = json.loads((model / "build.json").read_text()).get("held_out") if (model / "build.json").is_file() else None
    rows = []
    for family in names:
        fam = dict(manifest["families"][family])
        fam["options"] = model_manifest["families"][family].get("options", {})
        run_dir = out / family
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a fresh decode: the model may have changed since
        argv = eval_args(model, data, fam, run_dir, limit, batch_size, weights)
        print("$ pgbench " + " ".join(argv), flush=True)
        t0 = time.perf_counter()
        if cli.main(argv) != 0:
            raise SystemExit(f"pgbench eval failed on {family}")
        results = json.loads((run_dir / "results.json").read_text())
        chance = model_manifest["families"][family]["chance"]
        key = chance["metric"]
        rows.append({"family": family, "task": fam["task"], "split": fam["eval_split"],
                     "metric": f"{fam['metric']} ({key})", "score": results["metrics"][key],
                     "chance": chance["score"], "examples": results["num_examples"],
                     "of": model_manifest["families"][family]["examples"][fam["eval_split"]],
                     "failed": results["num_failed"], "seconds": round(time.perf_counter() - t0, 1),
                     "held_out": family == held_out, "run_dir": str(run_dir)})
    seconds = round(time.perf_counter() - start, 1)
    write_table(out, rows, model, seconds, limit, weights)
    return rows


def table_markdown(rows: list[dict], limit: int | None) -> str:
    lines = ["| family | task | split | metric (headline) | score | chance | examples |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        chance = "n/a" if r["chance"] is None else f"{r['chance']:.3f}"
        note = " (held out of pre-training)" if r["held_out"] else ""
        n = f"{r['examples']} of {r['of']}" if r["examples"] < r["of"] else str(r["examples"])
        lines.append(f"| {r['family']}{note} | {r['task']} | {r['split']} | {r['metric']} | "
                     f"{r['score']:.3f} | {chance} | {n} |")
    return "\n".join(lines) + "\n"


def write_table(out: Path, rows: list[dict], model: Path, seconds: float, limit: int | None,
                weights: str = "float") -> None:
    out.mkdir(parents=True, exist_ok=True)
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []
    head = (f"Default model `{model.name}`{' (int8 decoder weights)' if weights == 'int8' else ''} "
            f"on the synthetic benchmark (`make eval`): "
            f"{'the first ' + str(limit) + ' examples' if limit else 'every example'} of each family's "
            f"evaluation split; chance = the generator's blind baseline on the whole split. "
            f"{seconds} s on {os.cpu_count()} CPUs ({cpu_name()}; load average "
            f"{load[0] if load else 'n/a'}).\n\n")
    (out / TABLE_MD).write_text(head + table_markdown(rows, limit))
    (out / TABLE_JSON).write_text(json.dumps({"model": str(model), "weights": weights, "limit": limit,
                                              "seconds": seconds,
                                              "cpus": os.cpu_count(), "cpu": cpu_name(), "load_average": load, "rows": rows},
                                             indent=1) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pgbench.synth.default_eval", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help="default model directory")
    ap.add_argument("--data", default="runs/synth", help="where the evaluation splits are written / reused")
    ap.add_argument("--out", default="runs/default-eval", help="run directories and the table")
    ap.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="examples per family (0: all)")
    ap.add_argument("--families", help="comma-separated (default: all)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--weights", choices=["float", "int8"], default="float",
                    help="decoder weights (pgbench eval --weights)")
    args = ap.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()] if args.families else None
    try:
        rows = run(Path(args.model), Path(args.data), Path(args.out), limit=args.limit or None,
                   families=families, batch_size=args.batch_size, weights=args.weights)
    except InputError as e:
        print(f"pgbench eval: error: {e}", file=sys.stderr)
        return 2
    print()
    print((Path(args.out) / TABLE_MD).read_text(), end="")
    print(f"run directories and this table: {args.out}/ ({TABLE_MD}, {TABLE_JSON})")
    del rows
    return 0


if __name__ == "__main__":
    sys.exit(main())
