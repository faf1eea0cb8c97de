"""benchmarks/train_profile.py places each compiled op by its HLO metadata."""

from __future__ import annotations

from benchmarks.train_profile import classify
from benchmarks.trace import hlo_ops

HLO = """
  %ynn_fusion.3 = f32[574,4096]{1,0} fusion(%a, %b), kind=kCustom, calls=%f, metadata={op_name="jit(step_fn)/jvp()/dot_general" stack_frame_id=3}
  %ynn_fusion.7 = f32[4096,1024]{1,0} fusion(%c, %d), kind=kCustom, calls=%g, metadata={op_name="jit(step_fn)/transpose(jvp())/dot_general"}
  %ynn_fusion.9 = f32[2,31]{1,0} fusion(%e), kind=kCustom, calls=%h, metadata={op_name="jit(step_fn)/jvp(jit(log_softmax))/reduce_max"}
  %multiply_add_fusion.2 = f32[6,1024,4096]{2,1,0} fusion(%m, %n), kind=kLoop, calls=%i, metadata={op_name="jit(step_fn)/add"}
  ROOT %copy_bitcast_fusion = bf16[8]{0} fusion(%x), kind=kLoop, calls=%j
"""


def test_ops_are_placed_by_phase_and_kind():
    ops = hlo_ops(HLO)
    assert ops["ynn_fusion.3"]["shape"] == "f32[574,4096]{1,0}" and ops["ynn_fusion.3"]["operands"] == ["a", "b"]
    placed = {name: classify(name, op["source"]) for name, op in ops.items()}
    assert placed == {"ynn_fusion.3": ("forward", "gemm"), "ynn_fusion.7": ("backward", "gemm"),
                      "ynn_fusion.9": ("forward", "other"),  # a library reduction, not a product
                      "multiply_add_fusion.2": ("optimizer/update", "other"),
                      "copy_bitcast_fusion": ("ungrouped", "other")}
