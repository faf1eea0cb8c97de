"""gemma.embed_tokens: a low-precision table's rows inside a decode loop."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgbench.model.gemma import embed_tokens


def _stand_in(table):
    """What embed_tokens reads of a Gemma model: the table and the width."""
    return SimpleNamespace(input_embedding=table, cfg=SimpleNamespace(width=table.shape[1]))


def _loop_temp_bytes(rows, table) -> int:
    """Scratch memory of a compiled four-step loop that looks up two rows per step."""
    def loop(t, table):
        def body(i, t):
            x = rows(table, t)
            return (jnp.sum(x.astype(jnp.float32), -1) > 0).astype(jnp.int32) + t
        return jax.lax.fori_loop(0, 4, body, t)
    return jax.jit(loop).lower(jnp.zeros((2,), jnp.int32), table).compile().memory_analysis().temp_size_in_bytes


def test_decode_loop_does_not_copy_a_bf16_table():
    """XLA's CPU backend gathers bf16 rows out of a float32 conversion of the whole table,
    which a loop hoists into a float32 copy (the control: a plain jnp.take in the same loop
    needs twice the table's bytes of scratch); embed_tokens' rows need a fraction of it."""
    table = jnp.ones((8192, 256), jnp.bfloat16)
    assert _loop_temp_bytes(lambda w, t: embed_tokens(_stand_in(w), t), table) < table.nbytes / 4
    assert _loop_temp_bytes(lambda w, t: jnp.take(w, t, axis=0), table) >= 2 * table.nbytes


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_embed_tokens_are_the_scaled_rows(dtype):
    """Rows times sqrt(D), the scale rounded to the table's dtype as big_vision does."""
    table = jnp.asarray(np.random.default_rng(0).standard_normal((50, 64)), dtype)
    tokens = jnp.asarray([[3, 0, 49], [7, 7, 1]])
    got = jax.jit(lambda w, t: embed_tokens(_stand_in(w), t))(table, tokens)
    want = np.asarray(table)[np.asarray(tokens)] * np.asarray(jnp.sqrt(jnp.float32(64)).astype(dtype))
    assert got.dtype == dtype
    np.testing.assert_array_equal(np.asarray(got), np.asarray(jnp.asarray(want, dtype)))
