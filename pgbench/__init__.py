"""pgbench: PaliGemma 1/2 in JAX, and the benchmark suite that reproduces its transfers."""

__version__ = "0.1.0"
