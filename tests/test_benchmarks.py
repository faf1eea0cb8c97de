"""The benchmarks still run (tiny sizes, CPU): they write their figure files. Timing is never asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def _run(*args):
    out = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def test_kernel_bench_runs_in_interpret_mode(tmp_path):
    _run("benchmarks.kernels", "--quick", "--out", str(tmp_path))
    results = list(tmp_path.glob("kernels_*.json"))
    assert results, "no kernels_<backend>.json written"
    text = results[0].read_text()
    assert "pallas" in text and "xla" in text


def test_forward_bench_runs_on_a_tiny_preset(tmp_path):
    _run("benchmarks.forward_cpu", "--preset", "pg1-tiny", "--rounds", "1", "--repeats", "1",
         "--out", str(tmp_path / "fwd"))
    res = json.loads((tmp_path / "fwd.json").read_text())
    assert res["flops"] > 0 and res["machine"]["cores"] >= 1 and len(res["load_before"]) == 3
    for dtype in ("float32", "bfloat16"):  # each dtype against its own kind only
        assert res["dtypes"][dtype]["pgbench"]["median_s"] > 0
        assert "speedup" in res["dtypes"][dtype] or "error" in res["dtypes"][dtype]["transformers"]
    assert "| bfloat16 | pgbench |" in (tmp_path / "fwd.md").read_text()


def test_decode_bench_runs_on_a_tiny_preset(tmp_path):
    """Times the loop on both sides at one dtype; the split loop must generate decode()'s tokens."""
    _run("benchmarks.decode_cpu", "--presets", "pg1-tiny", "--dtypes", "bfloat16", "--batches", "1",
         "--rounds", "1", "--new-tokens", "3", "--out", str(tmp_path / "decode"))
    res = json.loads((tmp_path / "decode.json").read_text())
    row = res["results"]["pg1-tiny bfloat16"]["batches"]["1"]
    assert row["pgbench"]["same_tokens_as_decode"] and row["pgbench"]["loop_s"]["median_s"] > 0
    assert res["results"]["pg1-tiny bfloat16"]["read_bound_s_per_step"] > 0
    assert res["above_read_bound"] == []
    if "loop_s" in row["transformers"]:
        assert row["transformers"]["tokens_head"] == row["pgbench"]["tokens_head"]


def test_decode_attention_bench_compares_the_forms(tmp_path):
    _run("benchmarks.decode_attention", "--quick", "--rounds", "1", "--repeats", "2",
         "--out", str(tmp_path / "attn"))
    res = json.loads((tmp_path / "attn.json").read_text())
    for case in res["cases"]:
        assert case["ms"]["grouped"]["n"] == 2 and case["ms"]["attention()"]["median_ms"] > 0
    assert "| tiny, 2 KV heads | bfloat16 | 2 |" in (tmp_path / "attn.md").read_text()


def test_decode_profile_places_the_step_s_time(tmp_path):
    _run("benchmarks.decode_profile", "--quick", "--steps", "3", "--out", str(tmp_path / "prof"))
    res = json.loads((tmp_path / "prof.json").read_text())
    for batch in ("1", "2"):
        e = res["batches"][batch]
        assert e["groups_ms"]["weight product"] > 0 and e["ops_ms"] <= e["span_ms"] + 1e-9
        # Every decoder matrix is read once per step: the tied embedding (the logits) and
        # pg1-tiny's projections, 2 layers of q, k, v, o, gate, up, down.
        assert sum(w["ops"] for w in e["weights"]) == 1 + 2 * 7
        assert e["weight_bytes_read"] == res["weight_bytes_per_step"]  # each weight once per step
        assert "bf16[4096,64]" in {w["weight"] for w in e["weights"]}
    assert "| 2 |" in (tmp_path / "prof.md").read_text()


def test_decode_bench_int8_is_a_third_side_of_float32_tables(tmp_path):
    _run("benchmarks.decode_cpu", "--presets", "pg1-tiny", "--dtypes", "float32", "--batches", "1",
         "--rounds", "1", "--new-tokens", "3", "--int8", "--out", str(tmp_path / "decode"))
    res = json.loads((tmp_path / "decode.json").read_text())
    table = res["results"]["pg1-tiny float32"]
    q = table["batches"]["1"]["pgbench int8"]
    assert q["same_tokens_as_decode"] and q["loop_s"]["median_s"] > 0 and q["loop_speedup_vs_float"] > 0
    assert table["int8_weight_bytes_per_step"] * 4 == table["weight_bytes_per_step"]
    assert "| 1 | pgbench int8 float32 |" in (tmp_path / "decode.md").read_text()


def test_read_bound_counts_each_byte_once():
    from benchmarks.read_bound import measure

    res = measure(1 << 22, repeats=1)
    assert res["bytes"] == 1 << 22 and res["bytes_per_s"] == max(res["by_reader_bytes_per_s"].values())


