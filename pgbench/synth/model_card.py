"""``default_model/MODEL_CARD.md``, written from what the build and ``make eval`` recorded.

Nothing in the card is typed by hand: the recipe, commands, durations and machine load come
from ``<model>/build.json`` (``default_model.py``), the scores from the table ``make eval``
wrote (``<eval>/results.json``), and the families not above their chance level are listed
from those numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CARD = "MODEL_CARD.md"
# "well above chance": the score must beat the blind baseline by this much (absolute).
MARGIN = 0.05


def _mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 2)


def _training(run: dict) -> str:
    """One sentence on a ``pgbench transfer`` run from its summary in build.json."""
    return (f"{run['steps']} steps of batch {run['batch']}, peak lr {run['lr']}, weight decay {run['wd']}, "
            f"warm-up then cosine; loss {run['first_loss']:.3f} at the first logged step, "
            f"{run['final_loss']:.3f} at the last; {run['examples_per_s']} examples/s.")


def render(model: Path, eval_dir: Path) -> str:
    from pgbench.synth.default_eval import table_markdown

    build = json.loads((model / "build.json").read_text())
    table = json.loads((eval_dir / "results.json").read_text())
    cfg = json.loads((model / "config.json").read_text())
    text, vision = cfg["text_config"], cfg["vision_config"]
    pre = build["pretrain"]
    files = sorted(p for p in model.iterdir() if p.is_file() and p.name != CARD)
    total = sum(_mb(p) for p in files)
    low = [r for r in table["rows"] if r["chance"] is not None and r["score"] < r["chance"] + MARGIN]
    mixture = next(s for s in build["steps"] if s["name"] == "pre-training mixture")["examples"]
    load = table.get("load_average") or ["n/a"]

    out = [f"# {model.name}: pgbench's small PaliGemma for the synthetic benchmark", ""]
    out += ["A PaliGemma scaled down and pre-trained from scratch by pgbench itself, so that `make eval` "
            "shows the whole suite working with nothing downloaded. It reads only the synthetic "
            "benchmark (`pgbench synth`); it knows nothing about real images.", ""]
    out += ["## Architecture", "",
            f"- image encoder (SigLIP-style ViT): {vision['image_size']} px, patch {vision['patch_size']} "
            f"({vision['num_image_tokens']} image tokens), width {vision['hidden_size']}, depth "
            f"{vision['num_hidden_layers']}, MLP {vision['intermediate_size']}, {vision['num_attention_heads']} heads",
            f"- decoder ({text['model_type']}): width {text['hidden_size']}, depth {text['num_hidden_layers']}, "
            f"{text['num_attention_heads']} query heads / {text['num_key_value_heads']} key-value heads of "
            f"{text['head_dim']}, MLP {text['intermediate_size']}; Gemma 2 features on: attention-logit "
            f"soft-cap {text.get('attn_logit_softcapping')}, final-logit soft-cap "
            f"{text.get('final_logit_softcapping')}, post-attention and post-FFW norms, sliding window "
            f"{text.get('sliding_window')} on the even layers (longer than any sequence here)",
            f"- vocabulary: {text['vocab_size']} SentencePiece pieces trained on the synthetic text "
            "(1024 `<loc>` and 128 `<seg>` pieces included)",
            f"- VQ-VAE (`vae.npz`): big_vision's vae-oid architecture, full size, float16, trained on the "
            "synthetic masks", ""]
    out += ["## How it was made", "",
            f"Command: `make default-model` (seed {build['seed']}): the build's steps took {build['seconds']} s "
            f"({build['seconds'] / 60:.1f} min), then `make eval` {table['seconds']} s "
            f"({(build['seconds'] + table['seconds']) / 60:.1f} min together), on {build['machine']['cpus']} CPUs "
            f"({build['machine']['processor']}, {build['machine']['platform']}); 1-minute load averages "
            "before and after each step below (a load above the CPU count would mean other work shared the machine). "
            "A step marked as from an earlier run of the build was not repeated: its output was in the work "
            "folder from a run of the same command, whose record is shown.", "",
            "| step | command | seconds | load before / after |", "|---|---|---|---|"]
    for s in build["steps"]:
        cmd = f"`pgbench {s['command'].removeprefix('pgbench.cli ')}`" if s["command"] else "(in-process)"
        lb, la = (s.get("load_before") or ["n/a"])[0], (s.get("load_after") or ["n/a"])[0]
        seconds = f"{s['seconds']} (an earlier run of the build)" if s.get("reused") else s["seconds"]
        out.append(f"| {s['name']} | {cmd} | {seconds} | {lb} / {la} |")
    out += ["", f"Pre-training mixture (every family's training split except `{build['held_out']}`, held "
            "out for `make transfer`; one `jsonl` task, each example's prompt and targets as its "
            "adapter builds them): " + ", ".join(f"{k} {v}" for k, v in mixture.items()) +
            f" ({sum(mixture.values())} examples).", ""]
    if "detection_first" in build:
        det = build["detection_first"]
        out += [f"Detection first (from the random initialisation, before the mixture, so that boxes are "
                f"read off the image rather than copied from the bins just written): the mixture's "
                f"{det['examples']} detection lines alone, {_training(det)}", "",
                "Loss curve (step, loss): " + ", ".join(f"{s} {l}" for s, l in det["loss_curve"]), ""]
    stage1 = "Pre-training" + (" stage 1" if "stage2" in build else "")
    if "detection_first" in build:
        stage1 += " (from the detection-first export)"
    out += [f"{stage1}: `pgbench transfer`, {pre['steps']} steps of batch {pre['batch']} "
            f"({pre['steps'] * pre['batch']} examples, {pre['steps'] * pre['batch'] / pre['examples']:.1f} "
            f"epochs), Adam (big_vision's optimizer), peak lr {pre['lr']}, weight decay {pre['wd']}, "
            f"warm-up then cosine, text length {pre['text_len']}; loss {pre['first_loss']:.3f} at the first "
            f"logged step, {pre['final_loss']:.3f} at the last; {pre['examples_per_s']} examples/s.",
            "", "Loss curve (step, loss): " + ", ".join(f"{s} {l}" for s, l in pre["loss_curve"]), ""]
    if "stage2" in build:
        two = build["stage2"]
        step2 = next(s for s in build["steps"] if s["name"] == "stage-2 mixture")
        shares = ", ".join(f"{k} {v:.0%}" for k, v in step2["shares"].items())
        out += [f"Stage 2 (reading up-weighted, from stage 1's export): the same families with {shares} "
                "of the lines (its training split repeated; the others once each): "
                + ", ".join(f"{k} {v}" for k, v in step2["examples"].items())
                + f" ({sum(step2['examples'].values())} lines); " + _training(two), "",
                "Loss curve (step, loss): " + ", ".join(f"{s} {l}" for s, l in two["loss_curve"]), ""]
    out += ["## Scores (`make eval`)", "",
            f"Measured by `make eval` ({table['seconds']} s on {table['cpus']} CPUs, load average {load[0]}); "
            + (f"the first {table['limit']} examples" if table["limit"] else "every example")
            + " of each family's evaluation split; chance = the generator's blind baseline (knows the "
            "training answers, never looks at the image) on the whole split.", "",
            table_markdown(table["rows"], table["limit"]).rstrip(), ""]
    if low:
        out += ["Not well above chance (score below chance + "
                f"{MARGIN}): " + ", ".join(f"{r['family']} ({r['score']:.3f} vs {r['chance']:.3f}"
                                           + (", held out of pre-training" if r["held_out"] else "") + ")"
                                           for r in low) + ".", ""]
    else:
        out += [f"Every family scores at least {MARGIN} above its chance level.", ""]
    out += ["## Files", "", "| file | MB |", "|---|---|"]
    out += [f"| `{p.name}` | {_mb(p)} |" for p in files]
    out += [f"| total | {total:.2f} |", "",
            "`config.json` + `model.safetensors`: a Hugging Face PaliGemma directory (`pgbench eval "
            "--checkpoint default_model`); `synth_manifest.json`: the data's seed, sizes and chance levels; "
            "`build.json`: everything above, as recorded.", ""]
    return "\n".join(out)


README_START = "<!-- default-eval-table"
README_END = "<!-- /default-eval-table -->"


def update_readme(readme: Path, eval_dir: Path) -> None:
    """Put ``make eval``'s table (``<eval_dir>/results.md``) between the README's markers."""
    from pgbench.synth.default_eval import TABLE_MD

    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme}: no {README_START} ... {README_END} block to fill")
    start = text.index("\n", start) + 1
    table = (eval_dir / TABLE_MD).read_text().strip()
    readme.write_text(text[:start] + "\n" + table + "\n\n" + text[end:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pgbench.synth.model_card", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default_model")
    ap.add_argument("--eval", default="runs/default-eval", help="the folder `make eval` wrote")
    ap.add_argument("--readme", help="also copy the table into this README's marked block")
    args = ap.parse_args(argv)
    model = Path(args.model)
    (model / CARD).write_text(render(model, Path(args.eval)))
    print(f"wrote {model / CARD}")
    if args.readme:
        update_readme(Path(args.readme), Path(args.eval))
        print(f"updated the table in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
