"""MirrorTalk's denoiser: a DiT over (time x facial region) tokens with spatio-temporal hierarchical modulation.

Tokens: one per region per frame, regions being the MotionSpec groups (lower, upper, eyes, pose, ...).
Each block: adaLN-Zero on the diffusion timestep around temporal self-attention (each region over time),
spatial self-attention (the regions of one frame) and a feed-forward; between them the conditioning enters:

    x += g_audio[region](t) * A(x)     A: cross-attention to the audio tokens of nearby frames (a band)
    x += g_style[region](t) * S(x)     S: style FiLM, a per-region scale and shift from the style code

The gates g = sigmoid(bias[region] + W t_emb) are per region and per diffusion timestep, shared by all blocks,
initialised with the prior "lower face audio-dominant, upper face style-dominant" and then learned. They are
inspectable (`modulation_gates`) and overridable at inference (`gate_override`).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.models.nn import layer_stack, layers
from mirrortalk_jax.models.nn.sharding import constrain

# Gate logits at initialisation, (audio, style) per region: sigmoid(2) = 0.88, sigmoid(-2) = 0.12.
DEFAULT_GATE_PRIOR = {"lower": (2.0, -2.0), "upper": (-2.0, 2.0), "eyes": (-2.0, 2.0), "pose": (0.0, 2.0)}

# Logical axes of the tokens (B, L, G, H) between blocks (models/nn/sharding.py; a no-op outside a mesh).
TOKEN_AXES = ("batch", "length", None, "embed")


class HierarchicalGates(nnx.Module):
    """Per-region, per-timestep audio and style gates in (0, 1). t_emb (B, H) -> (B, G, 2)."""

    def __init__(self, regions: tuple[str, ...], hidden: int, prior: Mapping[str, tuple[float, float]],
                 rngs: nnx.Rngs):
        init = np.array([prior.get(r, (0.0, 0.0)) for r in regions], np.float32)
        self.bias = nnx.Param(jnp.asarray(init), out_sharding=(None, None))
        # Zero-initialised: at first the gates equal the prior at every timestep; the time dependence is learned.
        self.time = layers.dense(hidden, 2 * len(regions), ("embed", None), rngs, zero_init=True)

    def __call__(self, t_emb: jax.Array) -> jax.Array:
        logits = self.bias[...][None] + self.time(t_emb).reshape(t_emb.shape[0], -1, 2)
        return jax.nn.sigmoid(logits)


class DiTBlock(nnx.Module):
    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float, num_regions: int, rngs: nnx.Rngs):
        # adaLN-Zero: shift, scale, gate for each of temporal attention, spatial attention and the MLP.
        self.ada = layers.dense(hidden, 9 * hidden, ("embed", "mlp"), rngs, zero_init=True)
        self.norm_t = layers.layer_norm(hidden, rngs, affine=False)
        self.temporal = layers.Attention(hidden, num_heads, rngs)
        self.norm_s = layers.layer_norm(hidden, rngs, affine=False)
        self.spatial = layers.Attention(hidden, num_heads, rngs)
        self.norm_c = layers.layer_norm(hidden, rngs)
        self.audio_attn = layers.Attention(hidden, num_heads, rngs)
        self.audio_out = layers.dense(hidden, hidden, ("mlp", "embed"), rngs, zero_init=True)
        self.style_film = layers.dense(hidden, 2 * num_regions * hidden, ("embed", "mlp"), rngs)
        self.style_out = layers.dense(hidden, hidden, ("mlp", "embed"), rngs, zero_init=True)
        self.norm_m = layers.layer_norm(hidden, rngs, affine=False)
        self.mlp = layers.FeedForward(hidden, mlp_ratio, rngs)

    def __call__(self, x, c, audio, style, gates, time_mask, band_mask):
        """x (B, L, G, H); c (B, H); audio (B, L, H); style (B, H); gates (B, G, 2); time_mask (B, L) bool;
        band_mask (L, L) bool (frame t may attend to audio frame s)."""
        b, length, regions, hidden = x.shape
        mods = jnp.split(self.ada(jax.nn.silu(c))[:, None, None, :], 9, axis=-1)  # each (B, 1, 1, H)
        # Temporal attention: every region attends over the valid frames of its own track.
        h = layers.modulate(self.norm_t(x), mods[0], mods[1])
        h = h.transpose(0, 2, 1, 3).reshape(b * regions, length, hidden)
        key_mask = jnp.repeat(time_mask, regions, axis=0)
        h = self.temporal(h, mask=key_mask).reshape(b, regions, length, hidden).transpose(0, 2, 1, 3)
        x = x + mods[2] * h
        # Spatial attention: the regions of one frame exchange information.
        h = layers.modulate(self.norm_s(x), mods[3], mods[4]).reshape(b * length, regions, hidden)
        x = x + mods[5] * self.spatial(h).reshape(b, length, regions, hidden)
        # Conditioning, weighted per region and timestep by the hierarchical gates.
        h = self.norm_c(x)
        queries = h.reshape(b, length * regions, hidden)
        # Frame t hears the valid audio frames within the band around it: (B, 1, L*G, L).
        mask = jnp.repeat(band_mask, regions, axis=0)[None, None] & time_mask[:, None, None, :]
        a = self.audio_out(self.audio_attn(queries, audio, mask).reshape(b, length, regions, hidden))
        gamma, beta = jnp.split(self.style_film(style).reshape(b, 1, regions, 2 * hidden), 2, axis=-1)
        s = self.style_out(h * gamma + beta)
        x = x + gates[:, None, :, 0:1] * a + gates[:, None, :, 1:2] * s
        x = x + mods[8] * self.mlp(layers.modulate(self.norm_m(x), mods[6], mods[7]))
        return constrain(x, TOKEN_AXES)


class DiTDenoiser(nnx.Module):
    """Predicts the diffusion target for noisy motion x_t (B, L, D) given audio, a style code and t."""

    def __init__(self, spec: MotionSpec, *, audio_dim: int, style_dim: int, hidden: int, num_layers: int,
                 num_heads: int, mlp_ratio: float = 4.0, audio_radius: int = 4,
                 gate_prior: Mapping[str, tuple[float, float]] | None = None, audio_mean: float = 0.0,
                 audio_std: float = 1.0, hierarchical_modulation: bool = True, scan_layers: bool = False,
                 remat: str = "none", rngs: nnx.Rngs):
        """scan_layers: the blocks as one stacked module applied by nnx.scan (params `blocks/<name>` with a
        leading (num_layers,) axis instead of `blocks/<i>/<name>`; `layer_stack.convert_layer_layout` converts);
        remat: "none", "full" or "dots", what the backward pass recomputes (models/nn/layer_stack.py)."""
        self.regions = spec.group_names
        self.indices = tuple(tuple(int(i) for i in spec.group_indices(g)) for g in self.regions)  # static
        self.motion_dim = spec.dim
        self.hidden = hidden
        self.audio_radius = audio_radius
        # Fixed standardisation of the audio features (log-mel sits around -7.5 +- 3.7): raw values would
        # saturate the audio cross-attention at initialisation and the audio path would barely learn.
        self.audio_mean, self.audio_std = float(audio_mean), float(audio_std)
        g = len(self.regions)
        self.embed_in = nnx.List([layers.dense(len(ix), hidden, ("motion", "embed"), rngs) for ix in self.indices])
        self.region_embedding = layers.param(rngs, layers.scaled_normal(0.02), (g, hidden), (None, "embed"))
        self.time_mlp_in = layers.dense(hidden, hidden, ("embed", "mlp"), rngs)
        self.time_mlp_out = layers.dense(hidden, hidden, ("mlp", "embed"), rngs)
        self.audio_in = layers.dense(audio_dim, hidden, ("audio", "embed"), rngs)
        self.style_in = layers.dense(style_dim, hidden, (None, "embed"), rngs)
        # Learned stand-ins for a dropped condition (classifier-free guidance).
        self.null_audio = nnx.Param(jnp.zeros((hidden,)), out_sharding=("embed",))
        self.null_style = nnx.Param(jnp.zeros((hidden,)), out_sharding=("embed",))
        # Without hierarchical modulation (the paper's ablation) every region takes audio and style at full
        # weight at every timestep: gates fixed at 1.
        self.gates = (HierarchicalGates(self.regions, hidden, gate_prior or DEFAULT_GATE_PRIOR, rngs)
                      if hierarchical_modulation else None)
        self.remat = layer_stack.check_remat(remat)
        self.blocks = layer_stack.create_blocks(lambda r: DiTBlock(hidden, num_heads, mlp_ratio, g, r), num_layers,
                                                rngs, scan=scan_layers)
        self.final_ada = layers.dense(hidden, 2 * hidden, ("embed", "mlp"), rngs, zero_init=True)
        self.final_norm = layers.layer_norm(hidden, rngs, affine=False)
        self.embed_out = nnx.List([layers.dense(hidden, len(ix), ("embed", "motion"), rngs, zero_init=True)
                                   for ix in self.indices])

    def time_embedding(self, t: jax.Array) -> jax.Array:
        """(B,) diffusion steps -> (B, H)."""
        return self.time_mlp_out(jax.nn.silu(self.time_mlp_in(layers.sinusoidal_embedding(t, self.hidden))))

    def modulation_gates(self, t: jax.Array) -> jax.Array:
        """The learned (audio, style) gates at diffusion steps t (B,): (B, G, 2), regions in spec order."""
        return self._gates(self.time_embedding(t))

    def _gates(self, c: jax.Array) -> jax.Array:
        if self.gates is None:
            return jnp.ones((c.shape[0], len(self.regions), 2), c.dtype)
        return self.gates(c)

    def __call__(self, x_t: jax.Array, t: jax.Array, audio_features: jax.Array, style_code: jax.Array, *,
                 drop_audio: jax.Array | None = None, drop_style: jax.Array | None = None,
                 mask: jax.Array | None = None, gate_override: jax.Array | None = None) -> jax.Array:
        """x_t (B, L, D), t (B,) int, audio_features (B, L, F), style_code (B, S) -> (B, L, D).

        drop_audio / drop_style (B,) bool replace that condition by its learned null embedding; mask (B, L)
        marks valid frames; gate_override (G, 2) replaces the learned gates where it is not NaN.
        """
        b, length, _ = x_t.shape
        mask = jnp.ones((b, length), bool) if mask is None else mask
        tokens = jnp.stack([emb(x_t[..., list(ix)]) for emb, ix in zip(self.embed_in, self.indices)], axis=2)
        tokens = tokens + self.region_embedding[...][None, None]
        tokens = tokens + layers.sinusoidal_embedding(jnp.arange(length), self.hidden)[None, :, None, :]
        c = self.time_embedding(t)
        audio = self.audio_in((audio_features - self.audio_mean) / self.audio_std) + layers.sinusoidal_embedding(jnp.arange(length), self.hidden)[None]
        style = self.style_in(style_code)
        if drop_audio is not None:
            audio = jnp.where(drop_audio[:, None, None], self.null_audio[...], audio)
        if drop_style is not None:
            style = jnp.where(drop_style[:, None], self.null_style[...], style)
        gates = self._gates(c)
        if gate_override is not None:
            gates = jnp.where(jnp.isnan(gate_override)[None], gates, gate_override[None])
        frames = jnp.arange(length)
        band = jnp.abs(frames[:, None] - frames[None, :]) <= self.audio_radius
        tokens = constrain(tokens, TOKEN_AXES)
        tokens = layer_stack.apply_blocks(self.blocks, tokens, c, audio, style, gates, mask, band, remat=self.remat)
        shift, scale = jnp.split(self.final_ada(jax.nn.silu(c))[:, None, None, :], 2, axis=-1)
        tokens = layers.modulate(self.final_norm(tokens), shift, scale)
        out = jnp.zeros((b, length, self.motion_dim), x_t.dtype)
        for r, (proj, ix) in enumerate(zip(self.embed_out, self.indices)):
            out = out.at[..., list(ix)].set(proj(tokens[:, :, r]))
        return out
