"""Why the synthetic signs sit on a grid: can the default model's ViT learn to read a word?

Trains the default architecture's image encoder (``small_model.small_config``, freshly
initialised as ``make default-model`` does) plus a linear head on its max-pooled tokens to
name the word of one-sign TextVQA-family images (38 words, three letter cases), with the
signs at free pixel positions and on ``scenes.SIGN_GRID``, and prints the held-out accuracy
of each. Same images, steps and seed for both; about 4 min each on 2 CPU cores.

    python tools/sign_grid_probe.py [--steps 800] [--train 3000] [--test 300]
"""
from __future__ import annotations

import argparse

import numpy as np

from pgbench.synth import families, generate, scenes

IMAGE_SIZE = 128


def one_sign_images(seed: int, n: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """f32[n, 128, 128, 3] in [-1, 1] and the word's index i32[n]: TextVQA-family scenes
    (the generator's draws for its training split) that hold one sign, on a ``grid`` px grid."""
    xs, ys, i = [], [], 0
    while len(xs) < n:
        rng = generate.example_rng(seed, "textvqa", "train", i)
        i += 1
        scene = scenes.sample_sign_scene(rng, IMAGE_SIZE, families.sign_words(rng), grid=grid)
        if len(scene.signs) != 1:
            continue
        xs.append(np.asarray(scenes.render_signs(scene), np.float32) / 127.5 - 1)
        ys.append(families.SIGN_WORDS.index(scene.signs[0].text.lower()))
    return np.stack(xs), np.asarray(ys)


def probe(grid: int, steps: int, seed: int = 0, n_train: int = 3000, n_test: int = 300) -> float:
    import equinox as eqx
    import jax
    import optax

    from pgbench.checkpoints import from_bigvision_params
    from pgbench.model import siglip
    from pgbench.synth import small_model

    x, y = one_sign_images(seed + 1, n_train, grid)
    xt, yt = one_sign_images(seed + 2, n_test, grid)
    # The tokenizer's size only shapes the decoder, which the probe does not use.
    cfg = small_model.small_config(1664)
    model = from_bigvision_params(small_model.training_init_source(cfg, seed), cfg)
    head = jax.random.normal(jax.random.PRNGKey(seed), (cfg.llm.width, len(families.SIGN_WORDS))) * 0.05
    params, static = eqx.partition((model.img, head), eqx.is_inexact_array)

    def logits(p, images):
        img, w = eqx.combine(p, static)
        return siglip.encode(img, images).max(axis=1) @ w

    opt = optax.adam(1e-3)
    state = opt.init(params)

    @jax.jit
    def step(p, s, images, labels):
        loss, g = jax.value_and_grad(
            lambda p: optax.softmax_cross_entropy_with_integer_labels(logits(p, images), labels).mean())(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(len(x), 64)
        params, state, _ = step(params, state, x[idx], y[idx])
    return float((np.asarray(jax.jit(logits)(params, xt)).argmax(1) == yt).mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--train", type=int, default=3000, help="one-sign training images")
    p.add_argument("--test", type=int, default=300, help="held-out one-sign images")
    args = p.parse_args(argv)
    for grid, name in ((1, "free positions"), (scenes.SIGN_GRID, f"{scenes.SIGN_GRID} px grid")):
        print(f"signs at {name}: held-out word accuracy {probe(grid, args.steps, n_train=args.train, n_test=args.test):.3f} "
              f"after {args.steps} steps of 64 (chance {1 / len(families.SIGN_WORDS):.3f})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
