"""The synthetic VQ-VAE: masks as the targets are built, the vae-oid layout both ways, and a
short training run that reconstructs held-out masks better than the whole box does."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pgbench import segmentation
from pgbench.synth import vae as synth_vae


def test_masks_are_deterministic_unit_crops():
    a, b = synth_vae.synthetic_masks(3, 40), synth_vae.synthetic_masks(3, 40)
    assert a.shape == (40, 64, 64) and np.array_equal(a, b)
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert np.all((a > 0.5).mean(axis=(1, 2)) > 0.2)  # every crop is mostly its object


def test_saved_vae_loads_back_the_same_weights(tmp_path):
    """save -> load -> flat is the identity on every array (the loader's layout changes,
    transposed-conv flips included, undone exactly)."""
    vae = synth_vae.init_vqvae(0)
    flat = segmentation.vqvae_to_flat(vae)
    assert set(flat) == {segmentation.vqvae.CODEBOOK_KEY} | {
        f"{n}.{w}" for n in {**segmentation.ENCODER_SHAPES, **segmentation.DECODER_SHAPES} for w in ("weight", "bias")}
    back = segmentation.vqvae_to_flat(segmentation.load_vqvae(segmentation.save_vqvae(tmp_path / "vae.npz", vae)))
    for k, v in flat.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)
    half = segmentation.vqvae_to_flat(segmentation.load_vqvae(
        segmentation.save_vqvae(tmp_path / "vae16.npz", vae, dtype=np.float16)))
    np.testing.assert_allclose(half["decoder.4.weight"], flat["decoder.4.weight"], rtol=1e-3, atol=1e-4)
    assert (tmp_path / "vae16.npz").stat().st_size < 0.6 * (tmp_path / "vae.npz").stat().st_size


@pytest.mark.slow
def test_short_training_beats_the_whole_box_and_is_deterministic():
    a = synth_vae.train(seed=0, steps=120, batch_size=32, num_masks=1024)
    b = synth_vae.train(seed=0, steps=3, batch_size=16, num_masks=512)
    c = synth_vae.train(seed=0, steps=3, batch_size=16, num_masks=512)
    assert b.losses == c.losses
    held_out = synth_vae.synthetic_masks(1, 128)
    assert synth_vae.reconstruction_iou(a.vae, held_out) > synth_vae.full_mask_iou(held_out) + 0.05


@pytest.mark.slow
def test_refcoco_oracle_through_a_trained_vae_scores_near_the_maximum(tmp_path):
    """The generator's referring masks, encoded as the adapter's training target with a
    synthetic VQ-VAE and scored by the real adapter: mIoU near 1, far above chance."""
    from pgbench.synth import generate
    from pgbench.task import load_task

    card = synth_vae.build(tmp_path / "vae.npz", seed=0, steps=150, log_every=0)
    manifest = generate.generate(tmp_path / "d", seed=0, sizes={"train": 1, "val": 6, "test": 1},
                                 family_names=["refcoco_seg"], image_size=64, vae_path=card["path"])
    info = manifest["families"]["refcoco_seg"]
    task = load_task("refcoco_seg")
    opts = task.resolve_options(info["options"])
    examples = task.examples(tmp_path / "d" / "refcoco_seg", "val", opts)
    oracle = [json.loads(line) for line in (tmp_path / "d" / info["oracle"]["val"]).read_text().splitlines()]
    assert all(o["prediction"].count("<seg") == 16 for o in oracle)
    miou = task.score(examples, {o["id"]: o["prediction"] for o in oracle}, opts)["miou"]
    assert miou > 0.85 and miou > info["chance"]["score"] + 0.5
