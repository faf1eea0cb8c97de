"""The synthetic benchmark: scenes drawn from a seed (``scenes``), per-family examples
(``families``), the official-layout writers (``formats``), the ``pgbench synth`` generator
(``generate``), chance levels (``chance``)."""