def test_torch_side_is_skipped_only_where_slow_and_long(monkeypatch):
    from benchmarks import common

    monkeypatch.setattr(common, "torch_rate", lambda dtype: 0.3)  # a CPU without bf16 instructions
    note = common.torch_skip_note("bfloat16", 1e13)  # ~9 h at that rate
    assert note and "0.3 GFLOP/s" in note and "9.3 h" in note
    assert common.torch_skip_note("bfloat16", 1e9) is None  # a tiny preset still compares both sides
    monkeypatch.setattr(common, "torch_rate", lambda dtype: 150.0)
    assert common.torch_skip_note("bfloat16", 1e15) is None
    monkeypatch.setattr(common, "have_transformers", lambda: True)
    assert common.peer_missing("bfloat16", 1e15) is None
    monkeypatch.setattr(common, "torch_rate", lambda dtype: 0.3)
    assert "9.3 h" in common.peer_missing("bfloat16", 1e13)
    monkeypatch.setattr(common, "have_transformers", lambda: False)
    assert "not installed" in common.peer_missing("float32", 1.0)


def test_metrics_bench_quick_writes_where_told(tmp_path):
    _run("benchmarks.metrics_bench", "--quick", "--out", str(tmp_path))
    assert json.loads((tmp_path / "metrics_quick.json").read_text())["vqa"]["n"] > 0


def test_bench_and_bench_quick_cover_every_benchmark():
    from benchmarks import run

    helpers = {"__init__", "common", "flops", "machine", "read_bound", "run", "trace"}
    modules = {f"benchmarks.{p.stem}" for p in (REPO_ROOT / "benchmarks").glob("*.py")} - {
        f"benchmarks.{h}" for h in helpers}
    assert {c[0] for c in run.FULL} == modules
    quick = run.quick("OUT")
    assert {c[0] for c in quick} == modules
    assert all("/tmp" not in " ".join(c) for c in quick)


@pytest.mark.slow  # six compiles of pg1-tiny's training step (~40 s)
def test_lora_memory_bench_runs_on_a_tiny_preset(tmp_path):
    _run("benchmarks.lora_memory", "--config", "pg1-tiny", "--rank", "2", "--out", str(tmp_path))
    res = json.loads((tmp_path / "lora_memory_pg1-tiny.json").read_text())
    kinds = {(r["remat"], r["kind"]): r for r in res["rows"]}
    assert set(kinds) == {(m, k) for m in ("nothing_saveable", "none") for k in ("full", "backward_only", "lora-r2")}
    # depth 2 x rank 2 x (in + out) of q, k, v, o, gate, up, down (width 64, 4 heads of 16, 1 KV head, MLP 128)
    per_rank = (64 + 64) + 2 * (64 + 16) + (64 + 64) + 3 * (64 + 128)
    assert kinds[("none", "lora-r2")]["trained_params"] == 2 * 2 * per_rank


def test_layer_forms_bench_runs_on_a_tiny_preset(tmp_path):
    """Exits non-zero unless both layer forms generate the same tokens."""
    _run("benchmarks.layer_forms", "--preset", "pg1-tiny", "--repeats", "1", "--new-tokens", "4",
         "--out", str(tmp_path / "forms"))
    res = json.loads((tmp_path / "forms.json").read_text())
    assert res["same_tokens"] and set(res["forms"]) == {"per_layer", "stacked"}
    assert "| per_layer |" in (tmp_path / "forms.md").read_text()


def test_dense_orientation_bench_runs_on_tiny_shapes(tmp_path):
    """Checks every layout against a float64 product before timing it."""
    _run("benchmarks.dense_orientation", "--quick", "--repeats", "1", "--out", str(tmp_path / "dense"))
    res = json.loads((tmp_path / "dense.json").read_text())
    assert {"x @ w, w [in, out]", "ops.dense"} <= set(res["cases"][0]["ms"])
    assert "| tiny, 2 rows |" in (tmp_path / "dense.md").read_text()


def test_weight_grad_bench_runs_on_tiny_shapes(tmp_path):
    """Every side times the same product; pgbench's pinned-layout form agrees with JAX's own
    to float32 summation-order differences."""
    _run("benchmarks.weight_grad", "--quick", "--out", str(tmp_path / "wg"))
    res = json.loads((tmp_path / "wg.json").read_text())
    row = res["rows"][0]
    assert {"jax default", "pgbench", "kernel only"} <= set(row["sides"])
    assert row["rel_err_pgbench_vs_default"] < 1e-5
    assert "| tiny: g[64, 256], x[64, 128] |" in (tmp_path / "wg.md").read_text()


def test_train_bench_quick_runs_both_sides_on_the_same_loss(tmp_path):
    """pg1-tiny: both sides step at each dtype; their first losses (same weights, same batch,
    suffix-only loss) agree, which checks that the two steps compute the same thing."""
    _run("benchmarks.train_cpu", "--quick", "--repeats", "1", "--out", str(tmp_path / "train"))
    res = json.loads((tmp_path / "train.json").read_text())
    assert res["flops_per_step"] > 0 and len(res["load_before"]) == 3 and res["machine"]["cores"] >= 1
    for dtype in ("float32", "bfloat16"):
        e = res["dtypes"][dtype]
        assert e["pgbench"]["tokens_per_s"] > 0 and e["pgbench"]["probe_gflops"] > 0
        if "error" not in e["transformers"]:
            assert e["transformers"]["tokens_per_s"] > 0
            assert e["first_loss_rel_diff"] < (1e-4 if dtype == "float32" else 2e-2)
    md = (tmp_path / "train.md").read_text()
    assert "| bfloat16 | pgbench |" in md
    assert "pgbench layers: per layer" in md or "pgbench layers: stacked (lax.scan)" in md
