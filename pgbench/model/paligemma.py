"""PaliGemma: SigLIP image tokens -> projection -> [image, text] -> prefix-LM Gemma.

Pure functions of (model, inputs); jit them at the call site (``jax.jit`` with
``static_argnames`` for the keyword switches, or ``eqx.filter_jit``).
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp

from pgbench.config import PaliGemmaConfig
from pgbench.model import gemma, siglip
from pgbench.model.array_types import Array, Bool, Float, In, Int, Shaped
from pgbench.model.gemma import Gemma
from pgbench.model.layer_forms import stack_layers, unstack_layers
from pgbench.model.masks import SegmentInfo
from pgbench.model.siglip import SigLIP


class PaliGemma(eqx.Module):
    """The two towers. Each tower owns its own config (``img.cfg``, ``llm.cfg``); the
    model's ``cfg`` is assembled from them, so the three can never disagree. Change a
    config with ``with_config``."""

    img: SigLIP
    llm: Gemma
    name: str = eqx.field(static=True)

    @property
    def cfg(self) -> PaliGemmaConfig:
        return PaliGemmaConfig(name=self.name, vision=self.img.cfg, llm=self.llm.cfg)


def with_config(model: PaliGemma, cfg: PaliGemmaConfig) -> PaliGemma:
    """The model under ``cfg`` (same weights): for switches that shapes do not fix, such
    as Gemma 2's sliding window. Each tower's config is replaced in its one place."""
    return PaliGemma(img=dataclasses.replace(model.img, cfg=cfg.vision),
                     llm=dataclasses.replace(model.llm, cfg=cfg.llm), name=cfg.name)


def cast(model: PaliGemma, dtype) -> PaliGemma:
    """The model with every floating-point parameter in ``dtype`` (None: unchanged)."""
    if dtype is None:
        return model
    dtype = jnp.dtype(dtype)

    def f(a):
        return a.astype(dtype) if eqx.is_array(a) and jnp.issubdtype(a.dtype, jnp.floating) else a
    return jax.tree.map(f, model)


def with_layers(model: PaliGemma, *, stacked: bool) -> PaliGemma:
    """The model with both towers' layers stacked (run with ``lax.scan``) or one block per
    layer (an unrolled loop, the faster form for inference on CPU); see ``layer_forms.py``.
    Eager: copies each converted weight once."""
    convert = stack_layers if stacked else unstack_layers
    return eqx.tree_at(lambda m: (m.img.blocks, m.llm.blocks), model,
                       (convert(model.img.blocks), convert(model.llm.blocks)))


def embed_image(model: PaliGemma, images: Float[In, "B H W 3"], *,
                attn_impl: str = "xla") -> Float[Array, "B Nimg D"]:
    """images f32[B, H, W, 3] in [-1, 1] -> zimg [B, N_img, D] (never rescaled, as big_vision)."""
    return siglip.encode(model.img, images, impl=attn_impl)


def embed_inputs(model: PaliGemma, images, tokens, *, attn_impl: str = "xla"):
    """-> (x [B, N_img + T, D], zimg [B, N_img, D])."""
    zimg = embed_image(model, images, attn_impl=attn_impl)
    text = gemma.embed_tokens(model.llm, tokens)
    return jnp.concatenate([zimg.astype(text.dtype), text], axis=1), zimg


def full_masks(n_img: int, input_mask, mask_ar):
    """Prepend the image tokens (valid, flag 0) to the text masks -> (valid, ar) [B, N_img + T]."""
    b = input_mask.shape[0]
    valid = jnp.concatenate([jnp.ones((b, n_img), bool), input_mask.astype(bool)], axis=1)
    ar = jnp.concatenate([jnp.zeros((b, n_img), jnp.int32), mask_ar.astype(jnp.int32)], axis=1)
    return valid, ar


def forward(model: PaliGemma, images: Float[In, "B H W 3"], tokens: Int[In, "B T"],
            input_mask: Bool[In, "B T"], mask_ar: Int[In, "B T"], *, attn_impl: str = "xla",
            final_softcap: bool = True,
            compute_dtype=None) -> tuple[Float[Array, "B N V"], Float[Array, "B Nimg D"]]:
    """Scoring / training forward over the whole sequence.

    images f32[B, H, W, 3]; tokens i32[B, T]; input_mask bool[B, T]; mask_ar i32[B, T].
    Returns (logits f32[B, N_img + T, V], zimg [B, N_img, D]). Positions run 0..N-1 over
    image and text, as in big_vision's scoring forward. Logits at invalid (padding)
    positions are meaningless. ``final_softcap`` applies Gemma 2's final soft-cap (what
    the LLM's own forward does; big_vision's ``Model.__call__`` returns text logits
    without it). ``compute_dtype`` (e.g. bfloat16) casts parameters and activations;
    norms, attention logits/softmax and the output logits stay float32.
    """
    model = cast(model, compute_dtype)
    x, zimg = embed_inputs(model, images, tokens, attn_impl=attn_impl)
    valid, ar = full_masks(zimg.shape[1], input_mask, mask_ar)
    h, _ = gemma.run_blocks(model.llm, x, SegmentInfo.from_masks(valid, ar), impl=attn_impl)
    return gemma.logits(model.llm, h, final_softcap=final_softcap), zimg


def text_hidden(model: PaliGemma, images, tokens, input_mask, mask_ar, *, attn_impl: str = "xla",
                compute_dtype=None, dropout: float = 0.0, dropout_key=None,
                remat: str | None = None):
    """The LLM's last hidden states at the text positions only: [B, T, D] (before the final
    norm), with the (cast) model -> (h, model). Same sequence and positions as ``forward``;
    ``dropout`` / ``dropout_key`` / ``remat`` are the training switches of
    ``gemma.run_blocks``."""
    model = cast(model, compute_dtype)
    x, zimg = embed_inputs(model, images, tokens, attn_impl=attn_impl)
    valid, ar = full_masks(zimg.shape[1], input_mask, mask_ar)
    h, _ = gemma.run_blocks(model.llm, x, SegmentInfo.from_masks(valid, ar), impl=attn_impl,
                            dropout=dropout, dropout_key=dropout_key, remat=remat)
    return h[:, zimg.shape[1]:], model


def suffix_loss(model: PaliGemma, images: Float[In, "B H W 3"], tokens: Int[In, "B T"],
                input_mask: Bool[In, "B T"], mask_ar: Int[In, "B T"], mask_loss: Shaped[In, "B T"],
                *, label_smoothing: float = 0.0, attn_impl: str = "xla",
                final_softcap: bool = False, compute_dtype=None, dropout: float = 0.0,
                dropout_key=None, remat: str | None = None) -> Float[Array, " B"]:
    """Per-example mean next-token NLL over the suffix: f32[B] (big_vision's trainer).

    Feed tokens[:, :-1], predict tokens[:, 1:], weight by mask_loss[:, 1:] (suffix and EOS),
    divide by the per-example weight sum (clipped at 1); the batch loss is its mean. Only
    the text positions are projected to the vocabulary (image positions never produce
    logits). Logits without the final soft-cap by default (big_vision's ``compute_logits``).
    Label smoothing ε as big_vision: target 1 - ε on the label and ε / (V - 1) on every
    other token. ``dropout`` (with ``dropout_key``) is the LLM's; ``remat`` a
    ``jax.checkpoint_policies`` name applied to each decoder layer.
    """
    h, cast_model = text_hidden(model, images, tokens[:, :-1], input_mask[:, :-1], mask_ar[:, :-1],
                                attn_impl=attn_impl, compute_dtype=compute_dtype, dropout=dropout,
                                dropout_key=dropout_key, remat=remat)
    logits = gemma.logits(cast_model.llm, h, final_softcap=final_softcap)  # f32[B, T-1, V]
    logp = jax.nn.log_softmax(logits, axis=-1)
    targets = tokens[:, 1:]
    label_logp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    nll = -label_logp
    if label_smoothing:
        off = label_smoothing / (logits.shape[-1] - 1)
        nll = -(1.0 - label_smoothing) * label_logp - off * (jnp.sum(logp, axis=-1) - label_logp)
    w = mask_loss[:, 1:].astype(jnp.float32)
    return jnp.sum(nll * w, axis=-1) / jnp.maximum(jnp.sum(w, axis=-1), 1.0)
