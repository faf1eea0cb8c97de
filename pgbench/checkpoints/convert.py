"""Convert between big_vision ``.npz`` and Hugging Face directories, tensor by tensor.

    python -m pgbench.checkpoints.convert pt_224.npz hf_dir/ [--family gemma2] [--options JSON]
    python -m pgbench.checkpoints.convert hf_dir/ out.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pgbench.checkpoints import open_checkpoint
from pgbench.checkpoints.bigvision_npz import write_bigvision_npz
from pgbench.checkpoints.hf_writer import DEFAULT_MAX_SHARD_BYTES, write_hf_dir
from pgbench.errors import PgbenchError


def convert(src: str | Path, dst: str | Path, *, family=None, options=None,
            max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES):
    """``.npz`` -> HF directory, or HF directory -> ``.npz``; returns the config."""
    reader, cfg = open_checkpoint(src, family=family, options=options)
    try:
        if Path(src).is_dir():
            write_bigvision_npz(reader, dst)
        else:
            write_hf_dir(reader, cfg, dst, max_shard_bytes=max_shard_bytes)
    finally:
        reader.close()
    return cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pgbench.checkpoints.convert", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--family", choices=["gemma1", "gemma2"], help="LLM family (npz input)")
    ap.add_argument("--options", type=json.loads, default=None,
                    help='JSON, e.g. \'{"query_pre_attn_norm": "rsqrt_emb_per_head"}\' for PaliGemma 2 28B')
    ap.add_argument("--max-shard-bytes", type=int, default=DEFAULT_MAX_SHARD_BYTES)
    a = ap.parse_args(argv)
    try:
        cfg = convert(a.src, a.dst, family=a.family, options=a.options, max_shard_bytes=a.max_shard_bytes)
    except PgbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2  # bad input, as for every pgbench command
    print(f"wrote {a.dst} ({cfg.llm.family}, {cfg.vision.image_size}px, LLM {cfg.llm.width}x{cfg.llm.depth})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
