"""Numerical parity against reference cases (shared/reference/FORMAT.md, version 1).

A case directory holds ``case.json``, ``inputs.npz``, ``outputs.npz`` and a checkpoint.
``check_case`` runs pgbench on the inputs and compares every array the case names in
``compare``: floats by max |ours - ref| <= tol * max |ref| over the compared elements,
integers (tokens) for exact equality. Before any model work, ``load_case`` checks every
field of ``case.json`` it reads and ``Case.inputs``/``Case.outputs`` every array the runner
reads (presence, dtype, rank, sizes that must agree); bad input is a ReferenceCaseError
naming the file, which ``pgbench parity`` prints as one line with exit status 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from pgbench.checkpoints.bigvision_npz import read_npz_arrays
from pgbench.errors import InputError, ReferenceCaseError

FORMAT_VERSION = 1
KINDS = ("paligemma", "vqvae")


@dataclasses.dataclass(frozen=True)
class Case:
    """A reference case whose ``case.json`` was validated by :func:`load_case`.

    Arrays are read by :meth:`inputs` / :meth:`outputs`, which validate them too (every array
    a runner reads: presence, dtype, rank, sizes that must agree) before any model work.
    """

    path: Path
    header: Mapping[str, Any]
    kind: str
    compare: tuple[str, ...]
    tolerance: float
    checkpoint: Mapping[str, Any]
    producer: str
    eos_token: int

    @property
    def checkpoint_path(self) -> Path:
        return self.path / self.checkpoint["path"]

    def inputs(self) -> dict[str, np.ndarray]:
        """inputs.npz, checked against the arrays this case's kind reads."""
        path = self.path / "inputs.npz"
        arrays = _load_npz(path)
        INPUT_CHECKS[self.kind](arrays, str(path))
        return arrays

    def outputs(self) -> dict[str, np.ndarray]:
        """outputs.npz; every array named in ``compare`` must be there, and numeric."""
        path = self.path / "outputs.npz"
        arrays = _load_npz(path)
        missing = [name for name in self.compare if name not in arrays]
        if missing:
            raise ReferenceCaseError(f"{path}: compare lists {missing} but the file lacks them")
        for name in self.compare:
            if arrays[name].dtype.kind not in "biuf":
                raise ReferenceCaseError(f"{path}: array {name!r} has dtype {arrays[name].dtype}, "
                                         "expected numbers or booleans")
        if self.kind == "paligemma" and "greedy_tokens" in self.compare:
            _ArrayCheck(arrays, str(path)).require("greedy_tokens", "i", ("B_decode", "K"))
        return arrays


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


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _field(header: Mapping[str, Any], key: str, types: tuple[type, ...], where: str, expected: str,
           *, required: bool = False, default: Any = None) -> Any:
    """``header[key]`` if it has one of ``types`` (None counts as absent unless required)."""
    if key not in header or (header[key] is None and not required):
        if required:
            raise ReferenceCaseError(f"{where}: missing field {key!r} ({expected})")
        return default
    value = header[key]
    if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
        raise ReferenceCaseError(f"{where}: field {key!r} is {value!r}, expected {expected}")
    return value


