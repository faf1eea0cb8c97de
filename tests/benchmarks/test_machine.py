"""benchmarks.machine: what a results file says about its CPU."""

from benchmarks import machine
from benchmarks.machine import describe, isa_tag


def test_isa_tag_tells_apart_the_cpus_the_figures_came_from():
    assert isa_tag(["amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512f"]) == "AMX"
    assert isa_tag(["avx512_bf16", "avx512bw", "avx512f"]) == "AVX-512 BF16"
    assert isa_tag(["avx512bw", "avx512f"]) == "AVX-512, no BF16"
    assert isa_tag([]) == "no AVX-512"


def test_described_cpu_names_its_instruction_sets():
    m = describe()
    assert m["cpu"].endswith(", " + isa_tag(m["cpu_flags"]))


def test_header_names_the_libraries_present_and_the_load():
    m = {"cpu": "AMD EPYC, AVX-512 BF16", "cores": 2, "memory_gib": 23.5, "jax": "0.10.2",
         "torch": "2.13.0", "date": "2026-12-07 16:40 UTC"}
    assert machine.header(m) == ("Machine: AMD EPYC, AVX-512 BF16 (2 cores), 23.5 GiB; jax 0.10.2, "
                                 "torch 2.13.0; 2026-12-07 16:40 UTC.")
    line = machine.header(dict(m, transformers="5.25.0"),
                          {"load_before": [0.1, 0.2, 0.3], "load_after": [1.0, 1.1, 1.2]})
    assert ", torch 2.13.0, transformers 5.25.0;" in line
    assert line.endswith("Load average (1/5/15 min) before [0.1, 0.2, 0.3], after [1.0, 1.1, 1.2].")
