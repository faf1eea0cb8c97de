"""Numerical parity against reference cases (shared/reference/FORMAT.md, version 1).

A case directory holds ``case.json``, ``inputs.npz``, ``outputs.npz`` and a checkpoint.
``check_case`` runs pgbench on the inputs and compares every array the case names in
``compare``: floats by max |ours - ref| <= tol * max |ref| over the compared elements,
integers (tokens) for exact equality.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from pgbench.checkpoints.bigvision_npz import read_npz_arrays
from pgbench.errors import ReferenceCaseError

FORMAT_VERSION = 1
KINDS = ("paligemma", "vqvae")


@dataclasses.dataclass(frozen=True)
class Case:
    """A parsed reference case; arrays are loaded lazily by the runner."""

    path: Path
    header: Mapping[str, Any]

    @property
    def kind(self) -> str:
        return self.header["kind"]

    @property
    def compare(self) -> list[str]:
        return list(self.header["compare"])

    @property
    def tolerance(self) -> float:
        return float(self.header.get("tolerance", {}).get("relative_to_max_abs", 1e-5))

    @property
    def checkpoint(self) -> Mapping[str, Any]:
        return self.header["checkpoint"]

    @property
    def checkpoint_path(self) -> Path:
        return self.path / self.checkpoint["path"]

    @property
    def producer(self) -> str:
        p = self.header.get("producer", {})
        return f"{p.get('name', '?')} {p.get('version_or_commit', '')}".strip()

    def inputs(self) -> dict[str, np.ndarray]:
        return _load_npz(self.path / "inputs.npz")

    def outputs(self) -> dict[str, np.ndarray]:
        return _load_npz(self.path / "outputs.npz")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One compared output. ``max_abs``/``max_rel`` are None for integer outputs."""

    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.passed else 'BAD '} {self.name:<16} {self.detail}"


@dataclasses.dataclass(frozen=True)
class Report:
    """What was compared, under which semantics, and the verdict."""

    name: str  # short name for the verdict line
    source: str  # the case directory or checkpoint
    producer: str  # who produced the reference numbers
    comparisons: list[Comparison]
    semantics: list[str]
    compare: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return bool(self.comparisons) and all(c.passed for c in self.comparisons)

    def lines(self) -> list[str]:
        out = [f"case     {self.source}", f"producer {self.producer}"]
        out += [f"using    {s}" for s in self.semantics]
        out += [c.line() for c in self.comparisons]
        verdict = "PASS" if self.passed else "FAIL"
        n_bad = sum(not c.passed for c in self.comparisons)
        out.append(f"{verdict} {self.name}: {len(self.comparisons) - n_bad}/"
                   f"{len(self.comparisons)} outputs within tolerance")
        return out


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    return read_npz_arrays(path, error=ReferenceCaseError,
                           missing_hint="a reference case needs inputs.npz and outputs.npz")


def load_case(path: str | Path) -> Case:
    """Read and validate ``case.json``; raise ReferenceCaseError naming what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise ReferenceCaseError(f"{path}: not a directory (expected a reference case, see FORMAT.md)")
    header_path = path / "case.json"
    if not header_path.is_file():
        raise ReferenceCaseError(f"{header_path}: missing")
    try:
        header = json.loads(header_path.read_text())
    except json.JSONDecodeError as e:
        raise ReferenceCaseError(f"{header_path}: invalid JSON ({e})") from None
    for key in ("format_version", "kind", "checkpoint", "compare"):
        if key not in header:
            raise ReferenceCaseError(f"{header_path}: missing field {key!r}")
    if header["format_version"] != FORMAT_VERSION:
        raise ReferenceCaseError(
            f"{header_path}: format_version {header['format_version']!r} is not supported "
            f"(this pgbench reads version {FORMAT_VERSION})")
    if header["kind"] not in KINDS:
        raise ReferenceCaseError(f"{header_path}: kind {header['kind']!r} is not one of {KINDS}")
    case = Case(path=path, header=header)
    if not case.checkpoint_path.exists():
        raise ReferenceCaseError(f"{header_path}: checkpoint {case.checkpoint_path} does not exist")
    return case


def compare_arrays(name: str, ours: np.ndarray, ref: np.ndarray, *, tol: float,
                   where: np.ndarray | None = None) -> Comparison:
    """Compare one output. ``where`` (broadcastable bool) selects the compared elements."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape:
        return Comparison(name, False, f"shape {ours.shape} != reference {ref.shape}")
    if np.issubdtype(ref.dtype, np.integer) or ref.dtype == bool:
        bad = int(np.sum(ours != ref))
        detail = f"{'identical' if not bad else f'{bad} of {ref.size} differ'} (integers must be identical)"
        if bad:
            first = tuple(int(i) for i in np.argwhere(ours != ref)[0])
            detail += f"; first at {first}: ours {ours[first]} ref {ref[first]}"
        return Comparison(name, bad == 0, detail)
    ours64, ref64 = ours.astype(np.float64), ref.astype(np.float64)
    if where is not None:
        sel = np.broadcast_to(where, ref.shape)
        ours64, ref64 = ours64[sel], ref64[sel]
    if ref64.size == 0:
        return Comparison(name, False, "no elements to compare")
    if not np.all(np.isfinite(ours64)):
        return Comparison(name, False, f"{int(np.sum(~np.isfinite(ours64)))} non-finite values")
    max_abs = float(np.max(np.abs(ours64 - ref64)))
    scale = float(np.max(np.abs(ref64)))
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else np.inf)
    passed = rel <= tol
    return Comparison(name, passed,
                      f"max_abs {max_abs:.3e}  max_rel {rel:.3e}  tol {tol:.1e} (relative to max|ref| "
                      f"{scale:.3e}, {ref64.size} elements)")


