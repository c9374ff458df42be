"""PyTorch-compatible transformer pieces for exact ports of PyTorch models (DreamTalk, PIRenderer, MimicTalk, ...).

What "compatible" means here: the same parameters (so a checkpoint converts by transposes and reshapes only) and
the same arithmetic, in the same order where float32 rounding could tell, as

  * `nn.MultiheadAttention`: fused input projection [q; k; v], q scaled by sqrt(1 / head_dim) before q.k,
    key padding mask with True = *ignore* (PyTorch's convention, the opposite of Flax's), softmax, out_proj;
  * DETR-style `TransformerEncoderLayer` / `TransformerDecoderLayer` (post-norm by default, `norm_first` for
    pre-norm), with the stacks' optional final LayerNorm;
  * `nn.LayerNorm` (eps 1e-5, exact two-pass variance);
  * the "Attention is all you need" sinusoid table (interleaved sin/cos, built in float64).

Everything is batch-first: (..., sequence, features); PyTorch's sequence-first layout is a transpose that does
not change any number. Positional encodings are the caller's business (DETR adds them inside the layers,
DreamTalk once at the stack input). Dropout is functional: pass `rng` to enable it (training), None in inference.

Parameter names follow PyTorch's (`self_attn`, `multihead_attn`, `linear1`, `norm1`, ...) so name maps stay
one-to-one. Logical axes: embed (model width), heads (heads x head size), mlp (feed-forward hidden).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirrortalk_jax.models.nn import attention
from mirrortalk_jax.models.nn.layers import dense, fan_in_normal, param

TORCH_LAYER_NORM_EPS = 1e-5

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # F.gelu default: the exact erf form
    "silu": jax.nn.silu,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def layer_norm(features: int, rngs: nnx.Rngs, *, eps: float = TORCH_LAYER_NORM_EPS) -> nnx.LayerNorm:
    """nn.LayerNorm(features): eps 1e-5 and the two-pass variance mean((x - mean)^2) (Flax's fast variance,
    mean(x^2) - mean^2, loses digits when |mean| >> std)."""
    return nnx.LayerNorm(features, epsilon=eps, use_fast_variance=False,
                         scale_init=nnx.with_partitioning(nnx.initializers.ones, ("embed",)),
                         bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("embed",)), rngs=rngs)


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    """Inverted dropout as nn.Dropout in training mode; identity when rng is None or rate is 0."""
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def _keys(rng: jax.Array | None, n: int) -> list[jax.Array | None]:
    return [None] * n if rng is None else list(jax.random.split(rng, n))


@functools.lru_cache(maxsize=32)
def sinusoid_table(n_position: int, dim: int) -> np.ndarray:
    """(n_position, dim) float32: angle[p, j] = p / 10000^(2 floor(j / 2) / dim), sin on even j, cos on odd j.

    Computed in float64 and rounded once, exactly like the numpy code PyTorch ports usually carry
    (`PositionalEncoding._get_sinusoid_encoding_table`), so stored tables compare bit for bit.
    """
    j = np.arange(dim)
    angle = np.arange(n_position, dtype=np.float64)[:, None] / np.power(10000, 2 * (j // 2) / dim)[None, :]
    table = np.where(j % 2 == 0, np.sin(angle), np.cos(angle))
    return table.astype(np.float32)


def _valid(key_padding_mask: jax.Array | None) -> jax.Array | None:
    """PyTorch's key_padding_mask (..., K), True = ignore -> valid keys broadcast over (..., H, Q, K)."""
    return None if key_padding_mask is None else ~key_padding_mask[..., None, None, :]


