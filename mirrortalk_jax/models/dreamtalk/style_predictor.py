"""DreamTalk's diffusion style predictor (never released), built here as a trainable model.

DreamTalk needs a reference clip for the speaking style. Its style predictor removes that need: a diffusion
model over the 256-d style code, conditioned on the audio and on the speaker's identity (paper §3.4). Following
the paper:
  - a transformer encoder over [audio tokens, timestep token, speaker token, noisy-code token, learned query];
    the output at the query is the predicted clean code s0 (x0 parametrisation), loss ||s0 - S(s_t, t, A, I)||^2;
  - targets are the codes of the training clip given by a *trained, frozen* style encoder;
  - cross-identity training: the identity comes from another clip of the same speaker, so the identity input
    cannot leak the target clip's expression.
Adapted to what we have:
  - the identity descriptor is the 3D landmark geometry of the first frame of another clip of the speaker
    (`reference_landmarks` from the pipeline), centred and scale-normalised, through an MLP: SynthTalk has no
    portraits with 3DMM identity parameters (records with real 3DMM fits can put their id params there);
  - audio tokens are the per-frame features mean-pooled over `audio_pool` frames;
  - the diffusion objective and samplers are the project's (objectives.diffusion, sample.diffusion); the code is
    a one-frame "sequence" (B, 1, S). Classifier-free guidance maps the samplers' two conditions onto ours:
    "audio" -> the audio tokens, "style" -> the identity token.

Without a reference clip, `sample.dreamtalk_style.generate_without_reference` samples a code and hands it to the
DreamTalk denoiser as its ready style code.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.models.nn import layers
from mirrortalk_jax.models.dreamtalk.lip_expert import STYLE_SOURCE, build_style_encoder, style_code_of, style_width
from mirrortalk_jax.models.registry import register
from mirrortalk_jax.models.mirrortalk.style_encoder import EncoderLayer
from mirrortalk_jax.objectives import diffusion


def identity_descriptor(landmarks: jax.Array) -> jax.Array:
    """(B, K, 3) landmarks of one frame -> (B, 3K): centred on their mean, divided by their RMS radius, so face
    shape is kept and position and scale in the frame are not."""
    centred = landmarks - landmarks.mean(axis=1, keepdims=True)
    radius = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(centred), -1), -1) + 1e-12)[:, None, None]
    return (centred / radius).reshape(landmarks.shape[0], -1)


def pool_frames(x: jax.Array, mask: jax.Array, pool: int) -> tuple[jax.Array, jax.Array]:
    """(B, L, F), (B, L) -> (B, ceil(L / pool), F) means over the valid frames of each group, (B, L') valid."""
    b, length, f = x.shape
    pad = -length % pool
    x = jnp.pad(x, ((0, 0), (0, pad), (0, 0))).reshape(b, -1, pool, f)
    m = jnp.pad(mask.astype(x.dtype), ((0, 0), (0, pad))).reshape(b, -1, pool, 1)
    count = m.sum(2)
    return (x * m).sum(2) / jnp.maximum(count, 1.0), count[..., 0] > 0


class StylePredictorNet(nnx.Module):
    """S(s_t, t, A, I): noisy code (B, S), timesteps (B,), audio (B, L, F) + mask, identity (B, I) -> (B, S)."""

    def __init__(self, *, style_dim: int, audio_dim: int, identity_dim: int, hidden: int, num_layers: int,
                 num_heads: int, mlp_dim: int, max_audio_tokens: int, audio_pool: int, audio_mean: float,
                 audio_std: float, rngs: nnx.Rngs):
        self.audio_pool, self.max_audio_tokens = audio_pool, max_audio_tokens
        self.audio_mean, self.audio_std = audio_mean, audio_std
        self.hidden = hidden
        self.audio_in = layers.dense(audio_dim, hidden, ("audio", "embed"), rngs)
        self.audio_positions = layers.param(rngs, layers.scaled_normal(0.02), (max_audio_tokens, hidden),
                                            ("length", "embed"))
        self.time_in = layers.dense(hidden, hidden, ("mlp", "embed"), rngs)
        self.time_out = layers.dense(hidden, hidden, ("mlp", "embed"), rngs)
        self.identity_in = layers.dense(identity_dim, hidden, ("motion", "embed"), rngs) if identity_dim else None
        self.identity_out = layers.dense(hidden, hidden, ("mlp", "embed"), rngs) if identity_dim else None
        self.null_identity = layers.param(rngs, layers.scaled_normal(0.02), (1, hidden), ("length", "embed"))
        self.code_in = layers.dense(style_dim, hidden, ("kv", "embed"), rngs)
        # Token types (audio, time, identity, code, query): the attention is order-free without them.
        self.types = layers.param(rngs, layers.scaled_normal(0.02), (5, hidden), ("length", "embed"))
        self.query = layers.param(rngs, layers.scaled_normal(0.02), (1, hidden), ("length", "embed"))
        self.layers = nnx.List([EncoderLayer(hidden, num_heads, mlp_dim, rngs) for _ in range(num_layers)])
        self.out_norm = layers.layer_norm(hidden, rngs)
        self.code_out = layers.dense(hidden, style_dim, ("embed", "kv"), rngs)

    def __call__(self, code_t: jax.Array, t: jax.Array, audio: jax.Array, audio_mask: jax.Array,
                 identity: jax.Array | None, drop_audio: jax.Array, drop_identity: jax.Array) -> jax.Array:
        b = code_t.shape[0]
        tokens, valid = pool_frames((audio - self.audio_mean) / self.audio_std, audio_mask, self.audio_pool)
        n = tokens.shape[1]
        if n > self.max_audio_tokens:
            raise ValueError(f"{audio.shape[1]} audio frames make {n} tokens of {self.audio_pool} frames, more than "
                             f"max_audio_tokens={self.max_audio_tokens}; raise it")
        types = self.types[...]
        audio_tok = self.audio_in(tokens) + self.audio_positions[...][None, :n] + types[0]
        valid = valid & ~drop_audio[:, None]  # no audio: its tokens are masked out of every attention
        time_tok = self.time_out(jax.nn.silu(self.time_in(layers.sinusoidal_embedding(t, self.hidden))))
        if self.identity_in is not None:
            id_tok = self.identity_out(jax.nn.gelu(self.identity_in(identity)))
            id_tok = jnp.where(drop_identity[:, None], self.null_identity[...], id_tok)
        else:
            id_tok = jnp.broadcast_to(self.null_identity[...], (b, self.hidden))
        rest = jnp.stack([time_tok + types[1], id_tok + types[2], self.code_in(code_t) + types[3],
                          jnp.broadcast_to(self.query[...][0] + types[4], (b, self.hidden))], axis=1)
        x = jnp.concatenate([audio_tok, rest], axis=1)  # (B, n + 4, H)
        mask = jnp.concatenate([valid, jnp.ones((b, 4), bool)], axis=1)
        for layer in self.layers:
            x = layer(x, mask)
        return self.code_out(self.out_norm(x[:, -1]))


class DreamTalkStylePredictor(nnx.Module):
    """The trainable style predictor: frozen style source (targets) + `StylePredictorNet` + diffusion.

    Part: `style_source`, a run with a style encoder (frozen). Without it a fixed, randomly initialised style
    encoder gives codes that differ by style but were learned by no one: for smoke tests and shape checks only.
    """

    def __init__(self, config, spec: MotionSpec, rngs: nnx.Rngs, *, style_source: nnx.Module | None = None):
        source = style_source
        if source is None:
            source = layers.freeze(build_style_encoder(config.style_encoder, spec, rngs)[0])
        self.style_source = source
        self.frozen_parts = ("style_source",) if style_source is not None else ()
        self.style_dim = style_width(source, spec.dim)
        self.use_identity = bool(config.get("use_identity", True))
        self.num_landmarks = int(config.num_landmarks)
        self.code_mean, self.code_std = float(config.get("code_mean", 0.0)), float(config.get("code_std", 1.0))
        self.net = StylePredictorNet(
            style_dim=self.style_dim, audio_dim=config.audio_dim,
            identity_dim=3 * self.num_landmarks if self.use_identity else 0, hidden=config.hidden,
            num_layers=config.num_layers, num_heads=config.num_heads, mlp_dim=config.mlp_dim,
            max_audio_tokens=config.max_audio_tokens, audio_pool=config.audio_pool,
            audio_mean=float(config.get("audio_mean", 0.0)), audio_std=float(config.get("audio_std", 1.0)),
            rngs=rngs)
        d = config.diffusion
        self.schedule_kind, self.num_train_steps = d.schedule, int(d.num_steps)
        self.prediction, self.weighting = d.prediction, d.weighting
        self.p_drop = (float(config.cfg.p_drop_audio), float(config.cfg.p_drop_identity),
                       float(config.cfg.p_drop_both))

    def schedule(self) -> diffusion.DiffusionSchedule:
        with jax.ensure_compile_time_eval():  # concrete even under jit: samplers derive grids from it
            return diffusion.make_schedule(self.schedule_kind, self.num_train_steps)

    def target_code(self, motion: jax.Array, mask: jax.Array) -> jax.Array:
        """(B, L, D), (B, L) -> (B, S): the frozen style source's code of the clip (no gradient)."""
        return jax.lax.stop_gradient(style_code_of(self.style_source, motion, mask.astype(bool)))

    def identity(self, landmarks: jax.Array | None) -> jax.Array | None:
        if not self.use_identity:
            return None
        if landmarks is None or landmarks.shape[1:] != (self.num_landmarks, 3):
            raise ValueError(f"expected reference_landmarks (B, {self.num_landmarks}, 3) (set "
                             f"data.reference_landmarks=True), got {None if landmarks is None else landmarks.shape}")
        return identity_descriptor(landmarks)

    def loss(self, batch: dict[str, jax.Array], rng: jax.Array, train: bool) -> tuple[jax.Array, dict[str, Any]]:
        """Denoising loss on the codes of the batch windows. Reads motion (B, L, D), motion_mask (B, L),
        audio_features (B, L, F) and reference_landmarks (B, K, 3) (first frame of another clip of the speaker)."""
        del train
        k_diff, k_drop = jax.random.split(rng)
        mask = batch["motion_mask"]
        identity = self.identity(batch.get("reference_landmarks"))
        code = self.target_code(batch["motion"], mask)
        x0 = ((code - self.code_mean) / self.code_std)[:, None, :]  # (B, 1, S): a one-frame sequence
        sched = self.schedule()
        targets = diffusion.diffusion_targets(sched, x0, k_diff, self.prediction)
        drop_audio, drop_identity = diffusion.condition_drop_masks(k_drop, x0.shape[0], *self.p_drop)
        pred = self.net(targets.x_t[:, 0], targets.t, batch["audio_features"], mask, identity, drop_audio,
                        drop_identity)[:, None]
        one = jnp.ones(x0.shape[:2], bool)
        denoise = diffusion.diffusion_loss(pred, targets, one,
                                           diffusion.loss_weight(sched, targets.t, self.prediction, self.weighting))
        x0_pred = diffusion.predict_x0(sched, targets.x_t, targets.t, pred, self.prediction)
        cos = jnp.sum(x0_pred * x0, -1) / (jnp.linalg.norm(x0_pred, axis=-1) * jnp.linalg.norm(x0, axis=-1) + 1e-8)
        metrics = {"denoise": denoise, "x0_mse": jnp.mean(jnp.square(x0_pred - x0)), "x0_cosine": cos.mean(),
                   "target_std": jnp.std(x0, axis=0).mean()}
        return denoise, metrics


@register("dreamtalk_style_predictor", parts={"style_source": STYLE_SOURCE})
def _create(config, spec: MotionSpec, rngs: nnx.Rngs, **parts: nnx.Module) -> DreamTalkStylePredictor:
    return DreamTalkStylePredictor(config, spec, rngs, **parts)
