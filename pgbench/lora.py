"""LoRA: low-rank adapters on the Gemma decoder's projections, the memory-lean transfer.

An adapted projection ``W`` (``f[out, in]``, ``ops.dense``'s layout, which is also torch's
``nn.Linear.weight``) gets two small matrices, ``A: f32[r, in]`` and ``B: f32[out, r]``
(PEFT's ``lora_A`` / ``lora_B``), and the layer computes with::

    W' = W + (alpha / r) * B @ A

``A`` is drawn from N(0, 1 / in) (seeded), ``B`` is zero, so at step 0 ``W' = W`` exactly.
Only the adapters train; the whole base model is frozen (no gradient, no optimizer state).

The adapters sit inside the decoder's blocks (:class:`LoraBlocks`, a ``DecoderBlocks`` with
an extra ``lora`` field), so stacked layers carry them with the same leading ``[L]`` axis and
``lax.scan`` slices them with the rest. The decoder asks each layer for its weights
(``DecoderBlocks.weights``) at the start of the layer, and a :class:`LoraBlocks` layer merges
there: one layer's merged matrices exist at a time, and under rematerialisation they are
recomputed in the backward pass rather than kept. :func:`merged` gives the plain model
(every layer merged) for evaluation and export.

Parameter names (``optim.param_names``): the base weights keep theirs (``llm/blocks/q``),
the adapters are ``llm/blocks/lora/<target>/a`` and ``.../b`` (``llm/blocks/<i>/lora/...``
for per-layer blocks); ``sharding.PARAM_SPECS`` places them beside their projections.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from pgbench.errors import InputError
from pgbench.model.gemma import DecoderBlocks
from pgbench.model.layer_forms import is_stacked

# The adaptable projections, by their DecoderBlocks field (attn_out is the attention's
# output projection, "o" in the LoRA literature and o_proj in Hugging Face).
TARGETS = ("q", "k", "v", "attn_out", "gate", "up", "down")
TARGET_GROUPS = {"all": TARGETS, "attn": ("q", "k", "v", "attn_out"), "mlp": ("gate", "up", "down"),
                 "o": ("attn_out",)}
HF_NAMES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "attn_out": "o_proj", "gate": "gate_proj",
            "up": "up_proj", "down": "down_proj"}
_ADAPTER_NAME = re.compile(r"llm/blocks/(\d+/)?lora/.*")


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """What to adapt and how: rank r, alpha (scale = alpha / r), target projections."""

    rank: int
    alpha: float
    targets: tuple[str, ...] = TARGETS

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def parse_targets(values: Sequence[str] | None) -> tuple[str, ...] | None:
    """``--lora-targets q,v --lora-targets mlp`` -> ("q", "v", "gate", "up", "down") in
    :data:`TARGETS` order; groups: all, attn, mlp (and "o" for attn_out). An unknown name is
    an :class:`InputError` listing the valid ones."""
    if values is None:
        return None
    chosen = set()
    for value in values:
        for name in (p.strip() for p in value.split(",")):
            if not name:
                continue
            if name not in TARGETS and name not in TARGET_GROUPS:
                raise InputError(f"--lora-targets {name!r} is not a projection; use any of "
                                 f"{', '.join(TARGETS)} or the groups {', '.join(TARGET_GROUPS)}")
            chosen.update(TARGET_GROUPS.get(name, (name,)))
    if not chosen:
        raise InputError("--lora-targets names no projection")
    return tuple(t for t in TARGETS if t in chosen)


def make_spec(rank: int | None, alpha: float | None = None,
              targets: Sequence[str] | None = None) -> LoraSpec | None:
    """The LoraSpec of the flags (None: no LoRA). alpha defaults to the rank (scale 1);
    targets to every projection. Bad values are one :class:`InputError`."""
    if rank is None:
        if alpha is not None or targets is not None:
            raise InputError("--lora-alpha / --lora-targets need --lora-rank")
        return None
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank <= 0:
        raise InputError(f"--lora-rank must be a positive integer, got {rank!r}")
    alpha = float(rank if alpha is None else alpha)
    if not np.isfinite(alpha) or alpha <= 0:
        raise InputError(f"--lora-alpha must be a positive number, got {alpha!r}")
    targets = TARGETS if targets is None else parse_targets(targets)
    return LoraSpec(rank=int(rank), alpha=alpha, targets=targets)


class Adapter(eqx.Module):
    """One projection's adapter; stacked layers add a leading [L] to both."""

    a: jax.Array  # f32[r, in], drawn from N(0, 1/in)
    b: jax.Array  # f32[out, r], zero at init