class MultiheadAttention(nnx.Module):
    """nn.MultiheadAttention, batch-first. in_proj (D, 3, D) holds [q; k; v] (PyTorch's (3D, D) weight,
    reshaped and transposed), in_proj_bias (3, D); out_proj is a Dense (D, D)."""

    def __init__(self, dim: int, num_heads: int, rngs: nnx.Rngs, *, dropout_rate: float = 0.0):
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} must divide by num_heads={num_heads}")
        self.num_heads, self.head_dim, self.dropout_rate = num_heads, dim // num_heads, dropout_rate
        self.in_proj = param(rngs, fan_in_normal((0,)), (dim, 3, dim), ("embed", None, "heads"))
        self.in_proj_bias = param(rngs, nnx.initializers.zeros, (3, dim), (None, "heads"))
        self.out_proj = dense(dim, dim, ("heads", "embed"), rngs)

    def project(self, x: jax.Array, which: slice) -> jax.Array:
        """x (..., S, D) -> (..., S, n, D) for the projections `which` of (q, k, v)."""
        w, b = self.in_proj[...][:, which], self.in_proj_bias[...][which]
        return jnp.einsum("...e,end->...nd", x, w) + b

    def split_heads(self, x: jax.Array) -> jax.Array:
        return x.reshape(x.shape[:-1] + (self.num_heads, self.head_dim))

    def scale(self, q: jax.Array) -> jax.Array:
        # PyTorch multiplies q by the float32 rounding of sqrt(1 / head_dim) before the product with k.
        return q * jnp.asarray(math.sqrt(1.0 / self.head_dim), q.dtype)

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, key_padding_mask: jax.Array | None = None,
               rng: jax.Array | None = None) -> jax.Array:
        """Projected q (..., Q, D), k / v (..., K, D) -> out_proj(attention) (..., Q, D).

        key_padding_mask (..., K) bool, True = ignore that key (PyTorch's convention).
        """
        q, k, v = self.split_heads(self.scale(q)), self.split_heads(k), self.split_heads(v)
        out = attention.attention(q, k, v, _valid(key_padding_mask), fill=attention.FILL_TORCH,
                                  weights_fn=lambda w: dropout(w, self.dropout_rate, rng))
        return self.out_proj(out.reshape(out.shape[:-2] + (-1,)))

    # Few queries over many keys (inference): fold the key / value projections into the query side, so the keys
    # are never projected. logits[h, q, j] = q_h . (W_k,h x_j + b_k,h) = x_j . (W_k,h^T q_h) + q_h . b_k,h, and
    # sum_j a_hj (W_v,h x_j + b_v,h) = W_v,h (sum_j a_hj x_j) + b_v,h. Per query this costs about 3 D^2 + 2 H K D
    # instead of 2 K D^2 for projecting K keys; the result differs only by float32 rounding.

    def fold_keys(self, q: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Projected queries (..., Q, D) -> key-folded queries (..., Q, H, D_in) and bias terms (..., Q, H)."""
        qh = self.split_heads(self.scale(q))
        w = self.in_proj[...][:, 1].reshape(-1, self.num_heads, self.head_dim)
        b = self.in_proj_bias[...][1].reshape(self.num_heads, self.head_dim)
        return jnp.einsum("...qhd,ehd->...qhe", qh, w), jnp.einsum("...qhd,hd->...qh", qh, b)

    def attend_folded(self, folded: jax.Array, bias: jax.Array, kv: jax.Array,
                      key_padding_mask: jax.Array | None = None) -> jax.Array:
        """`fold_keys` queries over unprojected key/value inputs kv (..., K, D_in) -> attention output (..., Q, D)."""
        logits = jnp.einsum("...qhe,...ke->...hqk", folded, kv) + jnp.swapaxes(bias, -1, -2)[..., None]
        weights = attention.masked_softmax(logits, _valid(key_padding_mask), fill=attention.FILL_TORCH)
        mean = jnp.einsum("...hqk,...ke->...qhe", weights, kv)
        w = self.in_proj[...][:, 2].reshape(-1, self.num_heads, self.head_dim)
        v = jnp.einsum("...qhe,ehd->...qhd", mean, w) + self.in_proj_bias[...][2].reshape(self.num_heads, -1)
        return self.out_proj(v.reshape(v.shape[:-2] + (-1,)))

    def attend_few(self, query: jax.Array, kv: jax.Array, key_padding_mask: jax.Array | None = None) -> jax.Array:
        """self(query, kv) for unprojected query (..., Q, D) and key/value inputs (..., K, D), Q << K (no dropout)."""
        q = self.project(query, slice(0, 1))[..., 0, :]
        return self.attend_folded(*self.fold_keys(q), kv, key_padding_mask)

    def __call__(self, query: jax.Array, memory: jax.Array | None = None, key_padding_mask: jax.Array | None = None,
                 rng: jax.Array | None = None) -> jax.Array:
        """Self-attention (memory None: q = k = v = query) or attention from query to memory (k = v = memory)."""
        if memory is None:
            qkv = self.project(query, slice(0, 3))
            q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
        else:
            q = self.project(query, slice(0, 1))[..., 0, :]
            kv = self.project(memory, slice(1, 3))
            k, v = kv[..., 0, :], kv[..., 1, :]
        return self.attend(q, k, v, key_padding_mask, rng)


class FeedForward(nnx.Module):
    """linear2(dropout(act(linear1(x)))), the feed-forward of PyTorch / DETR transformer layers."""

    def __init__(self, dim: int, hidden: int, rngs: nnx.Rngs, *, act: str = "relu", dropout_rate: float = 0.0):
        self.linear1 = dense(dim, hidden, ("embed", "mlp"), rngs)
        self.linear2 = dense(hidden, dim, ("mlp", "embed"), rngs)
        self.act, self.dropout_rate = act, dropout_rate

    def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        return self.linear2(dropout(activation(self.act)(self.linear1(x)), self.dropout_rate, rng))


class TransformerEncoderLayer(nnx.Module):
    """Post-norm (default): h = norm1(h + SA(h)); h = norm2(h + FFN(h)). Pre-norm with norm_first=True.

    DETR's `pos` argument is not taken: add positional encodings before the stack (or before each call).
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, rngs: nnx.Rngs, *, dropout_rate: float = 0.0,
                 act: str = "relu", norm_first: bool = False, eps: float = TORCH_LAYER_NORM_EPS):
        self.self_attn = MultiheadAttention(dim, num_heads, rngs, dropout_rate=dropout_rate)
        self.ffn = FeedForward(dim, ffn_dim, rngs, act=act, dropout_rate=dropout_rate)
        self.norm1 = layer_norm(dim, rngs, eps=eps)
        self.norm2 = layer_norm(dim, rngs, eps=eps)
        self.norm_first, self.dropout_rate = norm_first, dropout_rate

    def __call__(self, x: jax.Array, key_padding_mask: jax.Array | None = None,
                 rng: jax.Array | None = None) -> jax.Array:
        """x (..., S, D), key_padding_mask (..., S) True = padded -> (..., S, D)."""
        k_attn, k_res1, k_ffn, k_res2 = _keys(rng, 4)
        r = self.dropout_rate
        if self.norm_first:
            x = x + dropout(self.self_attn(self.norm1(x), key_padding_mask=key_padding_mask, rng=k_attn), r, k_res1)
            return x + dropout(self.ffn(self.norm2(x), k_ffn), r, k_res2)
        x = self.norm1(x + dropout(self.self_attn(x, key_padding_mask=key_padding_mask, rng=k_attn), r, k_res1))
        return self.norm2(x + dropout(self.ffn(x, k_ffn), r, k_res2))


