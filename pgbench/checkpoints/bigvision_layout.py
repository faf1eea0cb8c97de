"""big_vision parameter layout <-> the Equinox model: the one name table of that format.

Parameters travel under the member names of a big_vision ``.npz`` (``img/...``,
``llm/...``, stacked layers with a leading depth axis), as a ``ParamSource`` or a plain
dict. Checkpoint readers produce them (the Hugging Face reader converts to them); the
model is built from them and exported back to them. ``pgbench.model`` knows no file
format: this module is the only place that knows both.

big_vision keeps attention weights as per-head einsum operands (``[H, D, hd]``) and the
MLP's gate and up projections in one ``[2, D, F]`` array, every kernel ``[in, out]``;
the model holds plain ``[out, in]`` matrices (see ``ops.dense``). The reshapes and
transposes between the two live here and only here.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from pgbench.checkpoints.flat import ParamSource, as_source
from pgbench.checkpoints.inplace import pairs_first, transpose_in_place
from pgbench.config import PaliGemmaConfig
from pgbench.errors import CheckpointError
from pgbench.model.gemma import DecoderBlocks, Gemma
from pgbench.model.layer_forms import stack_layers
from pgbench.model.paligemma import PaliGemma
from pgbench.model.siglip import EncoderBlocks, SigLIP

_ENC = "img/Transformer/encoderblock/"
_MHA = _ENC + "MultiHeadDotProductAttention_0/"
SIGLIP_BLOCKS = {
    "ln0_scale": _ENC + "LayerNorm_0/scale", "ln0_bias": _ENC + "LayerNorm_0/bias",
    "q_kernel": _MHA + "query/kernel", "q_bias": _MHA + "query/bias",
    "k_kernel": _MHA + "key/kernel", "k_bias": _MHA + "key/bias",
    "v_kernel": _MHA + "value/kernel", "v_bias": _MHA + "value/bias",
    "out_kernel": _MHA + "out/kernel", "out_bias": _MHA + "out/bias",
    "ln1_scale": _ENC + "LayerNorm_1/scale", "ln1_bias": _ENC + "LayerNorm_1/bias",
    "mlp0_kernel": _ENC + "MlpBlock_0/Dense_0/kernel", "mlp0_bias": _ENC + "MlpBlock_0/Dense_0/bias",
    "mlp1_kernel": _ENC + "MlpBlock_0/Dense_1/kernel", "mlp1_bias": _ENC + "MlpBlock_0/Dense_1/bias",
}
SIGLIP_TOP = {
    "patch_kernel": "img/embedding/kernel", "patch_bias": "img/embedding/bias",
    "pos_embedding": "img/pos_embedding",
    "norm_scale": "img/Transformer/encoder_norm/scale", "norm_bias": "img/Transformer/encoder_norm/bias",
    "head_kernel": "img/head/kernel", "head_bias": "img/head/bias",
}
GEMMA_BLOCKS = {
    "pre_attention_norm": "llm/layers/pre_attention_norm/scale",
    "q_einsum": "llm/layers/attn/q_einsum/w",
    "kv_einsum": "llm/layers/attn/kv_einsum/w",
    "attn_vec_einsum": "llm/layers/attn/attn_vec_einsum/w",
    "pre_ffw_norm": "llm/layers/pre_ffw_norm/scale",
    "gating_einsum": "llm/layers/mlp/gating_einsum",
    "linear": "llm/layers/mlp/linear",
    "post_attention_norm": "llm/layers/post_attention_norm/scale",
    "post_ffw_norm": "llm/layers/post_ffw_norm/scale",
}
GEMMA_TOP = {"input_embedding": "llm/embedder/input_embedding", "final_norm": "llm/final_norm/scale"}
QKV_EINSUM = "llm/layers/attn/qkv_einsum/w"  # [L, 3, H, D, hd], used when KV heads == heads


def expected_shapes(cfg: PaliGemmaConfig) -> dict[str, tuple[int, ...]]:
    """Every big_vision key of a model with this config and its shape."""
    v, g = cfg.vision, cfg.llm
    L, C, M, nh, hd, p = v.depth, v.width, v.mlp_dim, v.num_heads, v.head_dim, v.patch_size
    s = {
        "img/embedding/kernel": (p, p, 3, C), "img/embedding/bias": (C,),
        "img/pos_embedding": (1, v.num_patches, C),
        "img/Transformer/encoder_norm/scale": (C,), "img/Transformer/encoder_norm/bias": (C,),
        "img/head/kernel": (C, g.width), "img/head/bias": (g.width,),
    }
    blk = {"ln0_scale": (C,), "ln0_bias": (C,), "q_kernel": (C, nh, hd), "q_bias": (nh, hd),
           "k_kernel": (C, nh, hd), "k_bias": (nh, hd), "v_kernel": (C, nh, hd), "v_bias": (nh, hd),
           "out_kernel": (nh, hd, C), "out_bias": (C,), "ln1_scale": (C,), "ln1_bias": (C,),
           "mlp0_kernel": (C, M), "mlp0_bias": (M,), "mlp1_kernel": (M, C), "mlp1_bias": (C,)}
    s.update({SIGLIP_BLOCKS[f]: (L, *shape) for f, shape in blk.items()})
    D, N, H, K, E, F = g.depth, g.width, g.num_heads, g.num_kv_heads, g.head_dim, g.mlp_dim
    s.update({"llm/embedder/input_embedding": (g.vocab_size, N), "llm/final_norm/scale": (N,)})
    lay = {"pre_attention_norm": (N,), "attn_vec_einsum": (H, E, N), "pre_ffw_norm": (N,),
           "gating_einsum": (2, N, F), "linear": (F, N)}
    if K == H:
        s[QKV_EINSUM] = (D, 3, H, N, E)
    else:
        lay.update(q_einsum=(H, N, E), kv_einsum=(2, K, N, E))
    if g.post_norms:
        lay.update(post_attention_norm=(N,), post_ffw_norm=(N,))
    s.update({GEMMA_BLOCKS[f]: (D, *shape) for f, shape in lay.items()})
    return s


def check_keys(shapes: Mapping[str, tuple[int, ...]], cfg: PaliGemmaConfig, source: str = "checkpoint"):
    """Raise one CheckpointError listing missing, unexpected and misshapen keys."""
    problems = shape_mismatches(expected_shapes(cfg), shapes)
    if problems:
        raise CheckpointError(f"{source} does not fit model {cfg.name!r} ({cfg.llm.family}): {problems}")


def shape_mismatches(want: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], *,
                     noun: str = "keys", label=lambda key: key) -> str | None:
    """One line naming every missing, unexpected and misshapen entry, or None if all fit."""
    missing = sorted(set(want) - set(found))
    extra = sorted(set(found) - set(want))
    bad = [f"{label(k)}: expected {tuple(want[k])}, found {tuple(found[k])}"
           for k in sorted(set(want) & set(found)) if tuple(found[k]) != tuple(want[k])]
    parts = []
    if missing:
        parts.append(f"missing {noun}: " + ", ".join(missing))
    if extra:
        parts.append(f"unexpected {noun}: " + ", ".join(extra))
    if bad:
        parts.append("wrong shapes: " + "; ".join(bad))
    return " | ".join(parts) or None


def _merge_axes(w, first: int):
    """Merge axis ``first`` (negative) with the next one: -2 turns [..., H, hd] into
    [..., H * hd]; -3 turns [..., H, hd, C] into [..., H * hd, C]."""
    s = w.shape
    i = len(s) + first
    return w.reshape(*s[:i], s[i] * s[i + 1], *s[i + 2:])


def _swap(w):
    """[..., m, n] -> [..., n, m] as a view (numpy or jax)."""
    return jnp.swapaxes(w, -1, -2) if isinstance(w, jax.Array) else np.swapaxes(w, -1, -2)


def _out_in(w, owned: bool):
    """A big_vision kernel [..., in, out] as the model's [..., out, in].

    Free when the transposed view is already C-contiguous (the Hugging Face reader
    returns such views); transposed in place when the array is ours; otherwise a view
    that ``to_jax`` copies."""
    t = _swap(w)
    if isinstance(w, jax.Array) or t.flags.c_contiguous:
        return t
    if owned and w.flags.c_contiguous and w.flags.writeable:
        return transpose_in_place(w)
    return t


def _siglip_fields(take, cfg: PaliGemmaConfig, owned: bool = False):
    """Yield (field, array with a leading [L]) for EncoderBlocks, reading each key once."""
    for f, k in SIGLIP_BLOCKS.items():
        w = take(k)  # kernels [L, in, out] with the heads split: [C, nh, hd] / [nh, hd, C]
        if f in ("q_kernel", "k_kernel", "v_kernel", "q_bias", "k_bias", "v_bias"):
            w = _merge_axes(w, -2)
        elif f == "out_kernel":
            w = _merge_axes(w, -3)
        if f.endswith("_kernel"):
            w = _out_in(w, owned)
        yield f, w


def _gemma_fields(take, has_key, cfg: PaliGemmaConfig, owned: bool = False):
    """Yield (field, array with a leading [L]) for DecoderBlocks, reading each key once.
    ``owned``: the arrays ``take`` returns are ours to reorder in place."""
    g = cfg.llm
    yield "pre_attention_norm", take(GEMMA_BLOCKS["pre_attention_norm"])
    # Per-head [D, hd] blocks become [hd, D], so that merging (H, hd) gives [H * hd, D].
    if has_key(QKV_EINSUM):
        qkv = _out_in(take(QKV_EINSUM), owned)  # [L, 3, H, hd, D]
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    else:
        q = _out_in(take(GEMMA_BLOCKS["q_einsum"]), owned)  # [L, H, hd, D]
        kv = _out_in(take(GEMMA_BLOCKS["kv_einsum"]), owned)  # [L, 2, KVH, hd, D]
        k, v = kv[:, 0], kv[:, 1]
    yield "q", _merge_axes(q, -3)
    yield "k", _merge_axes(k, -3)
    yield "v", _merge_axes(v, -3)
    del q, k, v
    yield "attn_out", _out_in(_merge_axes(take(GEMMA_BLOCKS["attn_vec_einsum"]), -3), owned)
    yield "pre_ffw_norm", take(GEMMA_BLOCKS["pre_ffw_norm"])
    gating = take(GEMMA_BLOCKS["gating_einsum"])  # [L, 2, D, F]
    if owned and isinstance(gating, np.ndarray) and gating.flags.c_contiguous and gating.flags.writeable:
        gating = _out_in(pairs_first(gating), owned)  # in place: [2, L, F, D]
        yield "gate", gating[0]
        yield "up", gating[1]
    else:
        yield "gate", _out_in(gating[:, 0], owned)
        yield "up", _out_in(gating[:, 1], owned)
    del gating
    yield "down", _out_in(take(GEMMA_BLOCKS["linear"]), owned)
    for f in ("post_attention_norm", "post_ffw_norm"):
        yield f, take(GEMMA_BLOCKS[f]) if g.post_norms else None


def _build_blocks(cls, fields, depth: int, stacked: bool, to_jax, prefix: str):
    """Per-field numpy arrays [L, ...] -> one stacked ``cls`` or a tuple of per-layer ones.
    ``to_jax(array, name)`` gets the model's parameter name (``{prefix}/gate``, per layer
    ``{prefix}/3/gate``)."""
    if stacked:
        return cls(**{f: None if w is None else to_jax(w, f"{prefix}/{f}") for f, w in fields})
    layers = [{} for _ in range(depth)]
    for f, w in fields:
        for i in range(depth):
            layers[i][f] = None if w is None else to_jax(w[i], f"{prefix}/{i}/{f}")
        del w
    return tuple(cls(**kw) for kw in layers)


def from_bigvision_params(flat: ParamSource | Mapping[str, np.ndarray], cfg: PaliGemmaConfig, *,
                          dtype=None, source: str = "checkpoint", consume: bool = False,
                          stacked: bool = True, sharding=None) -> PaliGemma:
    """Build the model from big_vision-named parameters (checked first against ``cfg``).

    ``flat`` is a ``ParamSource`` (a checkpoint reader, random weights) or a plain dict.
    ``dtype`` casts every parameter (default: keep the stored dtype). Arrays a source
    hands over (``fresh``), and a dict's arrays with ``consume=True`` (popped from it as
    they are converted), become the model's memory: a large checkpoint never exists twice,
    and kernels and the MLP's gating array are reordered in place. ``stacked=False``
    builds both towers' layers as tuples of per-layer blocks (see ``layer_forms.py``).
    ``sharding(name, shape) -> jax.sharding.Sharding`` (``name`` the model's parameter
    name, e.g. ``llm/blocks/gate``): each tensor is cast on the host and copied straight
    into its shards on their devices, never whole onto one device (see ``pgbench.sharding``).
    """
    src = as_source(flat, give=consume)
    owned = src.fresh
    shapes = src.shapes()
    check_keys(shapes, cfg, source)

    def take(key):
        arr = src.read(key)
        return arr if isinstance(arr, jax.Array) else np.asarray(arr)  # jax arrays (and tracers) stay

    def to_jax(arr, name: str):
        if sharding is not None:
            return _to_shards(arr, sharding(name, arr.shape), dtype)
        if isinstance(arr, jax.Array) or (dtype is not None and np.dtype(dtype) != arr.dtype):
            return jnp.asarray(arr, dtype=dtype)
        # A handed-over array is ours: device_put shares a 64-byte aligned C-contiguous
        # buffer (readers allocate them so) instead of copying it. A caller's array is copied.
        return jax.device_put(arr) if owned else jnp.array(arr)

    img_blocks = _build_blocks(EncoderBlocks, _siglip_fields(take, cfg, owned=owned), cfg.vision.depth,
                               stacked, to_jax, "img/blocks")
    img_top = {f: take(k) for f, k in SIGLIP_TOP.items()}
    img_top["head_kernel"] = _out_in(img_top["head_kernel"], owned)
    img = SigLIP(blocks=img_blocks, cfg=cfg.vision, **{f: to_jax(w, f"img/{f}") for f, w in img_top.items()})
    llm_blocks = _build_blocks(DecoderBlocks, _gemma_fields(take, shapes.__contains__, cfg, owned=owned),
                               cfg.llm.depth, stacked, to_jax, "llm/blocks")
    llm = Gemma(blocks=llm_blocks, cfg=cfg.llm, **{f: to_jax(take(k), f"llm/{f}") for f, k in GEMMA_TOP.items()})
    return PaliGemma(img=img, llm=llm, name=cfg.name)


def _to_shards(arr, sharding, dtype):
    """A host array (or view) -> a jax.Array laid out by ``sharding``: each device receives
    only its own slice, copied out of ``arr`` (cast to ``dtype`` on the host first)."""
    if isinstance(arr, jax.Array):
        return jax.device_put(arr if dtype is None else arr.astype(dtype), sharding)
    if dtype is not None and np.dtype(dtype) != arr.dtype:
        arr = arr.astype(dtype)
    return jax.make_array_from_callback(arr.shape, sharding, lambda index: np.ascontiguousarray(arr[index]))


def _stacked_numpy(blocks) -> dict[str, np.ndarray | None]:
    """Every field of stacked or per-layer blocks as one numpy array with a leading [L]."""
    blocks = stack_layers(blocks)
    return {f.name: None if getattr(blocks, f.name) is None else np.asarray(getattr(blocks, f.name))
            for f in dataclasses.fields(blocks)}


def to_bigvision_params(model: PaliGemma) -> dict[str, np.ndarray]:
    """The model's parameters under big_vision's names (numpy arrays, stored dtype; the
    kernels may be transposed views)."""
    v, g = model.cfg.vision, model.cfg.llm
    nh, hd = v.num_heads, v.head_dim
    img = _stacked_numpy(model.img.blocks)
    for f in ("q_kernel", "k_kernel", "v_kernel"):
        img[f] = _swap(img[f]).reshape(v.depth, v.width, nh, hd)
    for f in ("q_bias", "k_bias", "v_bias"):
        img[f] = img[f].reshape(v.depth, nh, hd)
    img["out_kernel"] = _swap(img["out_kernel"]).reshape(v.depth, nh, hd, v.width)
    img["mlp0_kernel"], img["mlp1_kernel"] = _swap(img["mlp0_kernel"]), _swap(img["mlp1_kernel"])
    out = {k: img[f] for f, k in SIGLIP_BLOCKS.items()}
    out.update({k: np.asarray(getattr(model.img, f)) for f, k in SIGLIP_TOP.items()})
    out[SIGLIP_TOP["head_kernel"]] = _swap(out[SIGLIP_TOP["head_kernel"]])
    out.update({k: np.asarray(getattr(model.llm, f)) for f, k in GEMMA_TOP.items()})
    llm = _stacked_numpy(model.llm.blocks)

    def heads(w, n):  # [L, n * hd, D] -> [L, n, D, hd]
        return _swap(w.reshape(g.depth, n, g.head_dim, g.width))

    q, k, v_ = heads(llm["q"], g.num_heads), heads(llm["k"], g.num_kv_heads), heads(llm["v"], g.num_kv_heads)
    if g.num_kv_heads == g.num_heads:
        out[QKV_EINSUM] = np.stack([q, k, v_], axis=1)
    else:
        out[GEMMA_BLOCKS["q_einsum"]] = np.ascontiguousarray(q)
        out[GEMMA_BLOCKS["kv_einsum"]] = np.stack([k, v_], axis=1)
    out[GEMMA_BLOCKS["attn_vec_einsum"]] = _swap(llm["attn_out"]).reshape(g.depth, g.num_heads, g.head_dim, -1)
    out[GEMMA_BLOCKS["gating_einsum"]] = np.stack([_swap(llm["gate"]), _swap(llm["up"])], axis=1)
    for f in ("pre_attention_norm", "pre_ffw_norm", "post_attention_norm", "post_ffw_norm"):
        if llm[f] is not None:
            out[GEMMA_BLOCKS[f]] = llm[f]
    out[GEMMA_BLOCKS["linear"]] = _swap(llm["down"])
    return out