class LoraBlocks(DecoderBlocks):
    """Decoder blocks (stacked or one layer) with adapters on some projections: reads as
    DecoderBlocks, and :meth:`weights` gives the merged ones."""

    lora: dict  # target name -> Adapter
    scale: float = eqx.field(static=True)

    def weights(self) -> DecoderBlocks:
        """Plain DecoderBlocks with W + scale * B @ A for every adapted projection."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(DecoderBlocks)}
        for name, ad in self.lora.items():
            fields[name] = merge(fields[name], ad, self.scale)
        return DecoderBlocks(**fields)


def merge(w, adapter: Adapter, scale: float):
    """w[..., out, in] + scale * b[..., out, r] @ a[..., r, in], summed in float32 and
    returned in w's dtype (a bfloat16 w rounds the sum to bfloat16, in training as in the
    export)."""
    delta = jnp.matmul(adapter.b, adapter.a, preferred_element_type=jnp.float32)
    return (w.astype(jnp.float32) + jnp.float32(scale) * delta).astype(w.dtype)


def _stacked_shapes(blocks) -> dict[str, tuple[int, int, int]]:
    """(L, out, in) of every adaptable projection of stacked or per-layer blocks."""
    if isinstance(blocks, tuple):
        return {t: (len(blocks), *getattr(blocks[0], t).shape) for t in TARGETS}
    return {t: tuple(getattr(blocks, t).shape) for t in TARGETS}


def _init_adapters(shapes: dict[str, tuple[int, int, int]], spec: LoraSpec, key) -> dict[str, Adapter]:
    """Stacked adapters: a f32[L, r, in] ~ N(0, 1/in), b f32[L, out, r] = 0; each target its
    own key (fold_in of its index in TARGETS)."""
    out = {}
    for name in spec.targets:
        depth, n_out, n_in = shapes[name]
        k = jax.random.fold_in(key, TARGETS.index(name))
        a = jax.random.normal(k, (depth, spec.rank, n_in), jnp.float32) / np.sqrt(n_in).astype(np.float32)
        out[name] = Adapter(a=a, b=jnp.zeros((depth, n_out, spec.rank), jnp.float32))
    return out


def _with_lora(blocks: DecoderBlocks, lora: dict, scale: float) -> LoraBlocks:
    fields = {f.name: getattr(blocks, f.name) for f in dataclasses.fields(DecoderBlocks)}
    return LoraBlocks(**fields, lora=lora, scale=scale)


def attach(model, spec: LoraSpec, key):
    """The model with fresh adapters on its decoder (``spec``'s targets), seeded by ``key``.
    Its forward equals ``model``'s exactly (B = 0). Stacked or per-layer blocks alike; the
    same key draws the same adapters in either form."""
    return _with_adapters(model, _init_adapters(_stacked_shapes(model.llm.blocks), spec, key), spec.scale)


def _with_adapters(model, lora: dict[str, Adapter], scale: float):
    """The model's decoder blocks as LoraBlocks carrying ``lora`` (stacked adapters, [L, ...];
    per-layer blocks get layer i's slice)."""
    blocks = model.llm.blocks
    if is_stacked(blocks):
        new = _with_lora(blocks, lora, scale)
    else:
        new = tuple(_with_lora(layer, jax.tree.map(lambda x: x[i], lora), scale)
                    for i, layer in enumerate(blocks))
    return eqx.tree_at(lambda m: m.llm.blocks, model, new)


def has_lora(model) -> bool:
    blocks = model.llm.blocks
    return isinstance(blocks[0] if isinstance(blocks, tuple) else blocks, LoraBlocks)


def merged(model):
    """The plain model: every LoraBlocks replaced by its merged DecoderBlocks (the model
    unchanged when it has no adapters). Eager outside jit: one merged copy of each adapted
    matrix."""
    if not has_lora(model):
        return model
    blocks = model.llm.blocks
    new = tuple(b.weights() for b in blocks) if isinstance(blocks, tuple) else blocks.weights()
    return eqx.tree_at(lambda m: m.llm.blocks, model, new)


def trainable_mask(model):
    """A bool pytree like the model: True on the adapters only (the base is frozen)."""
    from pgbench.optim import _name
    return jax.tree_util.tree_map_with_path(
        lambda p, x: eqx.is_array(x) and bool(_ADAPTER_NAME.fullmatch(_name(p))), model)


def adapter_arrays(model) -> dict[str, np.ndarray]:
    """``{"<target>/a": f32[L, r, in], "<target>/b": f32[L, out, r]}`` as host arrays
    (per-layer blocks stacked)."""
    blocks = model.llm.blocks
    if isinstance(blocks, tuple):
        lora = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *[b.lora for b in blocks])
    else:
        lora = blocks.lora
    return {f"{t}/{part}": np.asarray(getattr(ad, part)) for t, ad in lora.items() for part in ("a", "b")}


def save_npz(model, spec: LoraSpec, path: Path) -> Path:
    """Write the adapters alone: ``<target>/a``, ``<target>/b`` (:func:`adapter_arrays`) plus
    scalars ``rank``, ``alpha`` and ``scale``. Layer l of target t changes by
    ``scale * b[l] @ a[l]``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = adapter_arrays(model)
    arrays.update(rank=np.int32(spec.rank), alpha=np.float32(spec.alpha), scale=np.float32(spec.scale))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def apply_npz(model, path: Path):
    """A plain model (no adapters attached) with a :func:`save_npz` file merged in."""
    with np.load(path) as f:
        scale = float(f["scale"])
        names = sorted({k.split("/")[0] for k in f.files if "/" in k})
        lora = {t: Adapter(a=jnp.asarray(f[f"{t}/a"]), b=jnp.asarray(f[f"{t}/b"])) for t in names}
    shapes = _stacked_shapes(model.llm.blocks)
    for t, ad in lora.items():
        w = shapes.get(t)
        if w is None or ad.b.shape[:2] != w[:2] or ad.a.shape[::2] != w[::2]:
            raise InputError(f"{path}: adapter {t!r} (a {ad.a.shape}, b {ad.b.shape}) does not fit "
                             f"this model's projections")
    return merged(_with_adapters(model, lora, scale))
