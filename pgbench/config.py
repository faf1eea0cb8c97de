"""Model configurations: frozen dataclasses and a preset for every released PaliGemma.

Sizes follow the released checkpoints (PaliGemma 1: SigLIP So400m/14 + Gemma 2B;
PaliGemma 2: SigLIP So400m/14 + Gemma 2 2B / 9B / 27B). The tiny presets mirror the
big_vision reference cases in ``shared/reference/big_vision`` and are what tests use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

Family = Literal["gemma1", "gemma2"]
QueryNorm = Literal["rsqrt_head_dim", "rsqrt_emb_per_head"]

PALIGEMMA_VOCAB = 257152  # 256000 text + 1024 <locNNNN> + 128 <segNNN>


@dataclass(frozen=True)
class SigLIPConfig:
    """SigLIP ViT image encoder (no CLS token, no pooling: one output per patch)."""

    width: int = 1152
    depth: int = 27
    mlp_dim: int = 4304
    num_heads: int = 16
    patch_size: int = 14
    image_size: int = 224
    layernorm_eps: float = 1e-6

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads


@dataclass(frozen=True)
class GemmaConfig:
    """Gemma 1 / Gemma 2 decoder.

    ``sliding_window`` is the window of Gemma 2's local layers (even layer indices,
    as in the released Gemma 2 models). big_vision never applies it, so
    ``apply_sliding_window`` defaults to False; set it to reproduce transformers.
    """

    family: Family = "gemma1"
    width: int = 2048
    depth: int = 18
    num_heads: int = 8
    num_kv_heads: int = 1
    head_dim: int = 256
    mlp_dim: int = 16384
    vocab_size: int = PALIGEMMA_VOCAB
    attn_logits_softcap: float | None = None
    final_logits_softcap: float | None = None
    post_norms: bool = False
    query_pre_attn_norm: QueryNorm = "rsqrt_head_dim"
    sliding_window: int | None = None
    apply_sliding_window: bool = False
    rope_base: float = 10_000.0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.family not in ("gemma1", "gemma2"):
            raise ValueError(f"unknown LLM family {self.family!r}: expected 'gemma1' or 'gemma2'")

    @property
    def query_scale(self) -> float:
        """Factor applied to queries after RoPE."""
        if self.query_pre_attn_norm == "rsqrt_emb_per_head":
            return (self.width // self.num_heads) ** -0.5
        return self.head_dim**-0.5

    def layer_is_local(self, layer: int) -> bool:
        """Whether ``layer`` is a sliding-window layer (Gemma 2: even layers)."""
        return self.family == "gemma2" and self.sliding_window is not None and layer % 2 == 0


@dataclass(frozen=True)
class PaliGemmaConfig:
    """Image encoder + linear projection + decoder."""

    name: str
    vision: SigLIPConfig = field(default_factory=SigLIPConfig)
    llm: GemmaConfig = field(default_factory=GemmaConfig)

    @property
    def image_size(self) -> int:
        return self.vision.image_size

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_patches

    def replace(self, **changes) -> "PaliGemmaConfig":
        return dataclasses.replace(self, **changes)

    def replace_llm(self, **changes) -> "PaliGemmaConfig":
        return dataclasses.replace(self, llm=dataclasses.replace(self.llm, **changes))

    def replace_vision(self, **changes) -> "PaliGemmaConfig":
        return dataclasses.replace(self, vision=dataclasses.replace(self.vision, **changes))


# ---------------------------------------------------------------------------------------
# Released decoders.

GEMMA_2B = GemmaConfig(
    family="gemma1", width=2048, depth=18, num_heads=8, num_kv_heads=1, head_dim=256,
    mlp_dim=16384,
)


def _gemma2(width: int, depth: int, heads: int, kv: int, head_dim: int, mlp: int,
            qnorm: QueryNorm = "rsqrt_head_dim") -> GemmaConfig:
    return GemmaConfig(
        family="gemma2", width=width, depth=depth, num_heads=heads, num_kv_heads=kv,
        head_dim=head_dim, mlp_dim=mlp, attn_logits_softcap=50.0, final_logits_softcap=30.0,
        post_norms=True, query_pre_attn_norm=qnorm, sliding_window=4096,
        apply_sliding_window=False,
    )


GEMMA2_2B = _gemma2(2304, 26, 8, 4, 256, 9216)
GEMMA2_9B = _gemma2(3584, 42, 16, 8, 256, 14336)
GEMMA2_27B = _gemma2(4608, 46, 32, 16, 128, 36864, qnorm="rsqrt_emb_per_head")

SO400M = SigLIPConfig()


def _preset(name: str, llm: GemmaConfig, res: int) -> PaliGemmaConfig:
    return PaliGemmaConfig(name=name, vision=dataclasses.replace(SO400M, image_size=res), llm=llm)


PRESETS: dict[str, PaliGemmaConfig] = {}
for _res in (224, 448, 896):
    PRESETS[f"pg1-3b-{_res}"] = _preset(f"pg1-3b-{_res}", GEMMA_2B, _res)
    PRESETS[f"pg2-3b-{_res}"] = _preset(f"pg2-3b-{_res}", GEMMA2_2B, _res)
    PRESETS[f"pg2-10b-{_res}"] = _preset(f"pg2-10b-{_res}", GEMMA2_9B, _res)
    PRESETS[f"pg2-28b-{_res}"] = _preset(f"pg2-28b-{_res}", GEMMA2_27B, _res)

# Tiny presets: the shapes of shared/reference/big_vision/{pg1_tiny,pg2_tiny}.
_TINY_VIT = SigLIPConfig(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=14, image_size=56)
PRESETS["pg1-tiny"] = PaliGemmaConfig(
    name="pg1-tiny",
    vision=_TINY_VIT,
    llm=GemmaConfig(family="gemma1", width=64, depth=2, num_heads=4, num_kv_heads=1,
                    head_dim=16, mlp_dim=128, vocab_size=4096),
)
PRESETS["pg2-tiny"] = PaliGemmaConfig(
    name="pg2-tiny",
    vision=dataclasses.replace(_TINY_VIT, image_size=28),
    llm=GemmaConfig(family="gemma2", width=64, depth=2, num_heads=4, num_kv_heads=2,
                    head_dim=32, mlp_dim=128, vocab_size=4096, attn_logits_softcap=50.0,
                    final_logits_softcap=30.0, post_norms=True, sliding_window=8),
)


def get_preset(name: str) -> PaliGemmaConfig:
    """Look a preset up by name; the error lists the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None
