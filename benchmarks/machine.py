"""A description of the machine and software versions, stored beside every benchmark figure."""

from __future__ import annotations

import datetime
import os
import platform


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx512", "amx", "avx_vnni")))
    except OSError:
        pass
    return []


def isa_tag(flags: list[str]) -> str:
    """The instruction sets that decide bfloat16 speed on a CPU, in a few words: two CPUs
    with the same model name (an "AMD EPYC" with or without AVX-512) differ there."""
    if any(f.startswith("amx_bf16") for f in flags):
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX-512 BF16"
    if "avx512f" in flags:
        return "AVX-512, no BF16"
    return "no AVX-512"


def describe() -> dict:
    import jax
    import numpy

    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    flags = _cpu_flags()
    out = {"cpu": f"{_cpu_model()}, {isa_tag(flags)}", "cpu_flags": flags, "cores": os.cpu_count(),
           "memory_gib": round(mem, 1), "python": platform.python_version(), "jax": jax.__version__,
           "jax_backend": jax.default_backend(), "numpy": numpy.__version__,
           "xla_flags": os.environ.get("XLA_FLAGS", ""),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    try:
        import torch
        import transformers
        out.update(torch=torch.__version__, transformers=transformers.__version__)
    except ImportError:
        pass
    return out


def header(m: dict, res: dict | None = None) -> str:
    """The results files' machine line: CPU, cores, memory, the library versions in ``m``
    (``describe()``), the date, and the load average around the run when ``res`` has it."""
    libs = "".join(f", {name} {m[name]}" for name in ("torch", "transformers") if m.get(name))
    line = (f"Machine: {m['cpu']} ({m['cores']} cores), {m['memory_gib']} GiB; jax {m['jax']}"
            f"{libs}; {m['date']}.")
    if res is not None and "load_before" in res:
        line += (f" Load average (1/5/15 min) before {res['load_before']}, "
                 f"after {res['load_after']}.")
    return line
