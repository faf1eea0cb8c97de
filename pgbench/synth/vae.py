"""Train the segmentation VQ-VAE (the vae-oid.npz architecture, full size) on synthetic masks.

Masks are the referring-segmentation family's objects cropped to their box and resized to
64x64 exactly as the training targets are built (:func:`pgbench.segmentation.mask_crop_64`),
half of them with the box jittered by up to 15 % so the codes also cover partial shapes.

The loss is sigmoid cross-entropy of the decoder logits against the mask (the decoder's
"inside" is logit > 0) plus the commitment term 0.25 |z - sg(e)|^2, with straight-through
gradients past the quantizer; the codebook follows the encoder by moving averages (VQ-VAE-2
style) with unused codes restarted, and starts from encoder features of the first masks.
Adam with a cosine schedule; everything is seeded, and XLA's CPU kernels are deterministic,
so a seed and a step count give the same weights.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pgbench import segmentation
from pgbench.segmentation import vqvae
from pgbench.synth import families, generate, scenes

COMMITMENT = 0.25
EMA_DECAY = 0.99
# 300 steps of 32 masks: held-out IoU 0.979 through the 16 codes (whole box: 0.744), 109 s on
# 2 shared CPU cores (200 steps: 0.971).
DEFAULT_STEPS = 300


def synthetic_masks(seed: int, count: int, image_size: int = generate.DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """f32[count, 64, 64] in [0, 1]: object masks cropped to (possibly jittered) boxes."""
    masks: list[np.ndarray] = []
    i = 0
    while len(masks) < count:
        rng = generate.example_rng(seed, "vqvae", "train", i)
        record = families.sample_refer(rng, i, image_size)
        for o in record["scene"].objects:
            full = scenes.polygon_mask(o.polygon(), image_size)
            box = segmentation.coco_box_to_normalized(o.bbox_xywh(), image_size, image_size)
            if rng.random() < 0.5:
                h, w = box[2] - box[0], box[3] - box[1]
                box = box + rng.uniform(-0.15, 0.15, 4) * np.array([h, w, h, w])
                box = np.clip(box, 0.0, 1.0)
                if box[2] - box[0] < 2 / image_size or box[3] - box[1] < 2 / image_size:
                    continue
            masks.append(segmentation.mask_crop_64(full, box))
        i += 1
    return np.stack(masks[:count]).astype(np.float32)


def init_vqvae(seed: int) -> vqvae.VQVAE:
    """He-normal kernels, zero biases (the last conv of each residual branch and of each
    network scaled by 0.1), codebook N(0, 1)."""
    flat = {}
    rng = np.random.default_rng(seed)
    for name, shape in sorted({**vqvae.ENCODER_SHAPES, **vqvae.DECODER_SHAPES}.items()):
        transposed = name in vqvae._TRANSPOSED
        fan_in = (shape[0] if transposed else shape[1]) * shape[2] * shape[3] // (4 if transposed else 1)
        scale = 0.1 if name.endswith(".net.4") or name in ("encoder.10", "decoder.12") else 1.0
        flat[name + ".weight"] = (rng.standard_normal(shape) * scale * np.sqrt(2.0 / fan_in)).astype(np.float32)
        flat[name + ".bias"] = np.zeros(vqvae._bias_len(name, shape), np.float32)
    flat[vqvae.CODEBOOK_KEY] = rng.standard_normal((vqvae.CODEBOOK_SIZE, vqvae.CODE_DIM)).astype(np.float32)
    return vqvae.vqvae_from_flat(flat)


def _with_data_codebook(vae: vqvae.VQVAE, masks: np.ndarray, seed: int) -> vqvae.VQVAE:
    z = np.asarray(jax.jit(vqvae.encoder_net)(vae, jnp.asarray(masks))).reshape(-1, vqvae.CODE_DIM)
    pick = np.random.default_rng(seed).choice(len(z), vqvae.CODEBOOK_SIZE, replace=len(z) < vqvae.CODEBOOK_SIZE)
    return dataclasses.replace(vae, codebook=jnp.asarray(z[pick]))


def loss_fn(vae: vqvae.VQVAE, masks: jax.Array) -> tuple[jax.Array, dict]:
    """masks f32[B, 64, 64] -> (loss, aux). The codebook gets no gradient (it follows the
    encoder by moving averages, see :func:`_ema_codebook`); aux carries the encoder features
    ``z`` f32[B*16, 512] and ``codes`` i32[B*16] for that update."""
    sg = jax.lax.stop_gradient
    z = vqvae.encoder_net(vae, masks)
    codes = vqvae.nearest_codes(sg(vae.codebook), sg(z))
    e = jnp.take(sg(vae.codebook), codes, axis=0)
    logits = vqvae.decoder_net(vae, z + sg(e - z))  # straight-through past the quantizer
    rec = optax.sigmoid_binary_cross_entropy(logits, masks).mean()
    commit = COMMITMENT * jnp.mean((z - e) ** 2)
    pred, gt = logits > 0, masks > 0.5
    union = jnp.sum(pred | gt, axis=(1, 2))
    iou = jnp.where(union > 0, jnp.sum(pred & gt, axis=(1, 2)) / jnp.maximum(union, 1), 1.0)
    aux = {"reconstruction": rec, "commitment": commit, "iou": jnp.mean(iou),
           "z": sg(z).reshape(-1, vqvae.CODE_DIM), "codes": codes.reshape(-1)}
    return rec + commit, aux


def _ema_codebook(ema, z, codes, key):
    """Exponential moving averages of each code's assignment count and feature sum (decay
    0.99); the codebook is their ratio. A code that has gone unused (average count below
    1 %) restarts at a random feature of this batch, so all 128 codes stay in play."""
    count, total = ema
    onehot = jax.nn.one_hot(codes, vqvae.CODEBOOK_SIZE, dtype=z.dtype)
    count = EMA_DECAY * count + (1 - EMA_DECAY) * onehot.sum(0)
    total = EMA_DECAY * total + (1 - EMA_DECAY) * (onehot.T @ z)
    dead = count < 0.01
    fresh = z[jax.random.randint(key, (vqvae.CODEBOOK_SIZE,), 0, z.shape[0])]
    count = jnp.where(dead, 1.0, count)
    total = jnp.where(dead[:, None], fresh, total)
    return (count, total), total / count[:, None]


@dataclasses.dataclass
class TrainResult:
    vae: vqvae.VQVAE
    losses: list[float]
    seconds: float


def train(seed: int = 0, steps: int = DEFAULT_STEPS, batch_size: int = 32, num_masks: int = 4096,
          learning_rate: float = 1e-3, log_every: int = 0) -> TrainResult:
    """Fit a VQ-VAE from scratch on ``num_masks`` synthetic masks."""
    start = time.perf_counter()
    masks = synthetic_masks(seed, num_masks)
    vae = _with_data_codebook(init_vqvae(seed), masks[:256], seed)
    k_steps = jax.random.PRNGKey(seed)
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(1, steps // 20), max(steps, 1))
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    state = opt.init(vae)
    ema = (jnp.ones(vqvae.CODEBOOK_SIZE), vae.codebook)

    @jax.jit
    def step(vae, state, ema, batch, key):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(vae, batch)
        updates, state = opt.update(grads, state, vae)
        vae = optax.apply_updates(vae, updates)
        ema, codebook = _ema_codebook(ema, aux.pop("z"), aux.pop("codes"), key)
        return dataclasses.replace(vae, codebook=codebook), state, ema, loss, aux

    order = np.random.default_rng(seed)
    losses = []
    for i in range(steps):
        batch = masks[order.integers(0, len(masks), batch_size)]
        vae, state, ema, loss, aux = step(vae, state, ema, jnp.asarray(batch), jax.random.fold_in(k_steps, i))
        losses.append(float(loss))
        if log_every and (i + 1) % log_every == 0:
            print(f"vqvae step {i + 1}/{steps}: loss {float(loss):.4f} "
                  f"reconstruction {float(aux['reconstruction']):.4f} iou {float(aux['iou']):.3f}", flush=True)
    return TrainResult(vae, losses, time.perf_counter() - start)


def reconstruction_iou(vae: vqvae.VQVAE, masks: np.ndarray) -> float:
    """Mean IoU of decode(encode(mask)) > 0 against mask > 0.5 (through the 16 codes)."""
    logits = segmentation.decode_codes(vae, segmentation.encode_masks(vae, masks))
    pred, gt = logits > 0, masks > 0.5
    union = np.sum(pred | gt, axis=(1, 2))
    return float(np.mean(np.where(union > 0, np.sum(pred & gt, axis=(1, 2)) / np.maximum(union, 1), 1.0)))


def full_mask_iou(masks: np.ndarray) -> float:
    """The chance baseline: IoU of predicting the whole box."""
    gt = masks > 0.5
    return float(np.mean(gt.sum(axis=(1, 2)) / gt[0].size))


def build(out: str | Path, seed: int = 0, steps: int = DEFAULT_STEPS, dtype=np.float16, log_every: int = 50) -> dict:
    """Train and write ``out`` (vae-oid.npz layout); returns figures for the model card."""
    result = train(seed=seed, steps=steps, log_every=log_every)
    path = segmentation.save_vqvae(out, result.vae, dtype=dtype)
    held_out = synthetic_masks(seed + 1, 512)
    reloaded = segmentation.load_vqvae(path)
    return {"path": str(path), "steps": steps, "seed": seed, "seconds": round(result.seconds, 1),
            "final_loss": result.losses[-1] if result.losses else None,
            "held_out_iou": reconstruction_iou(reloaded, held_out), "full_box_iou": full_mask_iou(held_out)}
