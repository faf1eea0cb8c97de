"""benchmarks.machine: what a results file says about its CPU."""

from benchmarks.machine import describe, isa_tag


def test_isa_tag_tells_apart_the_cpus_the_figures_came_from():
    assert isa_tag(["amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512f"]) == "AMX"
    assert isa_tag(["avx512_bf16", "avx512bw", "avx512f"]) == "AVX-512 BF16"
    assert isa_tag(["avx512bw", "avx512f"]) == "AVX-512, no BF16"
    assert isa_tag([]) == "no AVX-512"


def test_described_cpu_names_its_instruction_sets():
    m = describe()
    assert m["cpu"].endswith(", " + isa_tag(m["cpu_flags"]))
