"""Equinox PaliGemma: SigLIP encoder, projection, Gemma 1/2 decoder, prefix-LM attention."""

from pgbench.model.paligemma import PaliGemma, embed_image, forward, suffix_loss  # noqa: F401
