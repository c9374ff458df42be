"""Small building blocks with logical sharding annotations on every parameter.

Logical axes (mapped to the mesh by the config's rules): embed (model width), mlp (hidden of feed-forwards),
heads (attention heads x head size), and input-side names (audio, motion, conv) that stay replicated.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

_lecun = nnx.initializers.lecun_normal()
_zeros = nnx.initializers.zeros
_ones = nnx.initializers.ones


def dense(in_features: int, out_features: int, axes: tuple[str, str], rngs: nnx.Rngs, *,
          zero_init: bool = False, use_bias: bool = True) -> nnx.Linear:
    """nnx.Linear whose kernel carries `axes` and whose bias carries axes[1]; zero_init for adaLN-Zero outputs."""
    return nnx.Linear(in_features, out_features, use_bias=use_bias,
                      kernel_init=nnx.with_partitioning(_zeros if zero_init else _lecun, axes),
                      bias_init=nnx.with_partitioning(_zeros, (axes[1],)), rngs=rngs)


def layer_norm(features: int, rngs: nnx.Rngs, *, affine: bool = True) -> nnx.LayerNorm:
    return nnx.LayerNorm(features, use_scale=affine, use_bias=affine, epsilon=1e-6,
                         scale_init=nnx.with_partitioning(_ones, ("embed",)),
                         bias_init=nnx.with_partitioning(_zeros, ("embed",)), rngs=rngs)


def sinusoidal_embedding(positions: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """(...,) positions or timesteps -> (..., dim) sin/cos features (dim even)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = positions.astype(jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class Attention(nnx.Module):
    """Multi-head attention. Queries (B, T, H), keys/values (B, S, H), mask broadcastable to (B, heads, T, S)."""

    def __init__(self, hidden: int, num_heads: int, rngs: nnx.Rngs, *, kv_features: int | None = None):
        if hidden % num_heads:
            raise ValueError(f"hidden={hidden} must divide by num_heads={num_heads}")
        kv_features = kv_features or hidden
        self.num_heads = num_heads
        self.query = dense(hidden, hidden, ("embed", "heads"), rngs, use_bias=False)
        self.key = dense(kv_features, hidden, ("embed", "heads"), rngs, use_bias=False)
        self.value = dense(kv_features, hidden, ("embed", "heads"), rngs, use_bias=False)
        self.out = dense(hidden, hidden, ("heads", "embed"), rngs)

    def __call__(self, x: jax.Array, context: jax.Array | None = None, mask: jax.Array | None = None) -> jax.Array:
        context = x if context is None else context
        split = lambda y: y.reshape(*y.shape[:-1], self.num_heads, -1)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(context)), split(self.value(context))
        out = jax.nn.dot_product_attention(q, k, v, mask=mask)
        return self.out(out.reshape(*out.shape[:-2], -1))


class FeedForward(nnx.Module):
    """Dense(gelu(Dense(x))). (..., H) -> (..., H)."""

    def __init__(self, hidden: int, mlp_ratio: float, rngs: nnx.Rngs):
        inner = int(hidden * mlp_ratio)
        self.up = dense(hidden, inner, ("embed", "mlp"), rngs)
        self.down = dense(inner, hidden, ("mlp", "embed"), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.gelu(self.up(x)))


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """adaLN: x * (1 + scale) + shift."""
    return x * (1.0 + scale) + shift
