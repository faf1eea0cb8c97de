"""random_params draws each weight with std 1/sqrt(fan-in), fan-in read from big_vision's layout."""

import numpy as np
import pytest

from pgbench.checkpoints.random_params import RandomParams, fan_in
from pgbench.synth import small_model


@pytest.mark.parametrize("suffix", ["query/kernel", "key/kernel", "value/kernel"])
def test_vit_attention_kernels_contract_over_width(suffix):
    # big_vision's ViT attention kernels are [depth, D, H, hd]: each output sums over D.
    name = f"img/Transformer/encoderblock/MultiHeadDotProductAttention_0/{suffix}"
    assert fan_in(name, (3, 96, 3, 32)) == 96


def test_every_weight_has_unit_output_variance():
    """Each kernel's draws have std 1/sqrt(its true fan-in) (within 10 %): computed here
    from the layout independently of ``fan_in``'s rules."""
    cfg = small_model.small_config(1664)
    src = RandomParams(cfg, 0)
    vit_d = cfg.vision.width
    for name, shape in src.shapes().items():
        if name.endswith(("/bias", "/scale")) or name == "img/pos_embedding" or "embedder" in name:
            continue
        if name == "img/embedding/kernel":
            true_fan_in = int(np.prod(shape[:3]))
        elif "MultiHeadDotProductAttention" in name and name.endswith(("query/kernel", "key/kernel", "value/kernel")):
            true_fan_in = vit_d
        elif name.endswith(("out/kernel", "attn_vec_einsum/w")):
            true_fan_in = shape[-3] * shape[-2]
        else:
            true_fan_in = shape[-2]
        std = float(src.read(name).std())
        assert std == pytest.approx(true_fan_in ** -0.5, rel=0.1), (name, shape, std)