def load_case(path: str | Path) -> Case:
    """Read and validate ``case.json`` (every field pgbench reads); ReferenceCaseError names
    the file and the field that is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise ReferenceCaseError(f"{path}: not a directory (expected a reference case, see FORMAT.md)")
    header_path = path / "case.json"
    where = str(header_path)
    if not header_path.is_file():
        raise ReferenceCaseError(f"{header_path}: missing")
    try:
        text = header_path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ReferenceCaseError(f"{header_path}: not UTF-8 text ({e}); expected the JSON header of FORMAT.md") from None
    except OSError as e:
        raise ReferenceCaseError(f"{header_path}: unreadable ({e})") from None
    try:
        header = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReferenceCaseError(f"{header_path}: invalid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ReferenceCaseError(f"{header_path}: expected a JSON object, found {type(header).__name__}")
    for key in ("format_version", "kind", "checkpoint", "compare"):
        if key not in header:
            raise ReferenceCaseError(f"{header_path}: missing field {key!r}")
    if not _is_int(header["format_version"]) or header["format_version"] != FORMAT_VERSION:
        raise ReferenceCaseError(
            f"{header_path}: format_version {header['format_version']!r} is not supported "
            f"(this pgbench reads version {FORMAT_VERSION})")
    if header["kind"] not in KINDS:
        raise ReferenceCaseError(f"{header_path}: kind {header['kind']!r} is not one of {KINDS}")
    compare = header["compare"]
    if not (isinstance(compare, list) and compare and all(isinstance(c, str) and c for c in compare)):
        raise ReferenceCaseError(f"{header_path}: field 'compare' is {compare!r}, expected a non-empty "
                                 "list of outputs.npz array names")
    ck = _field(header, "checkpoint", (dict,), where, "an object with 'path'", required=True)
    ck_where = f"{where}: checkpoint"
    ck_path = _field(ck, "path", (str,), ck_where, "a path relative to the case directory", required=True)
    if not ck_path:
        raise ReferenceCaseError(f"{ck_where}: field 'path' is empty")
    _field(ck, "llm_family", (str,), ck_where, '"gemma1" or "gemma2"')
    _field(ck, "options", (dict,), ck_where, "an object of config switches")
    tol_block = _field(header, "tolerance", (dict,), where, 'an object {"relative_to_max_abs": x}', default={})
    tol = _field(tol_block, "relative_to_max_abs", (int, float), f"{where}: tolerance",
                 "a finite number >= 0", default=1e-5)
    if not math.isfinite(tol) or tol < 0:
        raise ReferenceCaseError(f"{where}: tolerance: field 'relative_to_max_abs' is {tol!r}, "
                                 "expected a finite number >= 0")
    producer = _field(header, "producer", (dict,), where, "an object with 'name'", default={})
    decode = _field(header, "decode", (dict,), where, "an object", default={})
    eos = _field(decode, "eos_token", (int,), f"{where}: decode", "an integer token id", default=1)
    if not 0 <= eos < 2**31:
        raise ReferenceCaseError(f"{where}: decode: field 'eos_token' is {eos}, expected a token id "
                                 "in [0, 2**31)")
    case = Case(path=path, header=header, kind=header["kind"], compare=tuple(compare),
                tolerance=float(tol), checkpoint=ck, eos_token=eos,
                producer=f"{producer.get('name', '?')} {producer.get('version_or_commit', '')}".strip())
    if not case.checkpoint_path.exists():
        raise ReferenceCaseError(f"{header_path}: checkpoint {case.checkpoint_path} does not exist")
    return case


# --------------------------------------------------------------------------------------
# inputs.npz: every array a runner reads, checked before any model work.


class _ArrayCheck:
    """Checks arrays of one file against dtype kinds and named dimensions that must agree."""

    KINDS = {"f": ("f", "floating point"), "i": ("iu", "integer"), "bi": ("biu", "bool or integer")}

    def __init__(self, arrays: Mapping[str, np.ndarray], where: str):
        self.arrays, self.where = arrays, where
        self.dims: dict[str, tuple[int, str]] = {}  # dim name -> (size, array that set it)

    def require(self, name: str, kind: str, shape: tuple) -> np.ndarray:
        if name not in self.arrays:
            raise ReferenceCaseError(f"{self.where}: missing array {name!r} ({self._spec(kind, shape)})")
        return self.check(name, kind, shape)

    def check(self, name: str, kind: str, shape: tuple) -> np.ndarray:
        arr = self.arrays[name]
        codes, words = self.KINDS[kind]
        if arr.dtype.kind not in codes:
            raise ReferenceCaseError(f"{self.where}: array {name!r} has dtype {arr.dtype}, expected "
                                     f"{words} ({self._spec(kind, shape)})")
        if arr.ndim != len(shape):
            raise ReferenceCaseError(f"{self.where}: array {name!r} has shape {list(arr.shape)}, expected "
                                     f"rank {len(shape)} ({self._spec(kind, shape)})")
        if 0 in arr.shape:
            raise ReferenceCaseError(f"{self.where}: array {name!r} is empty (shape {list(arr.shape)}, "
                                     f"expected {self._spec(kind, shape)})")
        for size, dim in zip(arr.shape, shape):
            if isinstance(dim, int):
                if size != dim:
                    raise ReferenceCaseError(f"{self.where}: array {name!r} has shape {list(arr.shape)}, "
                                             f"expected {self._spec(kind, shape)}")
            elif dim in self.dims and self.dims[dim][0] != size:
                seen, other = self.dims[dim]
                raise ReferenceCaseError(
                    f"{self.where}: array {name!r} has {dim} = {size} (shape {list(arr.shape)}) but "
                    f"{other!r} has {dim} = {seen}; they must agree")
            else:
                self.dims.setdefault(dim, (size, name))
        return arr

    def _spec(self, kind: str, shape: tuple) -> str:
        return f"{self.KINDS[kind][1]} [{', '.join(map(str, shape))}]"


_DECODE_BATCH = ("decode_images", "decode_tokens", "decode_input_mask", "decode_mask_ar")


def check_paligemma_inputs(arrays: Mapping[str, np.ndarray], where: str) -> None:
    """images f[B, H, W, 3], tokens i[B, T], input_mask and mask_ar [B, T]; the optional
    decode batch complete, with the same H, W."""
    c = _ArrayCheck(arrays, where)
    c.require("images", "f", ("B", "H", "W", 3))
    tokens = c.require("tokens", "i", ("B", "T"))
    c.require("input_mask", "bi", ("B", "T"))
    c.require("mask_ar", "bi", ("B", "T"))
    present = [k for k in _DECODE_BATCH if k in arrays]
    if present:
        for k in _DECODE_BATCH:
            if k not in arrays:
                raise ReferenceCaseError(f"{where}: has {present[0]!r} but lacks {k!r} (the decode batch "
                                         f"needs all of {', '.join(_DECODE_BATCH)})")
        c.check("decode_images", "f", ("B_decode", "H", "W", 3))
        c.check("decode_tokens", "i", ("B_decode", "T_decode"))
        c.check("decode_input_mask", "bi", ("B_decode", "T_decode"))
        c.check("decode_mask_ar", "bi", ("B_decode", "T_decode"))
    else:
        c.dims["B_decode"] = (tokens.shape[0], "tokens")
    for k in ("tokens", "decode_tokens"):
        if k in arrays and arrays[k].size and arrays[k].min() < 0:
            raise ReferenceCaseError(f"{where}: array {k!r} holds a negative token id ({arrays[k].min()})")


def check_vqvae_inputs(arrays: Mapping[str, np.ndarray], where: str) -> None:
    """codes i[M, 16] in [0, 128); optional box path: box_tokens i[N, L] with image_hw i[2],
    gt_masks [N, H, W], gt_boxes f[N, 4]."""
    from pgbench.segmentation import vqvae

    c = _ArrayCheck(arrays, where)
    c.require("codes", "i", ("M", 16))
    try:
        vqvae.check_codes(arrays["codes"], f"{where}: array 'codes'")
    except InputError as e:
        raise ReferenceCaseError(str(e)) from None
    box_keys = [k for k in ("box_tokens", "image_hw", "gt_masks", "gt_boxes") if k in arrays]
    if not box_keys:
        return
    for k in ("box_tokens", "image_hw"):
        if k not in arrays:
            raise ReferenceCaseError(f"{where}: has {box_keys[0]!r} but lacks {k!r} (the box path needs "
                                     "box_tokens and image_hw)")
    c.check("box_tokens", "i", ("N", "L"))
    hw = c.check("image_hw", "i", (2,))
    if hw.min() <= 0:
        raise ReferenceCaseError(f"{where}: array 'image_hw' is {hw.tolist()}, expected a positive height, width")
    if "gt_masks" in arrays:
        gt = c.check("gt_masks", "bi", ("N", int(hw[0]), int(hw[1])))
        if gt.dtype != bool and not np.isin(gt, (0, 1)).all():
            raise ReferenceCaseError(f"{where}: array 'gt_masks' holds values other than 0/1")
    if "gt_boxes" in arrays:
        if not np.isfinite(c.check("gt_boxes", "f", ("N", 4))).all():
            raise ReferenceCaseError(f"{where}: array 'gt_boxes' holds non-finite coordinates")


INPUT_CHECKS: dict[str, Callable[[Mapping[str, np.ndarray], str], None]] = {
    "paligemma": check_paligemma_inputs, "vqvae": check_vqvae_inputs}


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


def _check_against_model(case: Case, inp: Mapping[str, np.ndarray], cfg) -> None:
    """What only the checkpoint can tell: image size and vocabulary (before running it)."""
    where = case.path / "inputs.npz"
    size = cfg.vision.image_size
    for k in ("images", "decode_images"):
        if k in inp and inp[k].shape[1:3] != (size, size):
            raise ReferenceCaseError(f"{where}: array {k!r} has images of {inp[k].shape[1]}x"
                                     f"{inp[k].shape[2]} pixels; the checkpoint takes {size}x{size}")
    for k in ("tokens", "decode_tokens"):
        if k in inp and inp[k].size and inp[k].max() >= cfg.llm.vocab_size:
            raise ReferenceCaseError(f"{where}: array {k!r} holds token id {inp[k].max()}, outside the "
                                     f"checkpoint's vocabulary of {cfg.llm.vocab_size}")


def _paligemma_outputs(case: Case, inp: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray],
                       attn_impl: str
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    import jax.numpy as jnp

    from pgbench import decode
    from pgbench.checkpoints import load_checkpoint
    from pgbench.model import paligemma

    from pgbench.model.layer_forms import default_stacked

    ck = case.checkpoint
    # the backend's layer form: what predict and evaluation run (the other form is
    # checked against the same cases in tests/model)
    model, cfg = load_checkpoint(case.checkpoint_path, family=ck.get("llm_family"),
                                 options=ck.get("options") or {}, stacked=default_stacked())
    _check_against_model(case, inp, cfg)
    wanted = set(case.compare)
    semantics = semantics_lines(cfg, attn_impl)
    ours: dict[str, np.ndarray] = {}
    where: dict[str, np.ndarray] = {}
    input_mask = inp["input_mask"].astype(bool)
    tokens = jnp.asarray(inp["tokens"], jnp.int32)
    if {"zimg", "logits"} & wanted:
        logits, zimg = paligemma.forward(model, jnp.asarray(inp["images"], jnp.float32), tokens,
                                         jnp.asarray(input_mask), jnp.asarray(inp["mask_ar"], jnp.int32),
                                         attn_impl=attn_impl, final_softcap=True)
        ours["zimg"], ours["logits"] = np.asarray(zimg), np.asarray(logits)
        n_img = ours["zimg"].shape[1]
        valid = np.concatenate([np.ones((tokens.shape[0], n_img), bool), input_mask], axis=1)
        where["logits"] = valid[:, :, None]
    if "greedy_tokens" in wanted:
        n_new = ref["greedy_tokens"].shape[1]
        if "decode_tokens" in inp:
            d_img, d_tok = inp["decode_images"], inp["decode_tokens"]
            d_mask, d_ar = inp["decode_input_mask"].astype(bool), inp["decode_mask_ar"]
        else:  # the prefix part of the main batch
            d_img, d_tok = inp["images"], inp["tokens"]
            d_mask = input_mask & (inp["mask_ar"] == 0)
            d_ar = np.where(d_mask, 0, 1).astype(np.int32)
        ours["greedy_tokens"] = np.asarray(decode.greedy_decode(
            model, jnp.asarray(d_img, jnp.float32), jnp.asarray(d_tok, jnp.int32),
            jnp.asarray(d_mask, bool), jnp.asarray(d_ar, jnp.int32),
            max_new_tokens=n_new, eos_id=case.eos_token, attn_impl=attn_impl))
        semantics.append(f"greedy decoding: {n_new} new tokens, EOS id {case.eos_token}, float32 KV cache")
    return ours, where, semantics


def _vqvae_outputs(case: Case, inp: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray],
                   attn_impl: str
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """Always ``masks``, ``masks_raw``, ``quantized``; with ``box_tokens``/``image_hw`` the
    evaluator's box path (``box_*``, ``pasted_float``, ``pasted_binary``), with ``gt_masks``
    / ``gt_boxes`` also ``mask_iou`` / ``box_iou`` (big_vision's seg_vqvae extras)."""
    import jax.numpy as jnp

    from pgbench import segmentation

    vae = segmentation.load_vqvae(case.checkpoint_path, require_encoder=False)
    codes = inp["codes"].astype(np.int32)  # range checked with the inputs
    ours = {"masks": segmentation.decode_codes(vae, codes)}
    ours["masks_raw"] = ours["masks"][..., None]
    ours["quantized"] = np.asarray(segmentation.codes_to_quantized(vae, jnp.asarray(codes)))
    semantics = ["segmentation VQ-VAE decoder (vae-oid.npz layout), float32"]
    if "box_tokens" in inp:
        ours.update(_box_outputs(vae, inp))
        semantics.append("box path: big_vision's segmentation evaluator; token ids in the released "
                         "vocabulary (<loc0000> = 256000, <seg000> = 257024)")
    return ours, {}, semantics


def _box_outputs(vae, inp: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The segmentation evaluator on ``box_tokens`` (ids in the released vocabulary)."""
    hw = tuple(int(v) for v in inp["image_hw"])
    from pgbench import segmentation, structured
    from pgbench.scoring import mask_iou
    from pgbench.tokenizer import RELEASED_LOCSEG

    tm = segmentation.masks_from_token_ids(vae, inp["box_tokens"], hw, locseg=RELEASED_LOCSEG)
    norm = structured.bins_to_normalized(tm.bins)
    pixels = np.array([structured.pixel_box(b, *hw)[0] for b in tm.bins], np.int32).reshape(-1, 4)
    pasted_float = np.full((len(tm.bins),) + hw, np.nan, np.float32)
    for i, (ok, m64, (y1, x1, y2, x2)) in enumerate(zip(tm.pasted, tm.masks64, pixels)):
        if ok:
            pasted_float[i, y1:y2, x1:x2] = segmentation.resize_mask_pil(m64, y2 - y1, x2 - x1)
    out = {"box_valid_tokens": tm.valid, "box_pasted": tm.pasted, "box_norm": norm,
           "box_pixels": pixels, "box_masks64": tm.masks64, "pasted_float": pasted_float,
           "pasted_binary": np.stack(tm.masks) if tm.masks else np.zeros((0,) + hw, bool)}
    if "gt_masks" in inp:
        out["mask_iou"] = np.array([mask_iou.iou(p, g) if ok else 0.0 for p, g, ok
                                    in zip(tm.masks, inp["gt_masks"], tm.pasted)], np.float64)
    if "gt_boxes" in inp:
        out["box_iou"] = np.array([structured.box_iou_normalized(b, g) for b, g
                                   in zip(norm, np.asarray(inp["gt_boxes"]))], np.float64)
    return out


RUNNERS: dict[str, Callable] = {"paligemma": _paligemma_outputs, "vqvae": _vqvae_outputs}


def check_case(path: str | Path, *, attn_impl: str = "xla") -> Report:
    """Run pgbench on a reference case and compare every output the case lists.

    case.json, inputs.npz and outputs.npz are validated first; bad input raises
    ReferenceCaseError before any model work.
    """
    case = load_case(path)
    inp = case.inputs()
    ref = case.outputs()
    ours, where, semantics = RUNNERS[case.kind](case, inp, ref, attn_impl)
    comparisons = []
    for name in case.compare:
        if name not in ours:
            comparisons.append(Comparison(name, False, "pgbench does not produce this output"))
            continue
        comparisons.append(compare_arrays(name, ours[name], ref[name], tol=case.tolerance,
                                          where=where.get(name)))
    return Report(name=case.path.name, source=str(case.path), producer=case.producer,
                  comparisons=comparisons, semantics=semantics, compare=case.compare)
