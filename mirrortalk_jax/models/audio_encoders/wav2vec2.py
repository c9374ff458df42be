"""HuBERT and wav2vec 2.0 speech encoders: Flax ports of Hugging Face's `HubertModel` / `Wav2Vec2Model` (eval).

MimicTalk drives its motion model with `facebook/hubert-large-ls960-ft` hidden states and DreamTalk with
`jonatasgrosman/wav2vec2-large-xlsr-53-english`; both are 50 Hz (stride 320 at 16 kHz). The two architectures
are the same network (they differ in how they were trained), so one module serves both, built from an
ml_collections config that `config_from_hf` makes from the Hugging Face config.json (any size works):

    conv feature encoder   7 Conv1d (kernels 10,3,3,3,3,2,2 / strides 5,2,2,2,2,2,2), GELU, and either
                           LayerNorm after every conv ("layer", the large models) or a per-channel GroupNorm
                           over time after the first conv only ("group", the base models)
    feature projection     LayerNorm (optional for HuBERT) -> Linear(conv_dim -> hidden)
    positional conv        grouped Conv1d(k=128, groups=16) with weight norm (w = g * v / |v| per tap, computed at
                           run time from the stored g and v), last frame dropped, GELU, added to the features
    transformer            pre-LN ("stable": h += Attn(LN h); h += FF(LN h); final LayerNorm) or post-LN

`__call__` returns every hidden state in the transformers 4.x convention (`hidden_states[i]` is the input of
layer i, `hidden_states[L]` the last hidden state), the raw per-layer outputs and the LayerNorm-ed conv features.
Parameter paths mirror the Hugging Face module names so the converter's name map (convert/hf_audio.py) is a
plain table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from mirrortalk_jax.models.nn import attention, layers
from mirrortalk_jax.models.registry import register

MODEL_TYPES = ("hubert", "wav2vec2")
# Fixed in HF's feature encoder (nn.LayerNorm / nn.GroupNorm defaults), whatever config.layer_norm_eps says.
_CONV_NORM_EPS = 1e-5


def config_from_hf(hf: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Our model config from a Hugging Face HubertConfig / Wav2Vec2Config dict (config.json).

    Options that change the computation and that the port does not implement (adapters, batch-normed positional
    conv, non-GELU activations) are refused here rather than silently ignored.
    """
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"config.json model_type {model_type!r} is not one of {MODEL_TYPES}")
    for key in ("add_adapter", "adapter_attn_dim", "conv_pos_batch_norm"):
        if hf.get(key):
            raise ValueError(f"config.json sets {key}={hf[key]!r}, which this port does not implement")
    for key in ("feat_extract_activation", "hidden_act"):
        if hf.get(key, "gelu") != "gelu":
            raise ValueError(f"config.json sets {key}={hf[key]!r}; only the exact GELU is implemented")
    if hf.get("feat_extract_norm", "group") not in ("group", "layer"):
        raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {hf['feat_extract_norm']!r}")
    conv_dim, conv_kernel, conv_stride = (list(map(int, hf[k])) for k in ("conv_dim", "conv_kernel", "conv_stride"))
    if not len(conv_dim) == len(conv_kernel) == len(conv_stride):
        raise ValueError(f"conv_dim/conv_kernel/conv_stride lengths differ: {conv_dim}, {conv_kernel}, {conv_stride}")
    c = ml_collections.ConfigDict()
    c.name = model_type
    c.hidden_size = int(hf["hidden_size"])
    c.num_hidden_layers = int(hf["num_hidden_layers"])
    c.num_attention_heads = int(hf["num_attention_heads"])
    c.intermediate_size = int(hf["intermediate_size"])
    c.conv_dim, c.conv_kernel, c.conv_stride = conv_dim, conv_kernel, conv_stride
    c.conv_bias = bool(hf.get("conv_bias", False))
    c.feat_extract_norm = str(hf.get("feat_extract_norm", "group"))
    # Wav2Vec2FeatureProjection always normalises; HubertFeatureProjection only when this flag is set.
    c.feat_proj_layer_norm = bool(hf.get("feat_proj_layer_norm", True)) if model_type == "hubert" else True
    c.do_stable_layer_norm = bool(hf.get("do_stable_layer_norm", False))
    c.num_conv_pos_embeddings = int(hf.get("num_conv_pos_embeddings", 128))
    c.num_conv_pos_embedding_groups = int(hf.get("num_conv_pos_embedding_groups", 16))
    c.layer_norm_eps = float(hf.get("layer_norm_eps", 1e-5))
    if c.hidden_size % c.num_attention_heads or c.hidden_size % c.num_conv_pos_embedding_groups:
        raise ValueError(f"hidden_size {c.hidden_size} must divide by num_attention_heads and conv pos groups")
    return c


