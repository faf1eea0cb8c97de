"""benchmarks/trace.py charges each moment of a profiled program to one op."""

from __future__ import annotations

from hypothesis import given, strategies as st

from benchmarks.trace import containers, hlo_ops, largest_operand, top_level_ns

HLO = """
%f (p0: bf16[2,9216], p1: bf16[2304,9216]) -> f32[2,2304] {
  %p0 = bf16[2,9216]{1,0} parameter(0)
  %p1 = bf16[2304,9216]{1,0} parameter(1)
  ROOT %dot.1 = f32[2,2304]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={1}
}

ENTRY %main (x: bf16[2,9216]) -> bf16[8] {
  %p.1 = bf16[2304,9216]{1,0} parameter(1)
  %x = bf16[2,9216]{1,0} parameter(0)
  %ob = (f32[1,2304]{1,0}, bf16[257152,2304]{1,0}) opt-barrier(%x2, %emb)
  %ynn_fusion.40 = f32[2,2304]{1,0} fusion(%x, %p.1), kind=kCustom, calls=%f, metadata={op_name="jit(loop)/while/body/dot_general" stack_frame_id=5}
  %copy_dot_fusion = f32[257152]{0} fusion(%x, %ob), kind=kLoop, calls=%g, metadata={op_name="jit(loop)/while/body/dot_general"}
  %while.3 = (s32[], f32[8]{0}) while(%t), condition=%c, body=%b
  ROOT %copy_bitcast_fusion = bf16[8]{0} fusion(%x), kind=kLoop, calls=%j
}
"""


def test_hlo_ops_reads_shapes_opcodes_sources_and_operands():
    ops = hlo_ops(HLO)
    assert ops["ynn_fusion.40"] == {"shape": "f32[2,2304]{1,0}", "opcode": "fusion",
                                    "source": "jit(loop)/while/body/dot_general", "operands": ["x", "p.1"],
                                    "dot": True}
    assert ops["dot.1"]["dot"] and not ops["copy_bitcast_fusion"]["dot"]
    assert not ops["copy_dot_fusion"]["dot"]  # calls %g, which this text does not hold
    assert ops["copy_bitcast_fusion"]["source"] == ""
    assert largest_operand(ops, "ynn_fusion.40") == ("bf16", (2304, 9216))
    # A tuple operand (an optimisation barrier's) is looked into.
    assert largest_operand(ops, "copy_dot_fusion") == ("bf16", (257152, 2304))
    assert containers(ops) == {"while.3"}


def test_nested_and_side_by_side_events_are_charged_once():
    events = [(0, 10, "a"), (2, 5, "b"), (8, 12, "c"), (11, 13, "d"), (20, 22, "e")]
    # b runs inside a: a's; c runs beside a: a holds 8-10, c then 10-12, d 12-13; 13-20 idle.
    assert top_level_ns(events) == {"a": 10, "c": 2, "d": 1, "e": 2}


intervals = st.lists(st.tuples(st.integers(0, 200), st.integers(1, 50), st.sampled_from("abcd")),
                     min_size=1, max_size=30)


@given(intervals)
def test_charges_add_up_to_the_time_some_op_ran(spec):
    events = sorted((s, s + d, name) for s, d, name in spec)
    covered = set()
    for s, e, _ in events:
        covered.update(range(s, e))
    charged = top_level_ns(events)
    assert sum(charged.values()) == len(covered)
    assert set(charged) <= {name for _, _, name in events}
    # The first op to start (the longest of those starting together) is charged its whole span.
    first = min(events, key=lambda ev: (ev[0], -ev[1]))
    assert charged[first[2]] >= first[1] - first[0]
