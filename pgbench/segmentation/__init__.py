"""PaliGemma segmentation: the VQ-VAE, and masks <-> ``<loc>``/``<seg>`` tokens.

* :mod:`.vqvae` — loading ``vae-oid.npz`` and the encoder/decoder networks (codes <-> 64x64);
* :mod:`.paste` — codes + box -> full-image mask, as big_vision's segmentation evaluator;
* :mod:`.encode` — full-image mask + box -> codes and tokens, as its ``refcoco_mask2str`` op.

Mask IoU is :func:`pgbench.scoring.mask_iou.iou`; the ``vqvae`` parity case runs in
:mod:`pgbench.parity`. Every public name is importable from ``pgbench.segmentation``.
"""

from pgbench.segmentation.encode import (coco_box_to_normalized, mask_crop_64, mask_to_string,
                                         mask_to_tokens, masks_to_bins_codes, masks_to_tokens)
from pgbench.segmentation.paste import (TokenMasks, attach_masks, masks_from_token_ids,
                                        paste_mask, resize_mask_pil)
from pgbench.segmentation.vqvae import (CODE_DIM, CODEBOOK_SIZE, DECODER_SHAPES, ENCODER_SHAPES,
                                        MASK_SIZE, VQVAE, check_codes, codes_to_quantized,
                                        decode_codes, decoder_net, encode_masks, encoder_features,
                                        encoder_net, load_vqvae, nearest_codes, save_vqvae,
                                        vqvae_from_flat, vqvae_to_flat)

__all__ = [
    "CODE_DIM", "CODEBOOK_SIZE", "DECODER_SHAPES", "ENCODER_SHAPES", "MASK_SIZE", "VQVAE",
    "TokenMasks", "attach_masks", "check_codes", "coco_box_to_normalized", "codes_to_quantized",
    "decode_codes", "decoder_net", "encode_masks", "encoder_features", "encoder_net", "load_vqvae",
    "mask_crop_64", "mask_to_string", "mask_to_tokens", "masks_from_token_ids", "masks_to_bins_codes",
    "masks_to_tokens", "nearest_codes", "paste_mask", "resize_mask_pil", "save_vqvae",
    "vqvae_from_flat", "vqvae_to_flat",
]
