"""The in-context flow transformer of MimicTalk's ICS-A2M (`modules/audio2motion/cfm/icl_transformer.py` and
`module.py` of yerfor/MimicTalk, a Voicebox-style network), ported operation by operation.

  tokens = Linear(concat[x_t * mask, audio, prompt * (1 - mask)])              (B, T, D)
      + GELU(depthwise conv k31)                                                conv positions
  [registers | tokens] -> depth x (AdaRMSNorm(t) -> QK-RMSNorm attention with RoPE,
                                   AdaRMSNorm(t) -> GEGLU)  -> RMSNorm -> Linear -> velocity (B, T, M)

Numerics follow the original: F.normalize with eps 1e-12, erf GELU, RoPE on half-split dims with register
tokens at position -10000 (float32 angles from the stored inv_freq buffer), attention logits x10 without 1/sqrt(d),
masked keys at -float32 max, PyTorch's linear resize of the audio track to the motion rate.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirrortalk_jax.models.nn import attention
from mirrortalk_jax.models.nn.layers import Frozen, fan_in_normal, param, scaled_normal

_init = nnx.with_partitioning


def rms_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """F.normalize(x, dim=-1): x / max(||x||_2, eps)."""
    return x / jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True)), eps)


def resize_linear(x: jax.Array, length: int, axis: int = 1) -> jax.Array:
    """PyTorch F.interpolate(mode='(bi)linear', align_corners=False), no antialias, along `axis` to `length`.

    Half-pixel centres src = (i + 0.5) * n / length - 0.5 clamped at 0, linear between floor(src) and the next
    frame (clipped to n - 1); index and weight arithmetic in float32 as PyTorch's CPU kernel does it.
    """
    n = x.shape[axis]
    if n == length:
        return x
    scale = np.float32(n) / np.float32(length)
    src = np.maximum(scale * (np.arange(length, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
    i0 = np.minimum(np.floor(src).astype(np.int32), n - 1)
    i1 = np.where(i0 < n - 1, i0 + 1, i0)
    w1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    w0 = np.float32(1) - w1
    shape = [1] * x.ndim
    shape[axis] = length
    return (jnp.take(x, i0, axis=axis) * w0.reshape(shape) + jnp.take(x, i1, axis=axis) * w1.reshape(shape))


def rotary_tables(inv_freq: jax.Array, num_registers: int, length: int,
                  register_position: int) -> tuple[jax.Array, jax.Array]:
    """cos, sin (num_registers + length, dim_head) for RoPE at positions [register_position]*R + 0..T-1.

    inv_freq: (dim_head / 2,) float32, the model's stored buffer. The angles are float32 products of positions
    and inv_freq, as the original's einsum forms them; at position -10000 one ulp of inv_freq moves an angle by
    ~1e-3 rad, so the buffer must be the checkpoint's own, not a recomputation (see `rope_inv_freq`).
    """
    pos = jnp.concatenate([jnp.full((num_registers,), register_position, jnp.float32),
                           jnp.arange(length, dtype=jnp.float32)])
    angles = pos[:, None] * inv_freq.astype(jnp.float32)[None]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def rope_inv_freq(dim_head: int, theta: float) -> np.ndarray:
    """1 / theta^(arange(0, d, 2) / d), (d / 2,) float32, correctly rounded from float64.

    The original computes this buffer with float32 `pow`, whose last bit depends on the platform's libm (and
    numpy's float32 pow on the CPU's SIMD path), so it is computed here in float64 for models trained with this
    project, and converted checkpoints carry their own buffer (`InContextTransformer.rope_inv_freq`).
    """
    exponent = np.arange(0, dim_head, 2, dtype=np.float64) / dim_head
    return (1.0 / np.power(np.float64(theta), exponent)).astype(np.float32)


def _rotate_half(x: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


class AdaptiveRMSNorm(nnx.Module):
    """normalize(x) * sqrt(D) * gamma(c) + beta(c), gamma/beta linear in the flow-time embedding c (init 1, 0)."""

    def __init__(self, dim: int, cond_dim: int, rngs: nnx.Rngs):
        self.scale = dim ** 0.5
        zeros, ones = nnx.initializers.zeros, nnx.initializers.ones
        self.to_gamma = nnx.Linear(cond_dim, dim, kernel_init=_init(zeros, ("mlp", "embed")),
                                   bias_init=_init(ones, ("embed",)), rngs=rngs)
        self.to_beta = nnx.Linear(cond_dim, dim, kernel_init=_init(zeros, ("mlp", "embed")),
                                  bias_init=_init(zeros, ("embed",)), rngs=rngs)

    def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
        normed = rms_normalize(x) * self.scale
        return normed * self.to_gamma(cond)[:, None] + self.to_beta(cond)[:, None]


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, logit_scale: float,
           query_chunk: int = 0) -> jax.Array:
    """softmax(scale * q k^T, keys masked at -float32 max) v. q (B, H, Nq, d), k/v (B, H, N, d), mask (B, N).

    With `query_chunk` > 0 and more queries than that, queries are processed in blocks of `query_chunk` rows
    (a lax.map; the last block padded): each block's logits stay in cache instead of streaming a (B, H, N, N)
    array through memory four times (logits, max, exp-sum, normalise). Every query row is computed exactly as
    without blocks; on a CPU this halves the attention time at N ~ 900.
    """
    def block(qb: jax.Array) -> jax.Array:
        return attention.attention(qb, k, v, mask[:, None, None, :], fill=attention.FILL_FLOAT32_MIN,
                                   logit_scale=logit_scale, heads_first=True)

    b, h, n, d = q.shape
    if not query_chunk or n <= query_chunk:
        return block(q)
    pad = (-n) % query_chunk
    blocks = jnp.pad(q, ((0, 0), (0, 0), (0, pad), (0, 0))).reshape(b, h, -1, query_chunk, d)
    out = jax.lax.map(block, jnp.moveaxis(blocks, 2, 0))  # (blocks, B, H, query_chunk, d)
    return jnp.moveaxis(out, 0, 2).reshape(b, h, n + pad, d)[:, :, :n]


class QKNormAttention(nnx.Module):
    """Bidirectional attention with per-head RMS-normalised queries/keys (learned gain), RoPE, logits x scale."""

    def __init__(self, dim: int, heads: int, dim_head: int, logit_scale: float, rngs: nnx.Rngs,
                 query_chunk: int = 0):
        self.heads, self.dim_head, self.logit_scale = heads, dim_head, float(logit_scale)
        self.query_chunk = int(query_chunk)
        self.wqkv = param(rngs, fan_in_normal((0,)), (dim, 3, heads, dim_head), ("embed", None, "heads", "kv"))
        self.q_gamma = param(rngs, nnx.initializers.ones, (heads, dim_head), ("heads", "kv"))
        self.k_gamma = param(rngs, nnx.initializers.ones, (heads, dim_head), ("heads", "kv"))
        self.wo = param(rngs, fan_in_normal((0, 1)), (heads, dim_head, dim), ("heads", "kv", "embed"))

    def __call__(self, x: jax.Array, mask: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        """x (B, N, D), mask (B, N) bool valid keys, cos/sin (N, d) -> (B, N, D)."""
        q, k, v = jnp.einsum("bnd,dthk->tbhnk", x, self.wqkv[...])
        root = self.dim_head ** 0.5
        q = rms_normalize(q) * self.q_gamma[...][:, None] * root
        k = rms_normalize(k) * self.k_gamma[...][:, None] * root
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        out = attend(q, k, v, mask, self.logit_scale, self.query_chunk)
        return jnp.einsum("bhnk,hkd->bnd", out, self.wo[...])


class GEGLUFeedForward(nnx.Module):
    """Linear(D -> 2I) -> value * gelu(gate) -> Linear(I -> D), I = int(D * mult * 2 / 3); [value | gate] halves."""

    def __init__(self, dim: int, mult: float, rngs: nnx.Rngs):
        inner = int(dim * mult * 2 / 3)
        self.up = param(rngs, fan_in_normal((0,)), (dim, 2, inner), ("embed", None, "mlp"))
        self.up_bias = param(rngs, nnx.initializers.zeros, (2, inner), (None, "mlp"))
        self.down = nnx.Linear(inner, dim, kernel_init=_init(fan_in_normal((0,)), ("mlp", "embed")),
                               bias_init=_init(nnx.initializers.zeros, ("embed",)), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jnp.einsum("bnd,dti->tbni", x, self.up[...]) + self.up_bias[...][:, None, None]
        return self.down(jax.nn.gelu(h[1], approximate=False) * h[0])


class Block(nnx.Module):
    def __init__(self, dim: int, cond_dim: int, heads: int, dim_head: int, ff_mult: float, logit_scale: float,
                 rngs: nnx.Rngs, query_chunk: int = 0):
        self.attn_norm = AdaptiveRMSNorm(dim, cond_dim, rngs)
        self.attn = QKNormAttention(dim, heads, dim_head, logit_scale, rngs, query_chunk)
        self.ff_norm = AdaptiveRMSNorm(dim, cond_dim, rngs)
        self.ff = GEGLUFeedForward(dim, ff_mult, rngs)

    def __call__(self, x, time_emb, mask, cos, sin):
        x = self.attn(self.attn_norm(x, time_emb), mask, cos, sin) + x
        return self.ff(self.ff_norm(x, time_emb)) + x


class InContextTransformer(nnx.Module):
    """The velocity field v(x_t, t | audio, prompt) of the original `InContextTransformerAudio2Motion`."""

    def __init__(self, *, dim_in: int, dim_audio_in: int, dim: int, depth: int, heads: int, dim_head: int,
                 ff_mult: float = 4.0, time_hidden_dim: int | None = None, conv_kernel: int = 31,
                 num_registers: int = 16, register_position: int = -10000, rope_theta: float = 50000.0,
                 logit_scale: float = 10.0, query_chunk: int = 0, rngs: nnx.Rngs):
        if dim % 2 or depth % 2 or conv_kernel % 2 == 0:
            raise ValueError(f"need even dim ({dim}) and depth ({depth}), odd conv_kernel ({conv_kernel})")
        hidden = time_hidden_dim or 4 * dim
        self.num_registers, self.register_position = int(num_registers), int(register_position)
        # The original's `rotary_emb.inv_freq` buffer: held (not recomputed at call time) so a converted
        # checkpoint's exact float32 values are used; Frozen, so the trainer never updates it.
        self.rope_inv_freq = Frozen(jnp.asarray(rope_inv_freq(dim_head, rope_theta)))
        self.time_weights = param(rngs, scaled_normal(1.0), (dim // 2,), (None,))
        self.time_mlp = nnx.Linear(dim, hidden, kernel_init=_init(fan_in_normal((0,)), ("embed", "mlp")),
                                   bias_init=_init(nnx.initializers.zeros, ("mlp",)), rngs=rngs)
        self.to_cond_emb = nnx.data(None)  # the original's nn.Identity when the features are already dim_in wide
        if dim_audio_in != dim_in:
            self.to_cond_emb = nnx.Linear(dim_audio_in, dim_in, rngs=rngs,
                                          kernel_init=_init(fan_in_normal((0,)), ("audio", "motion")),
                                          bias_init=_init(nnx.initializers.zeros, ("motion",)))
        self.to_embed = nnx.Linear(3 * dim_in, dim, kernel_init=_init(fan_in_normal((0,)), ("motion", "embed")),
                                   bias_init=_init(nnx.initializers.zeros, ("embed",)), rngs=rngs)
        self.null_cond = param(rngs, nnx.initializers.zeros, (dim_in,), ("motion",))
        self.conv_embed = nnx.Conv(dim, dim, kernel_size=(conv_kernel,), feature_group_count=dim,
                                   padding=((conv_kernel // 2, conv_kernel // 2),), rngs=rngs,
                                   kernel_init=_init(fan_in_normal((0, 1)), ("conv", None, "embed")),
                                   bias_init=_init(nnx.initializers.zeros, ("embed",)))
        # The original has no register parameter at all when num_registers is 0.
        self.register_tokens = nnx.data(None) if not num_registers else param(
            rngs, scaled_normal(1.0), (num_registers, dim), (None, "embed"))
        self.layers = nnx.List([Block(dim, hidden, heads, dim_head, ff_mult, logit_scale, rngs, query_chunk)
                                for _ in range(depth)])
        self.final_norm = param(rngs, nnx.initializers.ones, (dim,), ("embed",))
        self.to_pred = nnx.Linear(dim, dim_in, use_bias=False, rngs=rngs,
                                  kernel_init=_init(fan_in_normal((0,)), ("embed", "motion")))

    def embed_audio(self, cond_audio: jax.Array, length: int) -> jax.Array:
        """(B, Ta, dim_audio_in) audio features -> (B, length, dim_in) at the motion rate (independent of t)."""
        emb = self.to_cond_emb(cond_audio) if self.to_cond_emb is not None else cond_audio
        return resize_linear(emb, length, axis=1)

    def time_embedding(self, times: jax.Array) -> jax.Array:
        """(B,) flow times in [0, 1] -> (B, time_hidden): learned-frequency [sin, cos] -> Linear -> SiLU."""
        freqs = times[:, None] * self.time_weights[...][None] * 2 * math.pi
        return jax.nn.silu(self.time_mlp(jnp.concatenate([jnp.sin(freqs), jnp.cos(freqs)], axis=-1)))

    def __call__(self, x: jax.Array, times: jax.Array, audio_emb: jax.Array, cond: jax.Array,
                 cond_mask: jax.Array | None = None, self_attn_mask: jax.Array | None = None,
                 drop_prompt: jax.Array | None = None) -> jax.Array:
        """Velocity (B, T, M).

        x: (B, T, M) state x_t; times: () or (B,) flow time; audio_emb: (B, T, M) from `embed_audio`;
        cond: (B, T, M) prompt motion (read where cond_mask is False); cond_mask: (B, T) bool, True = frame to
        predict (None: all); self_attn_mask: (B, T) bool valid frames (None: all); drop_prompt: (B,) bool,
        True = unconditional branch (prompt replaced by the learned null frame).
        """
        b, length, _ = x.shape
        times = jnp.broadcast_to(jnp.asarray(times, jnp.float32).reshape(-1), (b,))
        if cond_mask is not None:  # None: every frame is predicted (the original's eval default)
            keep = cond_mask[..., None]
            x, cond = x * keep, cond * ~keep
        else:
            cond = jnp.zeros_like(cond)
        if drop_prompt is not None:
            cond = jnp.where(drop_prompt[:, None, None], self.null_cond[...], cond)
        h = self.to_embed(jnp.concatenate([x, audio_emb, cond], axis=-1))
        h = jax.nn.gelu(self.conv_embed(h), approximate=False) + h
        time_emb = self.time_embedding(times)

        registers = self.num_registers
        if registers:
            h = jnp.concatenate([jnp.broadcast_to(self.register_tokens[...], (b, *self.register_tokens.shape)), h], 1)
        valid = jnp.ones((b, length), bool) if self_attn_mask is None else self_attn_mask.astype(bool)
        mask = jnp.concatenate([jnp.ones((b, registers), bool), valid], axis=1)
        cos, sin = rotary_tables(self.rope_inv_freq[...], registers, length, self.register_position)
        for layer in self.layers:
            h = layer(h, time_emb, mask, cos, sin)
        h = rms_normalize(h[:, registers:]) * (h.shape[-1] ** 0.5) * self.final_norm[...]
        return self.to_pred(h)
