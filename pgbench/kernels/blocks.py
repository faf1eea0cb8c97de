"""Block sizes per backend, in one place.

``block_q`` x ``block_k`` is the tile of the score matrix one kernel step holds. The
Triton path needs powers of two >= 16 (tensor-core ``dot`` minimum); head_dim 256 on
an H100 leaves room for 64 x 64 tiles in shared memory with two pipeline stages. TPU
tiles are larger because VMEM is larger and the MXU is 128/256 wide. On CPU (Pallas
interpret mode) every grid step is a Python-level loop iteration, so bigger tiles are
faster; tests pass small tiles explicitly to exercise multi-block paths.
"""

from __future__ import annotations

from typing import NamedTuple


class BlockSizes(NamedTuple):
    block_q: int
    block_k: int
    block_q_bwd: int
    block_k_bwd: int
    num_warps: int = 4
    num_stages: int = 2


def _pow2_at_least(n: int, floor: int) -> int:
    p = floor
    while p < n:
        p *= 2
    return p


def default_block_sizes(backend: str, head_dim: int, nq: int, nk: int) -> BlockSizes:
    """Tile sizes for ``backend`` ('gpu', 'tpu', 'cpu'), shrunk to short sequences."""
    if backend == "gpu":
        big = head_dim <= 128
        bs = BlockSizes(block_q=128 if big else 64, block_k=64, block_q_bwd=64 if big else 32,
                        block_k_bwd=64, num_warps=4 if big else 8, num_stages=2)
        floor = 16
    elif backend == "tpu":
        bs = BlockSizes(block_q=256, block_k=512, block_q_bwd=256, block_k_bwd=256)
        floor = 128
    else:
        bs = BlockSizes(block_q=128, block_k=128, block_q_bwd=128, block_k_bwd=128)
        floor = 8
    cq, ck = _pow2_at_least(nq, floor), _pow2_at_least(nk, floor)
    return bs._replace(block_q=min(bs.block_q, cq), block_k=min(bs.block_k, ck),
                       block_q_bwd=min(bs.block_q_bwd, cq), block_k_bwd=min(bs.block_k_bwd, ck))
