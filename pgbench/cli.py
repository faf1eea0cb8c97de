"""Command line: ``pgbench eval | score | tasks | transfer | sweep | parity | predict | synth``.

Every subcommand prints one readable line for a bad input (no traceback) and exits 2;
``parity`` exits 0 only when every compared output passes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pgbench.errors import PgbenchError


def _case_dirs(paths: list[str]) -> list[Path]:
    """Expand each path: a case directory, or a directory whose sub-directories are cases."""
    dirs: list[Path] = []
    for p in map(Path, paths):
        if (p / "case.json").is_file() or not p.is_dir():
            dirs.append(p)
            continue
        found = sorted(c.parent for c in p.glob("*/case.json"))
        if not found:
            raise PgbenchError(f"{p}: neither a reference case (no case.json) nor a folder of cases")
        dirs.extend(found)
    return dirs


def cmd_parity(args: argparse.Namespace) -> int:
    from pgbench import parity

    if args.checkpoint:
        from pgbench import parity_transformers

        report = parity_transformers.check_against_transformers(
            args.checkpoint, family=args.family, attn_impl=args.attention, seed=args.seed)
        print("\n".join(report.lines()))
        return 0 if report.passed else 1
    if not args.reference:
        raise PgbenchError("parity needs --reference DIR (a FORMAT.md case) or --checkpoint PATH --against transformers")
    ok = True
    dirs = _case_dirs(args.reference)
    for i, case_dir in enumerate(dirs):
        report = parity.check_case(case_dir, attn_impl=args.attention)
        if i:
            print()
        print("\n".join(report.lines()))
        ok &= report.passed
    if len(dirs) > 1:
        print(f"\n{'PASS' if ok else 'FAIL'} all {len(dirs)} cases")
    return 0 if ok else 1


def cmd_predict(args: argparse.Namespace) -> int:
    from pgbench import predict

    return predict.main(args)


def cmd_synth(args: argparse.Namespace) -> int:
    from pgbench.synth import generate

    if args.vae and args.vae_steps < 1:
        raise PgbenchError(f"--vae-steps must be at least 1, got {args.vae_steps}")
    families = [f.strip() for f in args.families.split(",") if f.strip()] if args.families else generate.FAMILIES
    sizes = generate.parse_sizes(args.sizes or "")
    generate.check_families(families)
    generate.check_image_size(args.image_size)
    if args.vae:  # first: refcoco_seg's oracle answers are encoded with it
        from pgbench.synth import vae

        card = vae.build(args.vae, seed=args.seed, steps=args.vae_steps)
        print(f"wrote {args.vae}: {card['steps']} steps in {card['seconds']} s; held-out mask IoU "
              f"{card['held_out_iou']:.3f} through the codes (whole box {card['full_box_iou']:.3f})")
    manifest = generate.generate(args.out, seed=args.seed, sizes=sizes, family_names=families,
                                 image_size=args.image_size, vae_path=args.vae)
    for name, fam in manifest["families"].items():
        chance = fam["chance"]["score"]
        shown = "n/a" if chance is None else f"{chance:.3f}"
        counts = ", ".join(f"{s} {n}" for s, n in fam["examples"].items())
        print(f"{name:12s} task {fam['task']:12s} {counts}; chance {fam['chance']['metric']} {shown}")
    print(f"wrote {args.out}/manifest.json")
    if args.tokenizer:
        from pgbench.synth import tokenizer

        tokenizer.build(args.tokenizer, seed=args.seed, images=manifest["sizes"]["train"],
                        vocab_size=args.vocab_size)
        print(f"wrote {args.tokenizer}/tokenizer.model and tokenizer.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pgbench import eval_cli

    ap = argparse.ArgumentParser(prog="pgbench", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("eval", help="decode a task's split with a checkpoint and score it")
    eval_cli.add_eval_arguments(p)
    p.set_defaults(func=eval_cli.cmd_eval)
    p = sub.add_parser("score", help="score a predictions file by a task's official protocol")
    eval_cli.add_score_arguments(p)
    p.set_defaults(func=eval_cli.cmd_score)
    p = sub.add_parser("tasks", help="list the tasks, their metric, splits and data layout")
    eval_cli.add_tasks_arguments(p)
    p.set_defaults(func=eval_cli.cmd_tasks)

    from pgbench import transfer_cli

    p = sub.add_parser("transfer", help="fine-tune a checkpoint on a task at an example budget")
    transfer_cli.add_arguments(p)
    p.set_defaults(func=transfer_cli.main)

    from pgbench import sweep_cli

    p = sub.add_parser("sweep", help="transfer at several budgets x seeds; table and plot against zero-shot")
    sweep_cli.add_arguments(p)
    p.set_defaults(func=sweep_cli.main)

    p = sub.add_parser("parity", help="compare pgbench with a reference implementation")
    p.add_argument("--reference", nargs="+", metavar="DIR",
                   help="reference case directories (FORMAT.md), or folders holding several cases")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="a real checkpoint (big_vision .npz or HF directory) to check against --against")
    p.add_argument("--against", choices=["transformers"], default="transformers",
                   help="implementation to run side by side with --checkpoint (needs the [reference] extra)")
    p.add_argument("--family", choices=["gemma1", "gemma2"],
                   help="LLM family of a big_vision .npz given with --checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs for --checkpoint")
    p.add_argument("--attention", choices=["xla", "pallas", "cudnn"], default="xla",
                   help="attention implementation pgbench runs with")
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser("synth", help="write the synthetic benchmark in the official formats")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (one sub-folder per family)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    p.add_argument("--sizes", metavar="train=N,val=N,test=N",
                   help="images per split (default train=1000,val=100,test=100)")
    p.add_argument("--families", metavar="A,B",
                   help="comma-separated subset of vqav2,cococap,refcoco_seg,textvqa,docvqa,rsvqa_lr,detection")
    p.add_argument("--image-size", type=int, default=128, help="square image side in pixels")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="also train the default model's SentencePiece tokenizer on the training text")
    p.add_argument("--vocab-size", type=int, default=1664, help="tokenizer pieces (with --tokenizer)")
    p.add_argument("--vae", metavar="FILE",
                   help="also train the segmentation VQ-VAE on the synthetic masks (vae-oid.npz layout); "
                        "refcoco_seg's oracle answers then carry mask codes")
    p.add_argument("--vae-steps", type=int, default=300, help="VQ-VAE training steps (with --vae)")
    p.set_defaults(func=cmd_synth)

    # Imported unguarded: a broken predict module must fail loudly, not drop the subcommand.
    from pgbench import predict

    predict.add_arguments(sub.add_parser("predict", help="decode answers for images and a prompt"))
    sub.choices["predict"].set_defaults(func=cmd_predict)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PgbenchError as e:
        print(f"pgbench {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
