"""models/nn/attention.py: the one masked-attention kernel behind every model's attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirrortalk_jax.models.nn import attention


@pytest.mark.parametrize("fill", [attention.FILL_NATIVE, attention.FILL_TORCH, attention.FILL_FLOAT32_MIN])
def test_masked_keys_get_no_weight_and_empty_rows_stay_finite(fill):
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 3, 4, 8)) for i in range(3))  # (B, L, H, d)
    valid = jnp.array([[True, True, False], [False, False, False]])[:, None, None, :]  # clip 1: no valid key
    out = attention.attention(q, k, v, valid, fill=fill)
    # clip 0: exactly the attention over its two valid keys
    ref = attention.attention(q[:1], k[:1, :2], v[:1, :2], fill=fill)
    np.testing.assert_allclose(out[:1], ref, rtol=1e-6, atol=1e-6)
    # clip 1: every key masked -> uniform weights (the mean of v), never NaN
    np.testing.assert_allclose(out[1], jnp.broadcast_to(v[1].mean(0), out[1].shape), rtol=1e-5, atol=1e-6)


def test_layouts_scaling_and_weight_transform_agree():
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 5, 4, 8)) for i in range(3))
    base = attention.attention(q * 0.5, k, v, fill=attention.FILL_TORCH)
    np.testing.assert_allclose(attention.attention(q, k, v, fill=attention.FILL_TORCH, logit_scale=0.5), base,
                               rtol=1e-5, atol=1e-6)
    swap = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731  (B, L, H, d) <-> (B, H, L, d)
    heads_first = attention.attention(swap(q * 0.5), swap(k), swap(v), fill=attention.FILL_TORCH, heads_first=True)
    np.testing.assert_allclose(swap(heads_first), base, rtol=1e-5, atol=1e-6)
    zeroed = attention.attention(q * 0.5, k, v, fill=attention.FILL_TORCH, weights_fn=jnp.zeros_like)
    assert not np.asarray(zeroed).any()  # the transform (e.g. dropout) sits between the softmax and v
