"""Reading a JAX profiler trace of a CPU program: how long each compiled op held the machine.

XLA's CPU runtime runs a program's ops one after another on its worker threads; a library
op (a YNNPACK product, say) spreads its work over the other threads as "regions" that carry
no op name, and an op may appear nested inside another's event. So summing every event's
duration per thread counts some ops twice and leaves the helpers' share unattributed.
Here each moment is charged to one op only (``top_level_ns``): the charges add up to the
program's span less the gaps where no op ran, and a share of that total is a share of wall
time.
"""

from __future__ import annotations

import collections
import glob
import heapq
import math
import re

# Events on the worker threads that are scheduling, not ops.
NOT_OPS = ("ThunkExecutor", "ThreadpoolListener", "SlinkyThreadPool", "end: ")
OP_LINE = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = (\(.*?\)|\S+) ([\w\-]+)\((.*?)\)")
ARRAY = re.compile(r"\b(pred|s8|u8|s16|u16|s32|u32|s64|u64|bf16|f16|f32|f64)\[([\d,]*)\]")
COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) \(")
CONTROL_FLOW = ("while", "conditional", "call")
BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4,
         "f32": 4, "s64": 8, "u64": 8, "f64": 8}


def hlo_ops(hlo_text: str) -> dict[str, dict]:
    """Compiled HLO text -> {instruction name: {"shape", "opcode", "source", "operands",
    "dot"}}: its result shape, its opcode, its source op_name ("" when XLA made it), the names
    of its operands, and whether it is a matrix product (a dot, or a fusion whose computation
    holds one: XLA leaves some library products without a source)."""
    ops, calls, with_dot, computation = {}, {}, set(), None
    for line in hlo_text.splitlines():
        head = COMPUTATION.match(line)
        if head:
            computation = head.group(1)
            continue
        m = OP_LINE.match(line)
        if m:
            src = re.search(r'op_name="([^"]*)"', line)
            called = re.search(r"calls=%([\w.\-]+)", line)
            ops[m.group(1)] = {"shape": m.group(2), "opcode": m.group(3),
                               "source": src.group(1) if src else "",
                               "operands": re.findall(r"%([\w.\-]+)", m.group(4))}
            calls[m.group(1)] = called.group(1) if called else None
            if m.group(3) == "dot":
                with_dot.add(computation)
    for name, op in ops.items():
        op["dot"] = op["opcode"] == "dot" or calls[name] in with_dot
    return ops


def arrays(shape: str) -> list[tuple[str, tuple[int, ...]]]:
    """Every array in an HLO shape string (a tuple gives several): [(dtype, dims), ...]."""
    return [(dt, tuple(int(d) for d in dims.split(",") if d)) for dt, dims in ARRAY.findall(shape)]


def nbytes(dtype: str, dims: tuple[int, ...]) -> int:
    return BYTES[dtype] * math.prod(dims)


def largest_operand(ops: dict[str, dict], name: str) -> tuple[str, tuple[int, ...]] | None:
    """(dtype, dims) of the largest array op ``name`` reads (looking inside tuple operands)."""
    found = [a for o in ops[name]["operands"] if o in ops for a in arrays(ops[o]["shape"])]
    return max(found, key=lambda a: nbytes(*a), default=None)


def containers(ops: dict[str, dict]) -> set[str]:
    """The control-flow ops (a loop, a conditional, a call): their events span the ops of their
    bodies, so they are not charged (``worker_events``'s ``skip``)."""
    return {name for name, op in ops.items() if op["opcode"] in CONTROL_FLOW}


def worker_events(trace_dir: str, skip: set[str] = frozenset()) -> list[tuple[int, int, str]]:
    """(start ns, end ns, op name) of every op event on XLA's CPU threads (its worker pool and
    the client thread, which runs a small program's ops itself), sorted; ops in ``skip`` left
    out."""
    import jax

    files = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
    if not files:
        raise RuntimeError(f"the profiler wrote no trace under {trace_dir}")
    events = []
    for plane in jax.profiler.ProfileData.from_file(files[0]).planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):  # XLA's CPU threads, not Python's
                continue
            events += [(ev.start_ns, ev.start_ns + ev.duration_ns, ev.name) for ev in line.events
                       if not ev.name.startswith(NOT_OPS) and ev.name not in skip]
    return sorted(events)


def top_level_ns(events: list[tuple[int, int, str]]) -> dict[str, int]:
    """{op name: nanoseconds}: every moment at least one op runs is charged to one op, the
    running one that started first (an event inside another's span is part of that one's
    time; of two ops running side by side, the earlier holds the time until it ends). The
    charges add up to the time some op ran. ``events`` sorted by start."""
    total: collections.Counter = collections.Counter()
    points = sorted({t for s, e, _ in events for t in (s, e)})
    active: list[tuple[int, int, int]] = []  # (start, -end, index): the first-started on top
    i = 0
    for a, b in zip(points, points[1:]):
        while i < len(events) and events[i][0] <= a:
            heapq.heappush(active, (events[i][0], -events[i][1], i))
            i += 1
        while active and -active[0][1] <= a:
            heapq.heappop(active)
        if active:
            total[events[active[0][2]][2]] += b - a
    return dict(total)


def span_ns(events: list[tuple[int, int, str]]) -> int:
    """From the first op's start to the last op's end."""
    return max(e for _, e, _ in events) - events[0][0] if events else 0
