"""DreamTalk's denoising network (`NoisePredictor`, arXiv 2312.09767), an exact port, plus a cached sampling path.

    x0_hat = net(x_t (B, L, M), t (B,), audio (B, L, W, F), style_clip (B, Ls, M), style_pad_mask (B, Ls))

M = expression channels (64 BFM coefficients in the released model), W = 2 * win + 1 audio rows per frame
(11 wav2vec2 rows), F = audio feature width (1024). Every frame is denoised on its own: frame l sees only
x_t[:, l], its audio window and the clip-level style code, so the network has no attention across frames.

Blocks (names as in the original, so checkpoints map one to one):
  content_encoder  Linear(F -> D) + sinusoid table (added once), N post-norm encoder layers over the W tokens.
  style_encoder    Linear(M -> D) + table, N encoder layers with the key-padding mask (True = padded frame),
                   self-attention pooling: softmax over frames of Linear(Mish(Linear(h))) - 1e5 * mask.
  fusion           MLP over concat(content, x_t broadcast over W) -> D ("content_xt_to_decoder_input_wo_time"),
                   plus the time embedding: Linear(SiLU(Linear([cos(t f), sin(t f)]))), f_i = 10000^(-i/(D/2)).
  decoder          two independent decoder stacks (upper / lower face) over that memory; queries = table +
                   style code; each stack's middle token -> tail MLP -> its channels of the output.

`denoise_cached` computes the same numbers (up to float32 rounding) for sampling, with every piece evaluated
only as often as its inputs change and nothing computed that the output does not read:
  * the content encoder, and the content half of the fusion's first layer, once per clip (they see neither
    x_t nor t); the x_t half is one (M -> D) product per frame, shared by its W tokens;
  * the decoder's query stream starts from table + style code, the same for every frame and step: its first
    self-attention and first cross-attention queries are computed once per style code, the queries folded
    into key space so the first layer never projects the memory's keys;
  * guidance branches differ only in the style code: they share the memory and its projections;
  * the output reads the middle token only: the last layer runs for that token, with its key and value
    projections folded into the query (torch_compat.MultiheadAttention.attend_few).
At the released size this is about 42 M multiply-adds per frame and step against the original's 100 M
(content encoder 29 M, fusion 2 M, decoder 69 M), or 200 M in its demo, which runs both guidance branches
at scale 1.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirrortalk_jax.models.nn import torch_compat as tc
from mirrortalk_jax.models.nn.layers import dense


@dataclasses.dataclass(frozen=True)
class StackDims:
    num_heads: int
    num_layers: int
    ffn_dim: int
    pos_embed_len: int  # rows of the stack's sinusoid table (the longest sequence it accepts)


@dataclasses.dataclass(frozen=True)
class DenoiserDims:
    """Every size of the network (static). Built from a model config by `dims_from_config`."""

    d_model: int
    audio_dim: int
    motion_dim: int
    content: StackDims
    style: StackDims
    decoder: StackDims
    tail_hidden: int
    upper_indices: tuple[int, ...]
    lower_indices: tuple[int, ...]
    style_max_len: int = 0  # STYLE_MAX_LEN: frames of the null style clip (0: the style table's length)
    dropout: float = 0.1
    eps: float = 1e-5
    activation: str = "relu"
    normalize_before: bool = False

    def __post_init__(self):
        both = list(self.upper_indices) + list(self.lower_indices)
        if sorted(both) != list(range(self.motion_dim)):
            raise ValueError(f"upper {list(self.upper_indices)} and lower {list(self.lower_indices)} face indices "
                             f"must split the {self.motion_dim} motion channels exactly")
        for name, s in (("content", self.content), ("style", self.style), ("decoder", self.decoder)):
            if self.d_model % s.num_heads:
                raise ValueError(f"{name}: d_model {self.d_model} does not divide by num_heads {s.num_heads}")
        if self.d_model % 2:
            raise ValueError(f"d_model must be even (time sinusoid), got {self.d_model}")
        if not self.style_max_len:
            object.__setattr__(self, "style_max_len", self.style.pos_embed_len)
        if self.style_max_len > self.style.pos_embed_len:
            raise ValueError(f"style_max_len {self.style_max_len} exceeds the style table "
                             f"({self.style.pos_embed_len} rows)")


def _stack(config) -> StackDims:
    return StackDims(int(config.num_heads), int(config.num_layers), int(config.ffn_dim), int(config.pos_embed_len))


def dims_from_config(config, spec=None) -> DenoiserDims:
    """Model config (mirrortalk_jax/configs/dreamtalk.py layout) + optional MotionSpec -> DenoiserDims.

    Empty index lists take the split from the motion space: lower = its `lower` group, upper = every other channel.
    """
    motion_dim = int(config.motion_dim) or (spec.dim if spec is not None else 0)
    if spec is not None and spec.dim != motion_dim:
        raise ValueError(f"config motion_dim {motion_dim} != motion space {spec.name!r} ({spec.dim} channels)")
    upper, lower = tuple(config.decoder.upper_indices or ()), tuple(config.decoder.lower_indices or ())
    if not upper and not lower:
        if spec is None:
            raise ValueError("decoder.upper_indices / lower_indices are empty and no motion space is given")
        lower = tuple(int(i) for i in spec.group_indices("lower"))
        upper = tuple(i for i in range(spec.dim) if i not in set(lower))
    d = int(config.d_model)
    return DenoiserDims(
        d_model=d, audio_dim=int(config.audio_dim), motion_dim=motion_dim, content=_stack(config.content_encoder),
        style=_stack(config.style_encoder), decoder=_stack(config.decoder),
        tail_hidden=int(config.decoder.get("tail_hidden", 0) or d // 2),
        upper_indices=tuple(int(i) for i in upper), lower_indices=tuple(int(i) for i in lower),
        style_max_len=int(config.get("style_max_len", 0) or 0), dropout=float(config.get("dropout", 0.1)),
        eps=float(config.get("layer_norm_eps", 1e-5)), activation=str(config.get("activation", "relu")),
        normalize_before=bool(config.get("normalize_before", False)))


@functools.lru_cache(maxsize=8)
def time_frequencies(dim: int) -> np.ndarray:
    """(dim // 2,) float32: torch.pow(10000, -arange(half) / half) of the original (float32 exponent, then the
    power rounded once)."""
    half = dim // 2
    exponent = -np.arange(half, dtype=np.float32) / np.float32(half)
    return np.power(10000.0, exponent.astype(np.float64)).astype(np.float32)


def time_sinusoid(t: jax.Array, dim: int) -> jax.Array:
    """(B,) timesteps (float, integer-valued) -> (B, dim) [cos(t f), sin(t f)] (cos first, as the original)."""
    args = t.astype(jnp.float32)[:, None] * jnp.asarray(time_frequencies(dim))[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


def _mlp(layers: Sequence[nnx.Linear], x: jax.Array, act=jax.nn.relu) -> jax.Array:
    """Linear, act, Linear, act, ..., Linear (a PyTorch nn.Sequential of Linears with activations between)."""
    for i, layer in enumerate(layers):
        x = layer(x) if i == 0 else layer(act(x))
    return x


def layer_options(dims: DenoiserDims) -> dict:
    """Keyword arguments of the transformer layers (dropout, activation, pre/post norm, eps)."""
    return {"dropout_rate": dims.dropout, "act": dims.activation, "norm_first": dims.normalize_before, "eps": dims.eps}


def _encoder(d_model: int, s: StackDims, rngs: nnx.Rngs, options: dict) -> tc.TransformerEncoder:
    # The original adds a final LayerNorm only to pre-norm encoders.
    return tc.TransformerEncoder(s.num_layers, d_model, s.num_heads, s.ffn_dim, rngs,
                                 final_norm=options.get("norm_first", False), **options)


def _table(length: int, s: StackDims, d: int, what: str) -> jax.Array:
    if length > s.pos_embed_len:
        raise ValueError(f"{what}: sequence of {length} exceeds the positional table ({s.pos_embed_len} rows)")
    return jnp.asarray(tc.sinusoid_table(s.pos_embed_len, d)[:length])


class ContentEncoder(nnx.Module):
    """(B, L, W, F) audio windows -> (B, L, W, D); each frame's window is one independent sequence."""

    def __init__(self, audio_dim: int, d_model: int, stack: StackDims, rngs: nnx.Rngs, **options):
        self.d_model, self.stack = d_model, stack
        self.increase_embed_dim = dense(audio_dim, d_model, ("audio", "embed"), rngs)
        self.encoder = _encoder(d_model, stack, rngs, options)

    def __call__(self, audio: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        pos = _table(audio.shape[-2], self.stack, self.d_model, "content encoder")
        return self.encoder(self.increase_embed_dim(audio) + pos, rng=rng)


class StyleEncoder(nnx.Module):
    """(B, Ls, M) reference clip + (B, Ls) pad mask (True = padded) -> (B, D) style code."""

    def __init__(self, motion_dim: int, d_model: int, stack: StackDims, rngs: nnx.Rngs, **options):
        self.d_model, self.stack = d_model, stack
        self.increase_embed_dim = dense(motion_dim, d_model, ("motion", "embed"), rngs)
        self.encoder = _encoder(d_model, stack, rngs, options)
        self.pool_hidden = dense(d_model, d_model, ("embed", "mlp"), rngs)  # aggregate_method.W.0
        self.pool_score = dense(d_model, 1, ("mlp", None), rngs)  # aggregate_method.W.2

    def __call__(self, clip: jax.Array, pad_mask: jax.Array | None = None, rng: jax.Array | None = None) -> jax.Array:
        pos = _table(clip.shape[-2], self.stack, self.d_model, "style encoder")
        h = self.encoder(self.increase_embed_dim(clip) + pos, key_padding_mask=pad_mask, rng=rng)
        logits = self.pool_score(tc.activation("mish")(self.pool_hidden(h)))[..., 0]
        if pad_mask is not None:  # added, not -inf: a fully padded clip still gets a (uniform) average
            logits = pad_mask.astype(logits.dtype) * -100000.0 + logits
        weights = jax.nn.softmax(logits, axis=-1)
        return jnp.sum(h * weights[..., None], axis=-2)


class TailMLP(nnx.Module):
    """Linear(D -> H) -> ReLU -> Linear(H -> H) -> ReLU -> Linear(H -> k) (original indices 0, 2, 4)."""

    def __init__(self, d: int, hidden: int, out: int, rngs: nnx.Rngs):
        self.layers = nnx.List([dense(d, hidden, ("embed", "mlp"), rngs), dense(hidden, hidden, ("mlp", None), rngs),
                                dense(hidden, out, (None, "motion"), rngs)])

    def __call__(self, x: jax.Array) -> jax.Array:
        return _mlp(self.layers, x)


class DisentangleDecoder(nnx.Module):
    """Upper- and lower-face decoder stacks over the per-frame memory (B, L, W, D) -> (B, L, M)."""

    def __init__(self, dims: DenoiserDims, rngs: nnx.Rngs):
        self.dims = dims
        s, d = dims.decoder, dims.d_model

        def stack():
            return tc.TransformerDecoder(s.num_layers, d, s.num_heads, s.ffn_dim, rngs, final_norm=True,
                                         **layer_options(dims))
        self.upper_decoder, self.lower_decoder = stack(), stack()
        self.upper_tail_fc = TailMLP(d, dims.tail_hidden, len(dims.upper_indices), rngs)
        self.lower_tail_fc = TailMLP(d, dims.tail_hidden, len(dims.lower_indices), rngs)

    def queries(self, style_code: jax.Array, w: int) -> jax.Array:
        """(..., D) -> (..., W, D): tgt (zeros) + table + style code, as the original's decoder input."""
        return _table(w, self.dims.decoder, self.dims.d_model, "decoder") + style_code[..., None, :]

    def scatter(self, upper: jax.Array, lower: jax.Array) -> jax.Array:
        out = jnp.zeros(upper.shape[:-1] + (self.dims.motion_dim,), upper.dtype)
        out = out.at[..., np.asarray(self.dims.upper_indices)].set(upper)
        return out.at[..., np.asarray(self.dims.lower_indices)].set(lower)

    def __call__(self, memory: jax.Array, style_code: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        b, length, w, d = memory.shape
        q = jnp.broadcast_to(self.queries(style_code, w)[:, None], (b, length, w, d))
        k_up, k_low = (None, None) if rng is None else jax.random.split(rng)
        mid = w // 2
        upper = self.upper_tail_fc(self.upper_decoder(q, memory, rng=k_up)[..., mid, :])
        lower = self.lower_tail_fc(self.lower_decoder(q, memory, rng=k_low)[..., mid, :])
        return self.scatter(upper, lower)


class DreamTalkDenoiser(nnx.Module):
    """The NoisePredictor: predicts x0 (B, L, M) from x_t, t, audio windows and a style clip (or ready code)."""

    def __init__(self, dims: DenoiserDims, rngs: nnx.Rngs):
        self.dims = dims
        d, m = dims.d_model, dims.motion_dim
        options = layer_options(dims)
        self.content_encoder = ContentEncoder(dims.audio_dim, d, dims.content, rngs, **options)
        self.style_encoder = StyleEncoder(m, d, dims.style, rngs, **options)
        self.decoder = DisentangleDecoder(dims, rngs)
        # content_xt_to_decoder_input_wo_time: input rows 0:D are content, D:D+M are x_t.
        self.fusion = nnx.List([dense(d + m, d, (None, "embed"), rngs), dense(d, d, ("embed", "mlp"), rngs),
                                dense(d, d, ("mlp", "embed"), rngs)])
        self.time_embed = nnx.List([dense(d, d, (None, "mlp"), rngs), dense(d, d, ("mlp", "embed"), rngs)])

    def time_embedding(self, t: jax.Array) -> jax.Array:
        """(B,) -> (B, D)."""
        return _mlp(self.time_embed, time_sinusoid(t, self.dims.d_model), act=jax.nn.silu)

    def style_code(self, style_clip: jax.Array, style_pad_mask: jax.Array | None) -> jax.Array:
        return self.style_encoder(style_clip, style_pad_mask)

    def __call__(self, x_t: jax.Array, t: jax.Array, audio: jax.Array, style_clip: jax.Array | None = None,
                 style_pad_mask: jax.Array | None = None, ready_style_code: jax.Array | None = None, *,
                 rng: jax.Array | None = None, intermediates: bool = False):
        """x_t (B, L, M), t (B,), audio (B, L, W, F), style_clip (B, Ls, M), style_pad_mask (B, Ls) bool
        (True = padded), or ready_style_code (B, D) instead of the clip -> x0 (B, L, M).

        rng enables dropout (training). intermediates=True returns a dict with the original's intermediate
        tensors (content, decoder_input_wo_time, time_embedding, decoder_input, style_code, x0_pred).
        """
        keys = [None] * 3 if rng is None else list(jax.random.split(rng, 3))
        content = self.content_encoder(audio, keys[0])
        x_rep = jnp.broadcast_to(x_t[:, :, None, :], x_t.shape[:2] + (audio.shape[2], x_t.shape[-1]))
        wo_time = _mlp(self.fusion, jnp.concatenate([content, x_rep], axis=-1))
        time_embedding = self.time_embedding(t)
        decoder_input = wo_time + time_embedding[:, None, None, :]
        if ready_style_code is None:
            ready_style_code = self.style_encoder(style_clip, style_pad_mask, keys[1])
        x0 = self.decoder(decoder_input, ready_style_code, keys[2])
        if not intermediates:
            return x0
        return {"content": content, "decoder_input_wo_time": wo_time, "time_embedding": time_embedding,
                "decoder_input": decoder_input, "style_code": ready_style_code, "x0_pred": x0}

    # ----- Cached sampling path (same numbers as __call__; see the module docstring) -----

    def audio_cache(self, audio: jax.Array) -> jax.Array:
        """(B, L, W, F) -> (B, L, W, D): content @ W1[:D] + b1, the x_t-independent half of the fusion's first
        layer (the x_t half, x_t @ W1[D:], is one (M -> D) product per frame, shared by its W tokens)."""
        first = self.fusion[0]
        return self.content_encoder(audio) @ first.kernel[...][: self.dims.d_model] + first.bias[...]

    def query_cache(self, style_codes: jax.Array, w: int) -> tuple[tuple[jax.Array, ...], ...]:
        """(B, G, D) style codes (G guidance branches), w audio tokens per frame -> per decoder stack
        (t1, folded, bias): the first layer's output after self-attention (B, G, W, D) and its cross-attention
        queries folded into key space (see MultiheadAttention.fold_keys) ((B, G, 1, D) etc. when the stack has one
        layer: only the middle token is read). None of it depends on the frame, x_t or t."""
        out = []
        q0 = self.decoder.queries(style_codes, w)  # (B, G, W, D)
        for stack in (self.decoder.upper_decoder, self.decoder.lower_decoder):
            layer = stack.layers[0]
            t1 = layer.self_block(q0, query_index=w // 2 if len(stack.layers) == 1 else None)
            x = layer.norm2(t1) if layer.norm_first else t1
            out.append((t1, *layer.multihead_attn.fold_keys(layer.multihead_attn.project(x, slice(0, 1))[..., 0, :])))
        return tuple(out)

    def denoise_cached(self, x_t: jax.Array, t: jax.Array, content_proj: jax.Array,
                       queries: tuple[tuple[jax.Array, ...], ...]) -> jax.Array:
        """x_t (B, L, M), t (B,), content_proj from `audio_cache`, queries from `query_cache` -> x0 per guidance
        branch (B, L, G, M)."""
        first, *rest = self.fusion
        h = content_proj + (x_t @ first.kernel[...][self.dims.d_model:])[:, :, None, :]
        memory = _mlp(rest, jax.nn.relu(h)) + self.time_embedding(t)[:, None, None, :]
        mid = memory.shape[2] // 2
        feats = [_stack_cached(stack, cache, memory, mid)
                 for stack, cache in zip((self.decoder.upper_decoder, self.decoder.lower_decoder), queries)]
        return self.decoder.scatter(self.decoder.upper_tail_fc(feats[0]), self.decoder.lower_tail_fc(feats[1]))


def _shared_query_attention(mha: tc.MultiheadAttention, folded: jax.Array, bias: jax.Array,
                            memory: jax.Array) -> jax.Array:
    """Per-clip key-folded queries (B, G, Q, H, D), bias (B, G, Q, H) attending per-frame memory (B, L, K, D),
    without copying the queries to every frame or projecting the keys -> (B, L, G, Q, D). The logits are one
    (G Q H x D) by (D x L K) product per clip."""
    logits = jnp.einsum("bgqhe,blke->blhgqk", folded, memory)
    logits = logits + jnp.moveaxis(bias, -1, 1)[:, None, ..., None]
    v = mha.split_heads(mha.project(memory, slice(2, 3))[..., 0, :])
    out = jnp.einsum("blhgqk,blkhd->blgqhd", jax.nn.softmax(logits, axis=-1), v)
    return mha.out_proj(out.reshape(out.shape[:-2] + (-1,)))


def _residual(norm: nnx.LayerNorm, norm_first: bool, x: jax.Array, branch: jax.Array) -> jax.Array:
    return x + branch if norm_first else norm(x + branch)


def _stack_cached(stack: tc.TransformerDecoder, cache: tuple[jax.Array, ...], memory: jax.Array,
                  mid: int) -> jax.Array:
    """One decoder stack from its cached first self-attention -> middle-token features (B, L, G, D).

    cache = (t1 (B, G, Q, D), folded, bias) from `query_cache`; memory (B, L, W, D). Every branch's queries attend
    the same frame memory (branches folded into the query axis); the last layer computes only the middle token,
    with key/value projections folded into its query (MultiheadAttention.attend_few).
    """
    b, length, w, d = memory.shape
    t1, folded, bias = cache
    layers = list(stack.layers)
    first, pre = layers[0], layers[0].norm_first
    h = _residual(first.norm2, pre, t1[:, None], _shared_query_attention(first.multihead_attn, folded, bias, memory))
    h = first.ffn_block(h)  # (B, L, G, Q, D)
    g = h.shape[2]
    for i, layer in enumerate(layers[1:], start=1):
        if i < len(layers) - 1:
            h = layer.self_block(h)
            h = layer.ffn_block(layer.cross_block(h.reshape(b, length, g * w, d), memory).reshape(h.shape))
            continue
        x = layer.norm1(h) if pre else h  # last layer: the middle token only
        attn = layer.self_attn.attend_few(x[..., mid:mid + 1, :], x)[..., 0, :]
        h = _residual(layer.norm1, pre, h[..., mid, :], attn)
        x = layer.norm2(h) if pre else h  # (B, L, G, D): G queries per frame
        h = layer.ffn_block(_residual(layer.norm2, pre, h, layer.multihead_attn.attend_few(x, memory)))
        return stack.norm(h)
    return stack.norm(h)[..., 0, :]  # a one-layer stack: its cached queries were the middle token already
