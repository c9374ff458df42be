"""The motion expert: a contrastive audio-motion sync network over short windows (a lip-sync expert on motion).

Like SyncNet / Wav2Lip's expert, but on motion instead of pixels: a motion branch embeds K frames of the
lower-face channels, an audio branch the K aligned rows of per-frame audio features, both as unit vectors, and
the sync logit is `scale * cosine + bias` (learned scale and bias). Trained with binary cross-entropy on
aligned (positive) and misaligned (negative) windows; frozen afterwards, it serves as
  - a lip-sync loss for generators (`sync_loss`, differentiable w.r.t. motion),
  - the "content" features of an HSIC independence loss (`content_embedding`),
  - a SyncNet-style offset / confidence metric on motion (`evaluate.sync.expert_sync`).

Window convention: window i of a sequence covers frames i .. i+K-1 of both streams (`data.windows`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.data.windows import sliding_windows
from mirrortalk_jax.objectives import sync as sync_objective
from mirrortalk_jax.models.nn import layers
from mirrortalk_jax.models.registry import register

class WindowEncoder(nnx.Module):
    """(..., K, C) window -> (..., E) unit vector.

    Per-frame projection and GELU, then a K-wide VALID temporal convolution (one output: it sees the whole
    window and its frame order), a GELU MLP and a projection to E, L2-normalised. No normalisation layer on the
    frames: a LayerNorm right after the (zero-bias at init) projection makes the features invariant to the input's
    scale, and how far the jaw opens (or how loud the audio is) is exactly what has to match.
    """

    def __init__(self, in_dim: int, in_axis: str, window: int, hidden: int, embed_dim: int, rngs: nnx.Rngs):
        self.window = window
        self.in_dim = in_dim
        self.frame = layers.dense(in_dim, hidden, (in_axis, "embed"), rngs)
        self.temporal = layers.conv1d(hidden, hidden, window, rngs, padding="VALID")
        self.mlp = layers.dense(hidden, hidden, ("mlp", "embed"), rngs)
        self.out = layers.dense(hidden, embed_dim, ("embed", "kv"), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.shape[-2:] != (self.window, self.in_dim):
            raise ValueError(f"expected windows (..., {self.window}, {self.in_dim}), got shape {x.shape}")
        lead = x.shape[:-2]
        h = jax.nn.gelu(self.frame(x.reshape((-1,) + x.shape[-2:])))  # (N, K, H)
        h = jax.nn.gelu(self.temporal(h)[:, 0])  # (N, H)
        h = self.out(jax.nn.gelu(self.mlp(h)))  # (N, E)
        # eps inside the root keeps the gradient finite at a zero vector.
        h = h * jax.lax.rsqrt(jnp.sum(jnp.square(h), -1, keepdims=True) + 1e-12)
        return h.reshape(lead + h.shape[-1:])


class MotionExpert(nnx.Module):
    """Audio-motion sync network. K = `window` frames; E = `embed_dim`; F = `audio_dim`; D = spec.dim.

    Callers pass full (D-channel) motion; the expert reads only the spec's `lower` group (the mouth).
    Training pairs (see `loss`): aligned with probability `positive_prob`; the same clip with the audio shifted
    by `near_shift` / `far_shift` frames (inclusive (min, max), either direction) with `near_shift_prob` /
    `far_shift_prob`; audio of another batch element (another speaker when there is one) otherwise.
    """

    def __init__(self, spec: MotionSpec, *, window: int = 5, hidden: int = 128, embed_dim: int = 64,
                 audio_dim: int = 320, positive_prob: float = 0.4, near_shift_prob: float = 0.2,
                 far_shift_prob: float = 0.2, near_shift: tuple[int, int] = (2, 5),
                 far_shift: tuple[int, int] = (5, 10), pairs_per_clip: int = 4, init_logit_scale: float = 5.0,
                 audio_mean: float = -7.5, audio_std: float = 3.7, rngs: nnx.Rngs):
        probs = (positive_prob, near_shift_prob, far_shift_prob)
        if min(probs) < 0 or sum(probs) > 1 + 1e-6:
            raise ValueError(f"positive/near/far shift probabilities must be >= 0 and sum to <= 1 (the rest are "
                             f"other-clip negatives), got {probs}")
        for name, (lo, hi) in (("near_shift", near_shift), ("far_shift", far_shift)):
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must be (min, max) frames with 1 <= min <= max, got {(lo, hi)}")
        if audio_std <= 0 or window < 1 or pairs_per_clip < 1:
            raise ValueError(f"expected audio_std > 0, window >= 1 and pairs_per_clip >= 1, got {audio_std}, "
                             f"{window} and {pairs_per_clip}")
        # Plain ints, floats and strings only: module attributes end up in the (hashable) graphdef.
        self.motion_dim = spec.dim
        self.spec_name = spec.name
        self.lower = tuple(int(i) for i in spec.group_indices("lower"))  # the mouth channels
        self.window = window
        self.audio_dim = audio_dim
        # Fixed input standardisation of the audio features; the defaults fit 80-band log-mel (floor log(1e-5)).
        self.audio_mean, self.audio_std = float(audio_mean), float(audio_std)
        # Category probabilities: aligned, near shift, far shift, other clip.
        self.category_probs = (*probs, max(0.0, 1.0 - sum(probs)))
        self.near_shift = (int(near_shift[0]), int(near_shift[1]))
        self.far_shift = (int(far_shift[0]), int(far_shift[1]))
        self.pairs_per_clip = pairs_per_clip
        self.motion_encoder = WindowEncoder(len(self.lower), "motion", window, hidden, embed_dim, rngs)
        self.audio_encoder = WindowEncoder(audio_dim, "audio", window, hidden, embed_dim, rngs)
        # Scalars: logical axes () (rank 0, replicated).
        self.log_scale = layers.param(rngs, nnx.initializers.constant(math.log(init_logit_scale)), (), ())
        self.bias = layers.param(rngs, nnx.initializers.zeros, (), ())

    # ----- Embeddings and logits -----

    def embed_motion(self, motion_windows: jax.Array) -> jax.Array:
        """(..., K, D) full motion windows -> (..., E) unit embeddings of their lower-face channels."""
        if motion_windows.shape[-1] != self.motion_dim:
            raise ValueError(f"expected motion with D={self.motion_dim} channels of {self.spec_name!r}, "
                             f"got shape {motion_windows.shape}")
        return self.motion_encoder(motion_windows[..., np.asarray(self.lower)])

    def embed_audio(self, audio_windows: jax.Array) -> jax.Array:
        """(..., K, F) audio-feature windows -> (..., E) unit embeddings."""
        return self.audio_encoder((audio_windows - self.audio_mean) / self.audio_std)

    def logit_scale(self) -> jax.Array:
        # Capped so that a runaway scale cannot saturate the BCE (as CLIP caps its temperature).
        return jnp.minimum(jnp.exp(self.log_scale[...]), 100.0)

    def sync_logit(self, motion_windows: jax.Array, audio_windows: jax.Array) -> jax.Array:
        """(..., K, D), (..., K, F) -> (...,) logit of "in sync" = scale * cosine + bias."""
        cosine = jnp.sum(self.embed_motion(motion_windows) * self.embed_audio(audio_windows), axis=-1)
        return self.logit_scale() * cosine + self.bias[...]

    # ----- Sequence-level uses of a (frozen) expert -----

    def content_embedding(self, audio_features: jax.Array, mask: jax.Array) -> jax.Array:
        """(B, L, F), (B, L) bool -> (B, E): mean audio-window embedding over the fully valid windows.

        Not re-normalised (its norm says how consistent the content is). A sequence without a full valid window
        gets zeros.
        """
        emb = self.embed_audio(sliding_windows(audio_features, self.window, axis=1))  # (B, N, E)
        valid = sliding_windows(mask, self.window, axis=1).all(-1).astype(emb.dtype)[..., None]  # (B, N, 1)
        return (emb * valid).sum(1) / jnp.maximum(valid.sum(1), 1.0)

    def sync_loss(self, motion: jax.Array, audio_features: jax.Array, mask: jax.Array) -> jax.Array:
        """(B, L, D), (B, L, F), (B, L) bool -> scalar: mean BCE towards "in sync" over valid aligned windows.

        Differentiable w.r.t. `motion`: a generator uses it as an auxiliary loss (stop the expert's own
        gradients on the caller's side to keep it frozen).
        """
        logits = self.sync_logit(sliding_windows(motion, self.window, axis=1),
                                 sliding_windows(audio_features, self.window, axis=1))  # (B, N)
        return sync_objective.window_mean(jax.nn.softplus(-logits), mask, self.window)  # -log P_sync

    # ----- Training -----

    def _sample_pairs(self, batch: dict[str, jax.Array], rng: jax.Array):
        """Training pairs of this expert's window and category mix: see `sample_sync_pairs`."""
        return sync_objective.sample_sync_pairs(batch, rng, window=self.window, pairs_per_clip=self.pairs_per_clip,
                                 category_probs=self.category_probs, near_shift=self.near_shift,
                                 far_shift=self.far_shift)

    def loss(self, batch: dict[str, jax.Array], rng: jax.Array, train: bool) -> tuple[jax.Array, dict]:
        """BCE with logits on random aligned / shifted / other-clip pairs drawn from the batch with `rng`.

        Reads motion (B, L, D), audio_features (B, L, F), motion_mask (B, L) (valid frames first, padding at the
        end, as the pipeline makes them), speaker_index (B,) and clip_index (B,). Metrics: accuracy (threshold
        0.5), mean sync probability of positives / all negatives / each negative kind, and the logit scale.
        """
        del train  # same objective in training and evaluation (fresh pairs from rng either way)
        motion_w, audio_w, labels, category, weight = self._sample_pairs(batch, rng)
        logits = self.sync_logit(motion_w, audio_w)
        bce = jax.nn.softplus(logits) - labels * logits  # = -[y log p + (1-y) log(1-p)], stable in the logit
        loss, metrics = sync_objective.pair_loss(bce, jax.nn.sigmoid(logits), labels, category, weight)
        return loss, {**metrics, "logit_scale": self.logit_scale()}


@register("motion_expert")
def _create(config, spec: MotionSpec, rngs: nnx.Rngs) -> MotionExpert:
    return MotionExpert(
        spec, window=config.window, hidden=config.hidden, embed_dim=config.embed_dim, audio_dim=config.audio_dim,
        positive_prob=config.positive_prob, near_shift_prob=config.near_shift_prob,
        far_shift_prob=config.far_shift_prob, near_shift=tuple(config.near_shift), far_shift=tuple(config.far_shift),
        pairs_per_clip=config.pairs_per_clip, init_logit_scale=config.get("init_logit_scale", 5.0),
        audio_mean=config.get("audio_mean", -7.5), audio_std=config.get("audio_std", 3.7), rngs=rngs)