def num_frames(num_samples: int, config) -> int:
    """Frames the conv encoder makes from `num_samples` samples (HF `_get_feat_extract_output_lengths`)."""
    return _out_length(num_samples, tuple(zip(config.conv_kernel, config.conv_stride)))


def _out_length(num_samples: int, conv: tuple[tuple[int, int], ...]) -> int:
    n = int(num_samples)
    for kernel, stride in conv:
        n = (n - kernel) // stride + 1
    return max(n, 0)


def frame_geometry(config) -> tuple[int, int]:
    """(receptive field, hop) in samples of one output frame: (400, 320) for every released model.

    Frame j is computed from samples [j * hop, j * hop + field) only (the conv stack has no padding), which is
    what lets long audio be cut into chunks with exact margins.
    """
    field, hop = 1, 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        field += (kernel - 1) * hop
        hop *= stride
    return field, hop


def gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)  # HF ACT2FN["gelu"] is the erf form


class Norm(nnx.Module):
    """Affine normalisation of (B, T, C) over channels ("layer") or, per channel, over time ("group", HF's
    GroupNorm(num_groups=C)). For "group", `stats` = (mean, var), each (B, C), replaces the statistics of this
    input: chunked extraction passes the statistics of the whole utterance."""

    def __init__(self, features: int, eps: float, over: str, axis_name: str, rngs: nnx.Rngs):
        del rngs
        self.eps, self.over = eps, over
        self.scale = nnx.Param(nnx.with_partitioning(nnx.initializers.ones, (axis_name,))(None, (features,)))
        self.bias = nnx.Param(nnx.with_partitioning(nnx.initializers.zeros, (axis_name,))(None, (features,)))

    def __call__(self, x: jax.Array, stats: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        if self.over == "layer":
            mean = x.mean(-1, keepdims=True)
            var = jnp.square(x - mean).mean(-1, keepdims=True)
        elif stats is None:
            mean = x.mean(1, keepdims=True)
            var = jnp.square(x - mean).mean(1, keepdims=True)
        else:
            mean, var = stats[0][:, None], stats[1][:, None]
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]


class ConvLayer(nnx.Module):
    def __init__(self, config, index: int, rngs: nnx.Rngs):
        in_dim = config.conv_dim[index - 1] if index else 1
        out_dim, kernel = config.conv_dim[index], config.conv_kernel[index]
        self.conv = nnx.Conv(in_dim, out_dim, kernel_size=(kernel,), strides=(config.conv_stride[index],),
                             padding="VALID", use_bias=config.conv_bias,
                             kernel_init=nnx.with_partitioning(layers.fan_in_normal((0, 1)), ("conv", None, "mlp")),
                             bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("mlp",)), rngs=rngs)
        if config.feat_extract_norm == "layer":
            self.layer_norm = Norm(out_dim, _CONV_NORM_EPS, "layer", "mlp", rngs)
        elif index == 0:
            self.layer_norm = Norm(out_dim, _CONV_NORM_EPS, "group", "mlp", rngs)
        else:
            self.layer_norm = None

    def pre_norm(self, x: jax.Array) -> jax.Array:
        return self.conv(x)

    def __call__(self, x: jax.Array, stats=None) -> jax.Array:
        x = self.conv(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x, stats)
        return gelu(x)


