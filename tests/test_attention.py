"""models/nn/attention.py (the ports' masked-attention kernel) and layers.Attention (our models', on
jax.nn.dot_product_attention)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirrortalk_jax.models.nn import attention


@pytest.mark.parametrize("fill", [-1e9, attention.FILL_TORCH, attention.FILL_FLOAT32_MIN])
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


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_our_attention_layer_on_the_fused_kernel_equals_the_explicit_one(dtype):
    """layers.Attention calls jax.nn.dot_product_attention (cuDNN flash on GPU): the same numbers as the explicit
    masked softmax, padding masks and a clip with no valid key included, float32 logits under bfloat16."""
    import math

    from flax import nnx

    from mirrortalk_jax.models.nn import layers

    layer = layers.Attention(16, 2, nnx.Rngs(0))
    for weight in (layer.wqkv, layer.wo):
        weight.set_value(weight.get_value().astype(dtype))
    x = jax.random.normal(jax.random.key(1), (2, 5, 16)).astype(dtype)
    mask = jnp.array([[True, True, True, False, False], [False] * 5])
    w = layer.wqkv[...]
    q = jnp.einsum("bqe,ehd->bqhd", x, w[..., :8]) / math.sqrt(8)
    kv = jnp.einsum("bke,ehd->bkhd", x, w[..., 8:])
    ref = attention.attention(q, kv[..., :8], kv[..., 8:], mask[:, None, None, :], fill=-1e9,
                              logits_dtype=jnp.float32)
    ref = jnp.einsum("bqhd,hde->bqe", ref, layer.wo[...])
    out = layer(x, mask=mask)
    assert out.dtype == dtype
    tol = 1e-5 if dtype == jnp.float32 else 3e-2
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32), rtol=tol, atol=tol)
