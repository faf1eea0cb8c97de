"""``make transfer`` / ``make sweep`` without a task: the shipped model on its held-out family.

    python -m pgbench.synth.default_transfer transfer [--budget 256]
    python -m pgbench.synth.default_transfer sweep [--budgets 64,256,1024,full] [--seeds 1]

The held-out family (``build.json``: ``rsvqa_lr``) was never seen in pre-training. Its
synthetic splits (the model's seed and sizes, training split included) are written once to
``runs/synth-<family>``. ``transfer`` scores the shipped model zero-shot with ``pgbench
eval``, fine-tunes it with ``pgbench transfer`` at the budget, and prints both scores;
``sweep`` runs ``pgbench sweep`` (zero-shot, then one transfer per budget and seed; table
and plot). Both use :data:`FINETUNE_FLAGS`, the small model's fine-tuning settings (the
paper's App. J values are for the 3B model: 3 steps at lr 3e-6 would not move this one).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from pgbench.errors import InputError

# batch 16, 10 epochs of the budget (256 examples: 160 steps), lr 5e-4, no weight decay.
FINETUNE_FLAGS = ["--hparams", "default", "--batch", "16", "--epochs", "10", "--lr", "5e-4", "--wd", "0",
                  "--label-smoothing", "0", "--remat", "none", "--log-every", "10", "--no-progress"]
DEFAULT_BUDGETS = "64,256,1024,full"


def held_out_data(model: Path, root: Path = Path("runs")) -> tuple[str, dict, Path]:
    """(family, its manifest entry, data folder): the held-out family's splits, generated
    once with the model's seed and sizes."""
    from pgbench.synth import generate
    from pgbench.synth.default_eval import read_model_manifest

    manifest = read_model_manifest(model)
    build = json.loads((model / "build.json").read_text())
    family = build["held_out"]
    out = root / f"synth-{family}"
    want = {"seed": manifest["seed"], "sizes": manifest["sizes"], "image_size": manifest["image_size"]}
    have = generate.reusable_manifest(out, **want)
    if have and family in have["families"]:
        return family, have["families"][family], out / have["families"][family]["data"]
    if out.exists():
        shutil.rmtree(out)
    print(f"pgbench: writing the synthetic {family} splits to {out} (seed {want['seed']})", flush=True)
    have = generate.generate(out, seed=want["seed"], sizes=want["sizes"], family_names=[family],
                             image_size=want["image_size"], with_chance=False)
    return family, have["families"][family], out / have["families"][family]["data"]


def for_model(out: Path, model: Path) -> Path:
    """``out``, emptied first if its runs were made from other weights (a rebuilt model):
    ``pgbench transfer`` would otherwise resume, and report, the old model's finished run."""
    from pgbench.synth.default_eval import file_digest

    stamp, path = file_digest(model / "model.safetensors"), out / "model.sha256"
    if out.exists() and (not path.is_file() or path.read_text().strip() != stamp):
        print(f"pgbench: {out} holds runs of other weights than {model}; starting afresh", flush=True)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(stamp + "\n")
    return out


def _pgbench(argv: list[str]) -> None:
    from pgbench import cli

    print("$ pgbench " + " ".join(argv), flush=True)
    if cli.main(argv) != 0:
        raise SystemExit(f"pgbench {argv[0]} failed")


def transfer(model: Path, budget: str, seed: int, out: Path) -> dict:
    family, fam, data = held_out_data(model)
    out = for_model(out, model)
    key = json.loads((model / "synth_manifest.json").read_text())["families"][family]["chance"]["metric"]
    zero_dir, ft_dir = out / "zero-shot", out / f"budget-{budget}-s{seed}"
    if zero_dir.exists():
        shutil.rmtree(zero_dir)
    _pgbench(["eval", "--task", fam["task"], "--data", str(data), "--split", fam["eval_split"],
              "--checkpoint", str(model), "--run-dir", str(zero_dir), "--batch-size", "16", "--no-progress"])
    zero = json.loads((zero_dir / "results.json").read_text())["metrics"][key]
    _pgbench(["transfer", "--task", fam["task"], "--data", str(data), "--checkpoint", str(model),
              "--run-dir", str(ft_dir), "--budget", budget, "--seed", str(seed), "--no-export",
              *FINETUNE_FLAGS])
    tuned = json.loads((ft_dir / "summary.json").read_text())["eval"]["metrics"][key]
    chance = json.loads((model / "synth_manifest.json").read_text())["families"][family]["chance"]["score"]
    lines = [f"{family} ({fam['eval_split']} split, {key}), held out of pre-training:",
             f"  zero-shot            {zero:.3f}",
             f"  fine-tuned at {budget:>5s}  {tuned:.3f}  (gain {tuned - zero:+.3f}; chance {chance:.3f})",
             f"  run directories: {zero_dir}, {ft_dir}"]
    text = "\n".join(lines) + "\n"
    (out / "summary.txt").write_text(text)
    print(text, end="")
    return {"family": family, "zero_shot": zero, "fine_tuned": tuned, "budget": budget, "chance": chance}


def sweep(model: Path, budgets: str, seeds: int, out: Path) -> None:
    family, fam, data = held_out_data(model)
    out = for_model(out, model)
    _pgbench(["sweep", "--task", fam["task"], "--data", str(data), "--checkpoint", str(model),
              "--run-dir", str(out), "--budgets", budgets, "--seeds", str(seeds), "--no-export",
              *FINETUNE_FLAGS])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pgbench.synth.default_transfer", description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["transfer", "sweep"])
    ap.add_argument("--model", default="default_model")
    ap.add_argument("--budget", default="256")
    ap.add_argument("--budgets", default=DEFAULT_BUDGETS)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="default runs/default-transfer or runs/default-sweep")
    args = ap.parse_args(argv)
    model = Path(args.model)
    try:
        if args.mode == "transfer":
            transfer(model, args.budget, args.seed, Path(args.out or "runs/default-transfer"))
        else:
            sweep(model, args.budgets, args.seeds, Path(args.out or "runs/default-sweep"))
    except InputError as e:
        print(f"pgbench {args.mode}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
