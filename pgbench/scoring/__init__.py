"""Pure-Python scorers behind the `metrics/<name>` evaluate modules.

Each submodule reproduces one official evaluation (named in its docstring) and returns
unrounded fractions; the evaluate wrappers in `metrics/` only validate and delegate here,
so the same code is importable without `evaluate`.
"""