class FeatureEncoder(nnx.Module):
    """Raw waveform (B, N) -> conv features (B, T, conv_dim[-1]), T = num_frames(N)."""

    def __init__(self, config, rngs: nnx.Rngs):
        self.conv_layers = nnx.List([ConvLayer(config, i, rngs) for i in range(len(config.conv_dim))])

    def first_conv(self, input_values: jax.Array) -> jax.Array:
        """The first conv's output before its norm, (B, T0, C): what the group norm's statistics are over."""
        return self.conv_layers[0].pre_norm(input_values[..., None])

    def __call__(self, input_values: jax.Array, group_norm_stats=None) -> jax.Array:
        x = input_values[..., None]
        for i, layer in enumerate(self.conv_layers):
            x = layer(x, group_norm_stats if i == 0 else None)
        return x


class FeatureProjection(nnx.Module):
    def __init__(self, config, rngs: nnx.Rngs):
        dim = config.conv_dim[-1]
        self.layer_norm = Norm(dim, config.layer_norm_eps, "layer", "mlp", rngs) if config.feat_proj_layer_norm else None
        self.projection = layers.dense(dim, config.hidden_size, ("mlp", "embed"), rngs)

    def __call__(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(B, T, C) -> (projected (B, T, H), normalised features (B, T, C) = wav2vec2's extract_features)."""
        normed = self.layer_norm(features) if self.layer_norm is not None else features
        return self.projection(normed), normed


class PositionalConvEmbedding(nnx.Module):
    """Grouped Conv1d with weight norm over the kernel taps (HF `weight_norm(conv, dim=2)`).

    g (k, 1, 1) and v (k, H / groups, H) are the stored parameters, as in the released checkpoints; the kernel
    g * v / |v| (norm over each tap's (in, out) slice) is formed at run time so converted weights stay exact.
    """

    def __init__(self, config, rngs: nnx.Rngs):
        h, k, g = config.hidden_size, config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
        self.groups, self.kernel_size = g, k
        self.weight_v = layers.param(rngs, layers.fan_in_normal((0, 1)), (k, h // g, h), ("conv", None, "embed"))
        self.weight_g = nnx.Param(nnx.with_partitioning(nnx.initializers.ones, ("conv", None, None))(None, (k, 1, 1)))
        self.bias = nnx.Param(nnx.with_partitioning(nnx.initializers.zeros, ("embed",))(None, (h,)))

    def kernel(self) -> jax.Array:
        v = self.weight_v[...]
        return self.weight_g[...] * v / jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True))

    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, T, H) -> (B, T, H). Zero padding k // 2 on both sides; an even kernel gives T + 1 outputs, of
        which the last is dropped (HF's SamePadLayer)."""
        pad = self.kernel_size // 2
        y = jax.lax.conv_general_dilated(x, self.kernel().astype(x.dtype), window_strides=(1,), padding=[(pad, pad)],
                                         dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=self.groups)
        y = y[:, :x.shape[1]] + self.bias[...]
        return gelu(y)


class SelfAttention(nnx.Module):
    """HF's encoder attention: separate q/k/v/out projections with bias, logits scaled by head_dim^-0.5."""

    def __init__(self, hidden: int, num_heads: int, rngs: nnx.Rngs):
        self.num_heads, self.head_dim = num_heads, hidden // num_heads
        self.q_proj = layers.dense(hidden, hidden, ("embed", "heads"), rngs)
        self.k_proj = layers.dense(hidden, hidden, ("embed", "heads"), rngs)
        self.v_proj = layers.dense(hidden, hidden, ("embed", "heads"), rngs)
        self.out_proj = layers.dense(hidden, hidden, ("heads", "embed"), rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        """x (B, T, H), mask (B, T) bool of valid keys or None -> (B, T, H)."""
        b, t, _ = x.shape
        split = lambda y: y.reshape(b, t, self.num_heads, self.head_dim)
        q = split(self.q_proj(x)) * (self.head_dim ** -0.5)
        k, v = split(self.k_proj(x)), split(self.v_proj(x))
        valid = None if mask is None else mask[:, None, None, :]
        out = attention.attention(q, k, v, valid, fill=float(jnp.finfo(q.dtype).min))
        return self.out_proj(out.reshape(b, t, -1))


class FeedForward(nnx.Module):
    def __init__(self, hidden: int, intermediate: int, rngs: nnx.Rngs):
        self.intermediate_dense = layers.dense(hidden, intermediate, ("embed", "mlp"), rngs)
        self.output_dense = layers.dense(intermediate, hidden, ("mlp", "embed"), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.output_dense(gelu(self.intermediate_dense(x)))


def _layer_norm(hidden: int, eps: float, rngs: nnx.Rngs) -> Norm:
    return Norm(hidden, eps, "layer", "embed", rngs)


class EncoderLayer(nnx.Module):
    def __init__(self, config, rngs: nnx.Rngs):
        h = config.hidden_size
        self.stable = config.do_stable_layer_norm
        self.attention = SelfAttention(h, config.num_attention_heads, rngs)
        self.layer_norm = _layer_norm(h, config.layer_norm_eps, rngs)
        self.feed_forward = FeedForward(h, config.intermediate_size, rngs)
        self.final_layer_norm = _layer_norm(h, config.layer_norm_eps, rngs)

    def __call__(self, h: jax.Array, mask: jax.Array | None) -> jax.Array:
        if self.stable:  # pre-LN
            h = h + self.attention(self.layer_norm(h), mask)
            return h + self.feed_forward(self.final_layer_norm(h))
        h = self.layer_norm(h + self.attention(h, mask))
        return self.final_layer_norm(h + self.feed_forward(h))


class Encoder(nnx.Module):
    def __init__(self, config, rngs: nnx.Rngs):
        self.stable = config.do_stable_layer_norm
        self.pos_conv_embed = PositionalConvEmbedding(config, rngs)
        self.layer_norm = _layer_norm(config.hidden_size, config.layer_norm_eps, rngs)
        self.layers = nnx.List([EncoderLayer(config, rngs) for _ in range(config.num_hidden_layers)])

    def __call__(self, h: jax.Array, mask: jax.Array | None, num_layers: int | None = None):
        """h (B, T, H) projected features -> (hidden_states tuple of L + 1, layer_outputs tuple of L).

        `num_layers` < L runs only that many layers (feature extraction from an inner layer)."""
        if mask is not None:  # padded frames are zero before the positional conv, as in HF
            h = jnp.where(mask[..., None], h, 0.0)
        h = h + self.pos_conv_embed(h)
        if not self.stable:
            h = self.layer_norm(h)
        hidden_states, outputs = [], []
        run = list(self.layers) if num_layers is None else list(self.layers)[:num_layers]
        for layer in run:
            hidden_states.append(h)
            h = layer(h, mask)
            outputs.append(h)
        # After all layers: the last hidden state; after `num_layers`: the input of the next layer.
        hidden_states.append(self.layer_norm(h) if self.stable and num_layers is None else h)
        return tuple(hidden_states), tuple(outputs)


class SpeechEncoder(nnx.Module):
    """HuBERT / wav2vec 2.0 base model. Normalised 16 kHz waveform (B, N) -> 50 Hz hidden states."""

    def __init__(self, config, rngs: nnx.Rngs):
        self.num_layers = config.num_hidden_layers
        self.hidden_size = config.hidden_size
        # What chunked extraction (data/encoder_features.py) needs to cut audio without importing this module.
        self.receptive_field, self.hop = frame_geometry(config)
        self.first_conv_geometry = (config.conv_kernel[0], config.conv_stride[0])
        self.first_conv_channels = config.conv_dim[0]
        self.group_norm = config.feat_extract_norm == "group"
        self._conv = tuple(zip(config.conv_kernel, config.conv_stride))
        self.feature_extractor = FeatureEncoder(config, rngs)
        self.feature_projection = FeatureProjection(config, rngs)
        self.encoder = Encoder(config, rngs)

    def __call__(self, input_values: jax.Array, frame_mask: jax.Array | None = None, *,
                 group_norm_stats: tuple[jax.Array, jax.Array] | None = None) -> dict[str, Any]:
        """input_values (B, N) float32, already normalised per utterance (see `normalize_waveform`).

        frame_mask: (B, T) bool, valid frames (None: all). Masked frames are zeroed before the positional conv
          and never attended to, exactly as HF does with an attention mask, so a padded batch gives each item
          the result of running it alone.
        group_norm_stats: for the "group" conv encoder, (mean, var) each (B, conv_dim[0]) of the first conv's
          output over the whole utterance (see `first_conv_moments`); None: over this input, as HF.

        Returns {"last_hidden_state" (B, T, H), "hidden_states" tuple of L + 1 (B, T, H),
        "layer_outputs" tuple of L (B, T, H), "extract_features" (B, T, conv_dim[-1])}.
        """
        features = self.feature_extractor(input_values, group_norm_stats)
        projected, extract_features = self.feature_projection(features)
        hidden_states, layer_outputs = self.encoder(projected, frame_mask)
        return {"last_hidden_state": hidden_states[-1], "hidden_states": hidden_states,
                "layer_outputs": layer_outputs, "extract_features": extract_features}

    def num_frames(self, num_samples: int) -> int:
        """Output frames for `num_samples` samples (HF `_get_feat_extract_output_lengths`)."""
        return _out_length(num_samples, self._conv)

    def hidden_state(self, input_values: jax.Array, layer: int, frame_mask: jax.Array | None = None, *,
                     group_norm_stats=None) -> jax.Array:
        """hidden_states[layer] only (negative counts from the end: -1 = last_hidden_state), running no layer
        past the one needed. (B, N) -> (B, T, H)."""
        index = layer + self.num_layers + 1 if layer < 0 else layer
        if not 0 <= index <= self.num_layers:
            raise ValueError(f"layer {layer} out of range for {self.num_layers} layers (0..{self.num_layers} or -1)")
        features = self.feature_extractor(input_values, group_norm_stats)
        projected, _ = self.feature_projection(features)
        hidden_states, _ = self.encoder(projected, frame_mask, None if index == self.num_layers else index)
        return hidden_states[-1]

    def first_conv_moments(self, input_values: jax.Array, valid: jax.Array) -> tuple[jax.Array, ...]:
        """(count (B,), mean (B, C), M2 (B, C)) of the first conv's output over frames where `valid` (B, T0) is
        True: partial statistics that chunks combine (Chan et al.) into the utterance's group-norm statistics."""
        y = self.feature_extractor.first_conv(input_values)
        w = valid.astype(y.dtype)[..., None]
        count = w.sum(1)
        mean = (y * w).sum(1) / jnp.maximum(count, 1.0)
        m2 = (jnp.square(y - mean[:, None]) * w).sum(1)
        return count[:, 0], mean, m2


def normalize_waveform(audio: jax.Array, eps: float = 1e-7) -> jax.Array:
    """HF Wav2Vec2FeatureExtractor (do_normalize=True): zero mean, unit (population) variance per utterance.
    (..., N) -> (..., N)."""
    mean = audio.mean(-1, keepdims=True)
    var = jnp.square(audio - mean).mean(-1, keepdims=True)
    return (audio - mean) / jnp.sqrt(var + eps)


def frame_mask_from_lengths(num_valid_samples: jax.Array, total_frames: int, config) -> jax.Array:
    """(B,) valid samples -> (B, total_frames) bool frame mask (HF `_get_feature_vector_attention_mask`)."""
    n = jnp.asarray(num_valid_samples)
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        n = (n - kernel) // stride + 1
    return jnp.arange(total_frames)[None] < n[:, None]


def parameter_count(model: nnx.Module) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@register("hubert")
def _hubert(config, spec, rngs: nnx.Rngs) -> SpeechEncoder:
    del spec  # a frozen feature extractor: no motion space
    return SpeechEncoder(config, rngs)


@register("wav2vec2")
def _wav2vec2(config, spec, rngs: nnx.Rngs) -> SpeechEncoder:
    del spec
    return SpeechEncoder(config, rngs)
