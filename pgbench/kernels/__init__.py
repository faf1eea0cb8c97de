"""Fused Pallas prefix-LM flash attention (forward, backward, decode).

See docs/kernels.md. ``prefix_lm_attention`` is the stable entry point.
"""

from pgbench.kernels.attention import general_attention, prefix_lm_attention
from pgbench.kernels.blocks import BlockSizes, default_block_sizes
from pgbench.kernels.decode import prefix_lm_decode_attention
from pgbench.kernels.reference import reference_attention

__all__ = ["prefix_lm_attention", "prefix_lm_decode_attention", "general_attention",
           "reference_attention", "BlockSizes", "default_block_sizes"]
