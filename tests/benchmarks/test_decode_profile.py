"""benchmarks/decode_profile.py tells weight products from attention products and the rest."""

from __future__ import annotations

from benchmarks.decode_profile import place
from benchmarks.trace import hlo_ops

HLO = """
%fused_computation.7 (param_0: bf16[8,8,256], param_1: bf16[8,1128,256]) -> f32[8,8,1128] {
  %param_0 = bf16[8,8,256]{2,1,0} parameter(0)
  %param_1 = bf16[8,1128,256]{2,1,0} parameter(1)
  ROOT %dot.3 = f32[8,8,1128]{2,1,0} dot(%param_0, %param_1), lhs_batch_dims={0}, rhs_batch_dims={0}
}

%f (p0: bf16[2,9216], p1: bf16[2304,9216]) -> f32[2,2304] {
  %p0 = bf16[2,9216]{1,0} parameter(0)
  %p1 = bf16[2304,9216]{1,0} parameter(1)
  ROOT %dot.1 = f32[2,2304]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={1}
}

ENTRY %main.9 (a: bf16[2,9216]) -> f32[2] {
  %w = bf16[2304,9216]{1,0} parameter(1)
  %x = bf16[2,9216]{1,0} parameter(0)
  %cache = bf16[8,1128,256]{2,1,0} parameter(2)
  %q = bf16[8,8,256]{2,1,0} parameter(3)
  %ynn_fusion.40 = f32[2,2304]{1,0} fusion(%x, %w), kind=kCustom, calls=%f, metadata={op_name="jit(loop)/while/body/dot_general"}
  %ynn_fusion.41 = f32[8,8,1128]{2,1,0} fusion(%q, %cache), kind=kCustom, calls=%fused_computation.7
  %ynn_fusion.42 = f32[2]{0} fusion(%x), kind=kCustom, calls=%h, metadata={op_name="jit(loop)/while/body/reduce_max"}
  %add_fusion = f32[2,2304]{1,0} fusion(%ynn_fusion.40), kind=kLoop, calls=%j
"""


def test_ops_are_placed_by_what_they_read():
    ops = hlo_ops(HLO)
    weights = {("bf16", (2304, 9216)), ("bf16", (257152, 2304))}
    assert place(ops, "ynn_fusion.40", weights) == ("weight product", ("bf16", (2304, 9216)))
    # No source location (as XLA leaves some library products): its computation holds the dot.
    assert place(ops, "ynn_fusion.41", weights) == ("attention product", None)
    assert place(ops, "ynn_fusion.42", weights) == ("other", None)  # a library reduction
    assert place(ops, "add_fusion", weights) == ("other", None)
    assert place(ops, "not_in_the_hlo", weights) == ("other", None)
    # The same product reading a float32 copy of the weight is not a read of the weight.
    assert place(ops, "ynn_fusion.40", {("f32", (2304, 9216))}) == ("attention product", None)