class TransformerDecoderLayer(nnx.Module):
    """Post-norm (default): t = norm1(t + SA(t)); t = norm2(t + CA(t, memory)); t = norm3(t + FFN(t)).

    The three blocks are also callable one by one (`self_block`, `cross_block`, `ffn_block`) for callers that
    cache work, e.g. a first self-attention whose queries do not depend on the memory.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, rngs: nnx.Rngs, *, dropout_rate: float = 0.0,
                 act: str = "relu", norm_first: bool = False, eps: float = TORCH_LAYER_NORM_EPS):
        self.self_attn = MultiheadAttention(dim, num_heads, rngs, dropout_rate=dropout_rate)
        self.multihead_attn = MultiheadAttention(dim, num_heads, rngs, dropout_rate=dropout_rate)
        self.ffn = FeedForward(dim, ffn_dim, rngs, act=act, dropout_rate=dropout_rate)
        self.norm1 = layer_norm(dim, rngs, eps=eps)
        self.norm2 = layer_norm(dim, rngs, eps=eps)
        self.norm3 = layer_norm(dim, rngs, eps=eps)
        self.norm_first, self.dropout_rate = norm_first, dropout_rate

    def _residual(self, x: jax.Array, branch: Callable[[jax.Array], jax.Array], norm: nnx.LayerNorm,
                  rng: jax.Array | None) -> jax.Array:
        if self.norm_first:
            return x + dropout(branch(norm(x)), self.dropout_rate, rng)
        return norm(x + dropout(branch(x), self.dropout_rate, rng))

    def self_block(self, t: jax.Array, key_padding_mask: jax.Array | None = None, rng: jax.Array | None = None,
                   query_index: int | None = None) -> jax.Array:
        """(..., T, D) -> (..., T, D); with query_index, only that token's output (..., 1, D) (keys: all)."""
        k_attn, k_res = _keys(rng, 2)
        if query_index is None:
            return self._residual(t, lambda x: self.self_attn(x, key_padding_mask=key_padding_mask, rng=k_attn),
                                  self.norm1, k_res)
        keys = self.norm1(t) if self.norm_first else t
        kv = self.self_attn.project(keys, slice(1, 3))
        sel = slice(query_index, query_index + 1)

        def branch(x):
            q = self.self_attn.project(x, slice(0, 1))[..., 0, :]
            return self.self_attn.attend(q, kv[..., 0, :], kv[..., 1, :], key_padding_mask, k_attn)
        if self.norm_first:
            return t[..., sel, :] + dropout(branch(keys[..., sel, :]), self.dropout_rate, k_res)
        return self.norm1(t[..., sel, :] + dropout(branch(t[..., sel, :]), self.dropout_rate, k_res))

    def cross_block(self, t: jax.Array, memory: jax.Array, memory_key_padding_mask: jax.Array | None = None,
                    rng: jax.Array | None = None) -> jax.Array:
        k_attn, k_res = _keys(rng, 2)
        return self._residual(
            t, lambda x: self.multihead_attn(x, memory, key_padding_mask=memory_key_padding_mask, rng=k_attn),
            self.norm2, k_res)

    def ffn_block(self, t: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        k_ffn, k_res = _keys(rng, 2)
        return self._residual(t, lambda x: self.ffn(x, k_ffn), self.norm3, k_res)

    def __call__(self, t: jax.Array, memory: jax.Array, tgt_key_padding_mask: jax.Array | None = None,
                 memory_key_padding_mask: jax.Array | None = None, rng: jax.Array | None = None) -> jax.Array:
        """t (..., T, D), memory (..., S, D) -> (..., T, D)."""
        k1, k2, k3 = _keys(rng, 3)
        t = self.self_block(t, tgt_key_padding_mask, k1)
        t = self.cross_block(t, memory, memory_key_padding_mask, k2)
        return self.ffn_block(t, k3)


class TransformerEncoder(nnx.Module):
    """N encoder layers and an optional final LayerNorm (PyTorch / DETR: present with pre-norm layers)."""

    def __init__(self, num_layers: int, dim: int, num_heads: int, ffn_dim: int, rngs: nnx.Rngs, *,
                 final_norm: bool = False, dropout_rate: float = 0.0, act: str = "relu", norm_first: bool = False,
                 eps: float = TORCH_LAYER_NORM_EPS):
        self.layers = nnx.List([TransformerEncoderLayer(dim, num_heads, ffn_dim, rngs, dropout_rate=dropout_rate,
                                                        act=act, norm_first=norm_first, eps=eps)
                                for _ in range(num_layers)])
        self.norm = layer_norm(dim, rngs, eps=eps) if final_norm else None

    def __call__(self, x: jax.Array, key_padding_mask: jax.Array | None = None,
                 rng: jax.Array | None = None) -> jax.Array:
        for layer, key in zip(self.layers, _keys(rng, len(self.layers))):
            x = layer(x, key_padding_mask, key)
        return x if self.norm is None else self.norm(x)


class TransformerDecoder(nnx.Module):
    """N decoder layers and an optional final LayerNorm (DETR's decoder always has one)."""

    def __init__(self, num_layers: int, dim: int, num_heads: int, ffn_dim: int, rngs: nnx.Rngs, *,
                 final_norm: bool = True, dropout_rate: float = 0.0, act: str = "relu", norm_first: bool = False,
                 eps: float = TORCH_LAYER_NORM_EPS):
        self.layers = nnx.List([TransformerDecoderLayer(dim, num_heads, ffn_dim, rngs, dropout_rate=dropout_rate,
                                                        act=act, norm_first=norm_first, eps=eps)
                                for _ in range(num_layers)])
        self.norm = layer_norm(dim, rngs, eps=eps) if final_norm else None

    def __call__(self, t: jax.Array, memory: jax.Array, tgt_key_padding_mask: jax.Array | None = None,
                 memory_key_padding_mask: jax.Array | None = None, rng: jax.Array | None = None) -> jax.Array:
        for layer, key in zip(self.layers, _keys(rng, len(self.layers))):
            t = layer(t, memory, tgt_key_padding_mask, memory_key_padding_mask, key)
        return t if self.norm is None else self.norm(t)
