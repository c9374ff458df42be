"""DreamTalk's style-aware lip expert, which DreamTalk never released, built here as a trainable model.

The paper (arXiv 2312.09767, eq. 3) judges whether a short mouth-motion clip is in sync with its audio *given
the speaking style*. A wide-mouthed speaker and a mumbler say the same syllable with different lip motion, so
an unconditional expert pulls every generated style towards the average mouth (the paper's Table IV: the
unconditional expert gains sync but loses style fidelity). What the paper states, and what we follow:
  - a lip encoder (mostly an MLP) over mouth-region motion and an audio encoder (mostly 1-D convolutions);
  - its own style encoder (the architecture of the denoiser's, weights not shared), whose style features are
    concatenated with intermediate feature maps of both encoders;
  - sync score from the cosine of the two embeddings, binary cross-entropy on in-sync / off-sync pairs
    (Wav2Lip's expert), then frozen; the denoiser adds L_sync = -log P_sync on its generated clips.
What the paper leaves open (window n, sizes, the probability map) is a config choice here:
  - the mouth region is the MotionSpec's `lower` group (BFM mouth vertices need a 3DMM basis we do not ship);
  - P_sync = (cos + 1) / 2 ("affine"), or relu embeddings with P_sync = cos ("relu", Wav2Lip's exact form);
  - pairs come from `objectives.sync.sample_sync_pairs` (aligned, shifted by a few frames, other speaker).

Style source (config): its own style encoder trained jointly (`style_encoder`: "dreamtalk" architecture or the
project's "sdse"), or a trained run's style encoder loaded and frozen (`style_encoder_workdir`: a DreamTalk
denoiser run or converted checkpoint, an SDSE run, or any run whose model has `style_code`).

Generator hook: `sync_loss(expert, motion_x0_hat, audio, style_code, mask)` with `style_code =
expert.style_code(reference_motion, reference_mask)`, differentiable w.r.t. the generated motion.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.models.nn import layers
from mirrortalk_jax.data.windows import sliding_windows
from mirrortalk_jax.objectives import sync as sync_objective
from mirrortalk_jax.models.registry import Part, register

SIMILARITIES = ("affine", "relu")
_P_EPS = 1e-6  # P_sync is kept in [eps, 1 - eps] so that -log P and -log(1 - P) stay finite


def _unit(h: jax.Array) -> jax.Array:
    # eps inside the root keeps the gradient finite at a zero vector (a dead relu embedding).
    return h * jax.lax.rsqrt(jnp.sum(jnp.square(h), -1, keepdims=True) + 1e-12)


# ----- Style sources -----


# A style source is any model with a style encoder, from a trained run or converted checkpoint (its weights
# loaded by the run loader, frozen), of any motion space of the data's width.
STYLE_SOURCE = Part("style_encoder_workdir", same_motion_space=False, drawn_first=True)


def _bare_dreamtalk_encoder(model: nnx.Module) -> nnx.Module | None:
    """The port's style encoder when `model` is DreamTalk's bare network or bare style encoder (both take a pad
    mask, True = padded frame); None otherwise."""
    try:
        from mirrortalk_jax.models.dreamtalk import net as dreamtalk_net  # only when present
    except ImportError:
        return None
    if isinstance(model, dreamtalk_net.DreamTalkDenoiser):
        return model.style_encoder
    return model if type(model) is dreamtalk_net.StyleEncoder else None


def style_code_of(model: nnx.Module, motion: jax.Array, mask: jax.Array) -> jax.Array:
    """Style code (B, S) of clips (B, R, D) with valid-frame mask (B, R) bool, from any model that has one:
    `style_code(motion, mask)` (DreamTalk, MirrorTalk, this expert), DreamTalk's bare network or style encoder
    (pad-mask convention), an SDSE stage-1 run (`encoder`), or a style encoder module `model(motion, mask)`.
    Raises TypeError for a model without one."""
    bare = _bare_dreamtalk_encoder(model)
    if bare is not None:
        return bare(motion, ~mask)
    if hasattr(model, "style_code"):
        return model.style_code(motion, mask)
    if hasattr(model, "loss") and hasattr(model, "encoder"):  # a trained model holding its style encoder
        return model.encoder(motion, mask)
    if callable(model) and not hasattr(model, "loss"):  # a style encoder module itself
        return model(motion, mask)
    raise TypeError(f"{type(model).__name__} has no style encoder (style_code(motion, mask) or encoder)")


def style_width(model: nnx.Module, motion_dim: int) -> int:
    """S, the width of `style_code_of(model, ...)` (shapes only: nothing is computed)."""
    return int(jax.eval_shape(lambda: style_code_of(model, jnp.zeros((1, 8, motion_dim)),
                                                    jnp.ones((1, 8), bool))).shape[-1])


def build_style_encoder(config, spec: MotionSpec, rngs: nnx.Rngs) -> tuple[nnx.Module, int]:
    """A fresh style encoder from `config` (kind "dreamtalk" or "sdse") and its code width S.

    "dreamtalk": the DreamTalk denoiser's own architecture (models.dreamtalk.denoiser.StyleEncoder: linear, sinusoid
    positions, post-norm encoder layers, self-attention pooling), as the paper gives the expert; "sdse":
    MirrorTalk's style encoder (models.mirrortalk.style_encoder), memory bank off unless num_slots > 0.
    """
    kind = config.get("kind", "dreamtalk")
    if kind == "dreamtalk":
        from mirrortalk_jax.models.dreamtalk import denoiser as dreamtalk  # only when asked for

        encoder = dreamtalk.StyleEncoder(spec.dim, int(config.hidden), int(config.num_heads), int(config.mlp_dim),
                                         int(config.num_layers), int(config.max_frames), rngs=rngs)
        return encoder, int(config.hidden)
    if kind == "sdse":
        from mirrortalk_jax.models.mirrortalk.style_encoder import StyleEncoder

        encoder = StyleEncoder(motion_dim=spec.dim, hidden=config.hidden, num_layers=config.num_layers,
                               num_heads=config.num_heads, mlp_dim=config.mlp_dim,
                               num_slots=config.get("num_slots", 0), style_dim=config.style_dim,
                               content_dim=config.style_dim, max_frames=config.max_frames, rngs=rngs)
        return encoder, int(config.style_dim)
    raise ValueError(f"unknown style encoder kind {kind!r}; choose 'dreamtalk' or 'sdse'")


# ----- Encoders -----


class LipEncoder(nnx.Module):
    """Mouth-motion window (N, K, C) and style features (N, Hs) -> (N, E) (before normalisation).

    Mostly an MLP, as in the paper: per-frame projection, the K frames flattened (order matters), the style
    features concatenated with that intermediate feature, two more dense layers.
    """

    def __init__(self, in_dim: int, window: int, hidden: int, style_hidden: int, embed_dim: int, rngs: nnx.Rngs):
        self.frame = layers.dense(in_dim, hidden, ("motion", "embed"), rngs)
        self.flat = layers.dense(window * hidden, hidden, ("mlp", "embed"), rngs)
        self.fuse = layers.dense(hidden + style_hidden, hidden, ("mlp", "embed"), rngs)
        self.out = layers.dense(hidden, embed_dim, ("embed", "kv"), rngs)

    def __call__(self, x: jax.Array, style: jax.Array) -> jax.Array:
        n = x.shape[0]
        h = jax.nn.gelu(self.frame(x))  # (N, K, H)
        h = jax.nn.gelu(self.flat(h.reshape(n, -1)))  # (N, H)
        h = jax.nn.gelu(self.fuse(jnp.concatenate([h, style], -1)))
        return self.out(h)


class AudioEncoder(nnx.Module):
    """Audio window (N, K, F) and style features (N, Hs) -> (N, E) (before normalisation).

    Mostly 1-D convolutions, as in the paper: per-frame projection, a 3-tap convolution, the style features
    concatenated with that feature map at every frame, a K-wide VALID convolution (one output that sees the
    whole window), a dense layer.
    """

    def __init__(self, in_dim: int, window: int, hidden: int, style_hidden: int, embed_dim: int, rngs: nnx.Rngs):
        self.frame = layers.dense(in_dim, hidden, ("audio", "embed"), rngs)
        self.local = layers.conv1d(hidden, hidden, min(3, window), rngs)
        self.fuse = layers.conv1d(hidden + style_hidden, hidden, window, rngs, padding="VALID")
        self.out = layers.dense(hidden, embed_dim, ("embed", "kv"), rngs)

    def __call__(self, x: jax.Array, style: jax.Array) -> jax.Array:
        h = jax.nn.gelu(self.frame(x))  # (N, K, H)
        h = jax.nn.gelu(self.local(h))
        s = jnp.broadcast_to(style[:, None, :], h.shape[:2] + style.shape[-1:])
        h = jax.nn.gelu(self.fuse(jnp.concatenate([h, s], -1))[:, 0])  # (N, H)
        return self.out(h)


# ----- The expert -----


class DreamTalkLipExpert(nnx.Module):
    """Style-aware lip-sync expert. K = `window` frames; E = embed_dim; F = audio_dim; D = spec.dim; S = style.

    Callers pass full (D-channel) motion; the expert reads only the spec's `lower` group (the mouth). Part:
    `style_source` (a run with a style encoder, frozen) when conditional; without it the expert builds its style
    encoder from `config.style_encoder` and trains it jointly.
    """

    def __init__(self, config, spec: MotionSpec, rngs: nnx.Rngs, *, style_source: nnx.Module | None = None):
        probs = (config.positive_prob, config.near_shift_prob, config.far_shift_prob)
        if min(probs) < 0 or sum(probs) > 1 + 1e-6:
            raise ValueError(f"positive/near/far shift probabilities must be >= 0 and sum to <= 1, got {probs}")
        similarity = config.get("similarity", "affine")
        if similarity not in SIMILARITIES:
            raise ValueError(f"unknown similarity {similarity!r}; choose one of {SIMILARITIES}")
        # Plain ints, floats, strings and tuples only: module attributes end up in the (hashable) graphdef.
        self.motion_dim, self.spec_name = spec.dim, spec.name
        self.lower = tuple(int(i) for i in spec.group_indices("lower"))
        self.window, self.audio_dim = int(config.window), int(config.audio_dim)
        self.audio_mean, self.audio_std = float(config.get("audio_mean", 0.0)), float(config.get("audio_std", 1.0))
        self.similarity = similarity
        self.category_probs = (*map(float, probs), max(0.0, 1.0 - sum(probs)))
        self.near_shift = tuple(int(v) for v in config.near_shift)
        self.far_shift = tuple(int(v) for v in config.far_shift)
        self.pairs_per_clip = int(config.pairs_per_clip)
        self.conditional = bool(config.get("conditional", True))
        if style_source is not None and not self.conditional:
            raise ValueError(f"an unconditional lip expert (model.conditional=False) takes no style source; unset "
                             f"model.style_encoder_workdir={config.get('style_encoder_workdir')}")

        source, style_dim = style_source, 0
        if style_source is not None:
            style_dim = style_width(style_source, spec.dim)
        elif self.conditional:
            source, style_dim = build_style_encoder(config.style_encoder, spec, rngs)
        self.style_source = source
        self.frozen_parts = ("style_source",) if style_source is not None else ()
        hidden, style_hidden = int(config.hidden), int(config.style_hidden) if self.conditional else 0
        # Separate style projections per branch: each encoder decides what of the style it needs.
        self.motion_style = layers.dense(style_dim, style_hidden, ("embed", "mlp"), rngs) if style_hidden else None
        self.audio_style = layers.dense(style_dim, style_hidden, ("embed", "mlp"), rngs) if style_hidden else None
        self.lip_encoder = LipEncoder(len(self.lower), self.window, hidden, style_hidden, config.embed_dim, rngs)
        self.audio_encoder = AudioEncoder(self.audio_dim, self.window, hidden, style_hidden, config.embed_dim, rngs)

    # ----- Embeddings and probabilities -----

    def style_code(self, reference_motion: jax.Array, reference_mask: jax.Array) -> jax.Array:
        """(B, R, D), (B, R) bool valid frames -> (B, S) style code (no gradient into a frozen source).
        An unconditional expert returns (B, 0)."""
        if not self.conditional:
            return jnp.zeros(reference_motion.shape[:1] + (0,), reference_motion.dtype)
        code = style_code_of(self.style_source, reference_motion, reference_mask.astype(bool))
        return jax.lax.stop_gradient(code) if "style_source" in self.frozen_parts else code

    def _style_features(self, proj: nnx.Linear | None, style_code: jax.Array, lead: tuple[int, ...]) -> jax.Array:
        n = int(np.prod(lead))
        if proj is None:
            return jnp.zeros((n, 0), jnp.float32)
        s = jax.nn.gelu(proj(style_code))  # (B, Hs)
        s = s.reshape(s.shape[:1] + (1,) * (len(lead) - 1) + s.shape[1:])
        return jnp.broadcast_to(s, lead + s.shape[-1:]).reshape(n, -1)

    def _finish(self, h: jax.Array) -> jax.Array:
        return _unit(jax.nn.relu(h) if self.similarity == "relu" else h)

    def embed_motion(self, motion_windows: jax.Array, style_code: jax.Array) -> jax.Array:
        """(B, ..., K, D) full motion windows, (B, S) style codes -> (B, ..., E) unit embeddings of the mouth."""
        if motion_windows.shape[-2:] != (self.window, self.motion_dim):
            raise ValueError(f"expected motion windows (..., {self.window}, {self.motion_dim}) of "
                             f"{self.spec_name!r}, got shape {motion_windows.shape}")
        lead = motion_windows.shape[:-2]
        x = motion_windows[..., np.asarray(self.lower)].reshape((-1, self.window, len(self.lower)))
        h = self.lip_encoder(x, self._style_features(self.motion_style, style_code, lead))
        return self._finish(h).reshape(lead + h.shape[-1:])

    def embed_audio(self, audio_windows: jax.Array, style_code: jax.Array) -> jax.Array:
        """(B, ..., K, F) audio-feature windows, (B, S) style codes -> (B, ..., E) unit embeddings."""
        if audio_windows.shape[-2:] != (self.window, self.audio_dim):
            raise ValueError(f"expected audio windows (..., {self.window}, {self.audio_dim}), got shape "
                             f"{audio_windows.shape}")
        lead = audio_windows.shape[:-2]
        x = ((audio_windows - self.audio_mean) / self.audio_std).reshape((-1,) + audio_windows.shape[-2:])
        h = self.audio_encoder(x, self._style_features(self.audio_style, style_code, lead))
        return self._finish(h).reshape(lead + h.shape[-1:])

    def sync_probability(self, motion_windows: jax.Array, audio_windows: jax.Array,
                         style_code: jax.Array) -> jax.Array:
        """(B, ..., K, D), (B, ..., K, F), (B, S) -> (B, ...) P_sync in [eps, 1 - eps]."""
        cos = jnp.sum(self.embed_motion(motion_windows, style_code) * self.embed_audio(audio_windows, style_code),
                      axis=-1)
        p = cos if self.similarity == "relu" else 0.5 * (cos + 1.0)
        return jnp.clip(p, _P_EPS, 1.0 - _P_EPS)

    # ----- Training -----

    def loss(self, batch: dict[str, jax.Array], rng: jax.Array, train: bool) -> tuple[jax.Array, dict]:
        """BCE on P_sync of random aligned / shifted / other-speaker pairs drawn from the batch with `rng`.

        Reads motion (B, L, D), audio_features (B, L, F), motion_mask (B, L), speaker_index, clip_index (B,),
        and reference_motion (B, R, D) / reference_mask (B, R), the style reference of each window (another
        clip of its speaker, from the pipeline). Every pair is judged with the style of its motion's clip.
        """
        del train  # no dropout: the same objective in training and evaluation
        motion_w, audio_w, labels, category, weight = sync_objective.sample_sync_pairs(
            batch, rng, window=self.window, pairs_per_clip=self.pairs_per_clip,
            category_probs=self.category_probs, near_shift=self.near_shift, far_shift=self.far_shift)
        style = self.style_code(batch["reference_motion"], batch["reference_mask"])
        p = self.sync_probability(motion_w, audio_w, style)  # (B, P)
        bce = -(labels * jnp.log(p) + (1.0 - labels) * jnp.log1p(-p))  # p is clipped away from 0 and 1
        return sync_objective.pair_loss(bce, p, labels, category, weight)


# ----- The generator hook -----


def sync_loss(expert: DreamTalkLipExpert, motion: jax.Array, audio_features: jax.Array, style_code: jax.Array,
              mask: jax.Array | None = None) -> jax.Array:
    """L_sync = -log P_sync, averaged over every fully valid K-frame window. Scalar.

    motion: (B, L, D) generated clean motion (the denoiser's x0 estimate); audio_features: (B, L, F) aligned
    per-frame features (what the expert was trained on); style_code: (B, S) from `expert.style_code(reference
    motion, reference mask)`; mask: (B, L) bool valid frames (None: all). Differentiable w.r.t. `motion`; keep
    the expert frozen on the caller's side (a frozen subtree) and stop gradients into `style_code` if the
    reference should not move.
    """
    if motion.shape[:2] != audio_features.shape[:2]:
        raise ValueError(f"motion {motion.shape} and audio {audio_features.shape} must share (B, L)")
    k = expert.window
    p = expert.sync_probability(sliding_windows(motion, k, axis=1), sliding_windows(audio_features, k, axis=1),
                                style_code)  # (B, N)
    return sync_objective.window_mean(-jnp.log(p), mask, k)


@register("dreamtalk_lip_expert", parts={"style_source": STYLE_SOURCE})
def _create(config, spec: MotionSpec, rngs: nnx.Rngs, **parts: nnx.Module) -> DreamTalkLipExpert:
    return DreamTalkLipExpert(config, spec, rngs, **parts)
