"""The building blocks every model uses, with logical sharding annotations on every parameter.

Logical axes (mapped to the mesh by the config's rules): embed (model width), mlp (hidden of feed-forwards),
heads (attention heads x head size), and input-side names (audio, motion, conv) that stay replicated.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


_zeros = nnx.initializers.zeros
_ones = nnx.initializers.ones


class Frozen(nnx.Variable):
    """A fixed array held by a model (a converted buffer, a frozen encoder's weights): not an nnx.Param, so
    the trainer never optimises (or decays) it."""


def freeze(module: nnx.Module) -> nnx.Module:
    """A copy of `module` whose nnx.Params are `Frozen` variables (values and axis metadata kept).

    The trainer optimises every nnx.Param it finds (and computes its gradient); a stop_gradient alone would
    still let weight decay shrink a pretrained network, so its Params must stop being Params.
    """
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    frozen = jax.tree.map(lambda v: Frozen(v.get_value(), **v.get_metadata()), params,
                          is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.merge(graphdef, frozen, rest)


def fan_in_normal(fan_in_axes: tuple[int, ...] = (0,)):
    """N(0, 1/fan_in) initializer, fan_in = product of `fan_in_axes` of the shape (LeCun, untruncated).

    Drawn flat and reshaped: with partitionable threefry, XLA on CPU spends about a second compiling one N-D
    truncated-normal draw and a third of that on a flat one, and initialisation dominated start-up of small
    models (the weights are placed by the trainer's out_shardings anyway).
    """
    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        fan_in = math.prod(shape[a] for a in fan_in_axes)
        return (jax.random.normal(key, (math.prod(shape),), dtype) / math.sqrt(fan_in)).reshape(shape)
    return init


def scaled_normal(stddev: float):
    """N(0, stddev^2), drawn flat (see `fan_in_normal`)."""
    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return (stddev * jax.random.normal(key, (math.prod(shape),), dtype)).reshape(shape)
    return init


_lecun = fan_in_normal((0,))


def param(rngs: nnx.Rngs, init, shape: tuple[int, ...], axes: tuple[str | None, ...]) -> nnx.Param:
    """A free-standing parameter (embeddings, memory slots, queries) with its logical axes."""
    return nnx.Param(nnx.with_partitioning(init, axes)(rngs.params(), shape))


def dense(in_features: int, out_features: int, axes: tuple[str | None, str | None], rngs: nnx.Rngs, *,
          zero_init: bool = False, use_bias: bool = True) -> nnx.Linear:
    """nnx.Linear whose kernel carries `axes` and whose bias carries axes[1]; zero_init for adaLN-Zero outputs."""
    return nnx.Linear(in_features, out_features, use_bias=use_bias,
                      kernel_init=nnx.with_partitioning(_zeros if zero_init else _lecun, axes),
                      bias_init=nnx.with_partitioning(_zeros, (axes[1],)), rngs=rngs)


def conv1d(in_features: int, out_features: int, kernel_size: int, rngs: nnx.Rngs, *,
           padding: str = "SAME") -> nnx.Conv:
    """Temporal convolution over (..., T, C) with logical axes (conv, embed, mlp)."""
    return nnx.Conv(in_features, out_features, kernel_size=(kernel_size,), padding=padding,
                    kernel_init=nnx.with_partitioning(fan_in_normal((0, 1)), ("conv", "embed", "mlp")),
                    bias_init=nnx.with_partitioning(_zeros, ("mlp",)), rngs=rngs)


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
    """Multi-head attention. queries (B, Q, H), context (B, K, H) (default: the queries) -> (B, Q, H).

    `mask`: (B, K) bool marks valid keys, or any bool array broadcastable to (B, heads, Q, K). Query, key and
    value projections share one (H, heads, 3 * head_dim) kernel (fewer arrays to initialise, optimise and
    checkpoint); the output projection has no bias (a pre-LN residual branch does not need one).
    """

    def __init__(self, dim: int, num_heads: int, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} must divide by num_heads={num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.wqkv = param(rngs, _lecun, (dim, num_heads, 3 * self.head_dim), ("embed", "heads", "kv"))
        self.wo = param(rngs, fan_in_normal((0, 1)), (num_heads, self.head_dim, dim), ("heads", "kv", "embed"))

    def __call__(self, queries: jax.Array, context: jax.Array | None = None,
                 mask: jax.Array | None = None) -> jax.Array:
        context = queries if context is None else context
        hd = self.head_dim
        w = self.wqkv[...]
        q = jnp.einsum("bqe,ehd->bqhd", queries, w[..., :hd]) / math.sqrt(hd)
        kv = jnp.einsum("bke,ehd->bkhd", context, w[..., hd:])
        k, v = kv[..., :hd], kv[..., hd:]
        if mask is not None and mask.ndim == 2:
            mask = mask[:, None, None, :]
        # jax's fused attention (cuDNN flash attention on GPU for bf16/fp16, XLA elsewhere; float32 logits and
        # softmax): this project's own models need no parity with a torch original (the ports keep
        # attention.attention). q is already scaled.
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=1.0)
        return jnp.einsum("bqhd,hde->bqe", out, self.wo[...])


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