# --------------------------------------------------------------------------------------
# Runners: produce our outputs for a case.


def semantics_lines(cfg, attn_impl: str) -> list[str]:
    """The switches where implementations differ, as the report's ``using`` lines."""
    llm = cfg.llm
    window = (f"applied (transformers semantics), window {llm.sliding_window}"
              if llm.apply_sliding_window and llm.sliding_window else "not applied (big_vision semantics)")
    return [
        f"model {cfg.name}: {llm.family}, vision {cfg.vision.image_size}px/{cfg.vision.patch_size}, "
        f"llm width {llm.width} depth {llm.depth} heads {llm.num_heads}/{llm.num_kv_heads}",
        f"sliding window: {window}",
        f"final logit soft-cap: {llm.final_logits_softcap}; attention soft-cap: {llm.attn_logits_softcap}",
        f"attention implementation: {attn_impl}",
    ]


def _paligemma_outputs(case: Case, wanted: list[str], attn_impl: str
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    import jax.numpy as jnp

    from pgbench import decode
    from pgbench.checkpoints import load_checkpoint
    from pgbench.model import paligemma

    ck = case.checkpoint
    # the per-layer form: what predict and evaluation run (the stacked/scanned form is
    # checked against the same cases in tests/model)
    model, cfg = load_checkpoint(case.checkpoint_path, family=ck.get("llm_family"),
                                 options=ck.get("options") or {}, stacked=False)
    inp = case.inputs()
    for key in ("images", "tokens", "input_mask", "mask_ar"):
        if key not in inp:
            raise ReferenceCaseError(f"{case.path / 'inputs.npz'}: missing array {key!r}")
    semantics = semantics_lines(cfg, attn_impl)
    ours: dict[str, np.ndarray] = {}
    where: dict[str, np.ndarray] = {}
    images = jnp.asarray(inp["images"], jnp.float32)
    tokens = jnp.asarray(inp["tokens"], jnp.int32)
    input_mask = jnp.asarray(inp["input_mask"], bool)
    mask_ar = jnp.asarray(inp["mask_ar"], jnp.int32)
    if {"zimg", "logits"} & set(wanted):
        logits, zimg = paligemma.forward(model, images, tokens, input_mask, mask_ar,
                                         attn_impl=attn_impl, final_softcap=True)
        ours["zimg"], ours["logits"] = np.asarray(zimg), np.asarray(logits)
        n_img = ours["zimg"].shape[1]
        valid = np.concatenate([np.ones((tokens.shape[0], n_img), bool), inp["input_mask"]], axis=1)
        where["logits"] = valid[:, :, None]
    if "greedy_tokens" in wanted:
        ref_tokens = case.outputs()["greedy_tokens"]
        if "decode_tokens" in inp:
            d_img, d_tok = inp["decode_images"], inp["decode_tokens"]
            d_mask, d_ar = inp["decode_input_mask"], inp["decode_mask_ar"]
        else:  # the prefix part of the main batch
            d_img, d_tok = inp["images"], inp["tokens"]
            d_mask = inp["input_mask"] & (inp["mask_ar"] == 0)
            d_ar = np.where(d_mask, 0, 1).astype(np.int32)
        eos = int(case.header.get("decode", {}).get("eos_token", 1))
        ours["greedy_tokens"] = np.asarray(decode.greedy_decode(
            model, jnp.asarray(d_img, jnp.float32), jnp.asarray(d_tok, jnp.int32),
            jnp.asarray(d_mask, bool), jnp.asarray(d_ar, jnp.int32),
            max_new_tokens=ref_tokens.shape[1], eos_id=eos, attn_impl=attn_impl))
        semantics.append(f"greedy decoding: {ref_tokens.shape[1]} new tokens, EOS id {eos}, float32 KV cache")
    return ours, where, semantics


def _vqvae_outputs(case: Case, wanted: list[str], attn_impl: str
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    from pgbench import segmentation

    ours = segmentation.run_vqvae_case(case.path)
    return ours, {}, ["segmentation VQ-VAE decoder (vae-oid.npz layout), float32"]


RUNNERS: dict[str, Callable] = {"paligemma": _paligemma_outputs, "vqvae": _vqvae_outputs}


def check_case(path: str | Path, *, attn_impl: str = "xla") -> Report:
    """Run pgbench on a reference case and compare every output the case lists."""
    case = load_case(path)
    ref = case.outputs()
    missing = [name for name in case.compare if name not in ref]
    if missing:
        raise ReferenceCaseError(f"{case.path / 'outputs.npz'}: compare lists {missing} but the file lacks them")
    ours, where, semantics = RUNNERS[case.kind](case, case.compare, attn_impl)
    comparisons = []
    for name in case.compare:
        if name not in ours:
            comparisons.append(Comparison(name, False, "pgbench does not produce this output"))
            continue
        comparisons.append(compare_arrays(name, ours[name], ref[name], tol=case.tolerance,
                                          where=where.get(name)))
    return Report(name=case.path.name, source=str(case.path), producer=case.producer,
                  comparisons=comparisons, semantics=semantics, compare=tuple(case.compare))
