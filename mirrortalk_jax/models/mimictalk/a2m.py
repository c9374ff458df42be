"""MimicTalk ICS-A2M: in-context stylized audio-to-motion by conditional flow matching (NeurIPS 2024).

An exact port of `modules/audio2motion/cfm/` of yerfor/MimicTalk (`InContextAudio2MotionModel`, mode
`icl_flow_matching`), plus the training task the original never released (mirrortalk_jax/configs/mimictalk_a2m.py):

  audio (B, Ta, F) at r x the motion rate --conv-BN-GELU-conv--> features [| pitch | blink | mouth-amp]
      --> models/mimictalk/icl_transformer.py: velocity v(x_t, t | audio, prompt) (B, T, M), T = Ta // r

The in-context prompt is a clip of the target speaker (motion + its audio) prepended in time; the model
predicts the frames after it, which is how it picks up a speaking style without fine-tuning. Sampling
(sample/mimictalk.py) integrates the velocity from temperature-scaled noise on a fixed grid (midpoint by default),
with classifier-free guidance on the prompt. Training is audio-guided motion infilling: a random 60-100 % of
each clip is predicted from the rest (objectives/infill_masks.py) with the flow-matching loss
(objectives/flow_matching.py), prompt dropout for guidance, and an optional lip-sync loss of a frozen motion
expert on the one-step estimate x1_hat = x_t + (1 - t) v.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.models.mimictalk.icl_transformer import InContextTransformer
from mirrortalk_jax.models.nn.layers import fan_in_normal, param, scaled_normal
from mirrortalk_jax.models.registry import Part, register
from mirrortalk_jax.objectives import flow_matching, infill_masks

_init = nnx.with_partitioning


class ConvBNEncoder(nnx.Module):
    """Conv1d(k3, no bias) -> BatchNorm -> GELU -> Conv1d(k3, no bias) over (B, T, C): the original's
    `hubert_encoder` / `pitch_encoder`. BatchNorm uses batch statistics in training, running ones otherwise."""

    def __init__(self, in_dim: int, width: int, axes: tuple[str | None, str | None], rngs: nnx.Rngs):
        conv = {"kernel_size": (3,), "padding": ((1, 1),), "use_bias": False, "rngs": rngs}
        self.conv_in = nnx.Conv(in_dim, width, kernel_init=_init(fan_in_normal((0, 1)), ("conv", *axes)), **conv)
        self.norm = nnx.BatchNorm(width, momentum=0.9, epsilon=1e-5, rngs=rngs,
                                  scale_init=_init(nnx.initializers.ones, (axes[1],)),
                                  bias_init=_init(nnx.initializers.zeros, (axes[1],)))
        self.conv_out = nnx.Conv(width, width, kernel_init=_init(fan_in_normal((0, 1)), ("conv", None, axes[1])),
                                 **conv)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        h = self.norm(self.conv_in(x), use_running_average=not train)
        return self.conv_out(jax.nn.gelu(h, approximate=False))



def f0_to_coarse(f0: jax.Array) -> jax.Array:
    """The original's pitch quantisation (utils/commons/pitch_utils.py): f0 (Hz, 0 = unvoiced) -> 1..255 int32."""
    mel_min, mel_max = 1127 * np.log(1 + 50.0 / 700), 1127 * np.log(1 + 1100.0 / 700)
    mel = 1127 * jnp.log(1 + f0.astype(jnp.float32) / 700)
    mel = jnp.where(mel > 0, (mel - np.float32(mel_min)) * 254 / np.float32(mel_max - mel_min) + 1, mel)
    mel = jnp.clip(jnp.where(mel <= 1, 1.0, mel), None, 255.0)
    return (mel + 0.5).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Everything of one sampling call that does not depend on the flow time (computed once per call)."""

    features: jax.Array  # (B, Ta, dim_audio_in) encoded audio of prompt + target (the original's cond_audio)
    audio_emb: jax.Array  # (B, N, M) the same at the motion rate
    cond: jax.Array  # (B, N, M) prompt motion on its frames, 0 elsewhere
    cond_mask: jax.Array  # (B, N) bool, True = frame to generate
    mask: jax.Array  # (B, N) bool, valid frames
    num_prompt: int  # Tc, prompt frames at the start


class MimicTalkA2M(nnx.Module):
    """Audio encoder (+ optional pitch/blink/mouth-amp features) and the in-context flow transformer."""

    def __init__(self, config, spec: MotionSpec | None, rngs: nnx.Rngs, *, motion_expert: nnx.Module | None = None):
        motion_dim = int(config.get("motion_dim", 0) or 0) or (spec.dim if spec is not None else 0)
        if not motion_dim or (spec is not None and spec.dim != motion_dim):
            raise ValueError(f"model.motion_dim={config.get('motion_dim')} does not fit the motion space "
                             f"{None if spec is None else (spec.name, spec.dim)}")
        self.motion_dim, self.audio_rate = motion_dim, int(config.audio_rate)
        self.mode = str(config.get("mode", "icl_flow_matching"))
        if self.mode not in ("icl_flow_matching", "icl_transformer"):
            raise ValueError(f"model.mode must be icl_flow_matching or icl_transformer, got {self.mode!r}")
        self.audio_mean, self.audio_std = float(config.get("audio_mean", 0.0)), float(config.get("audio_std", 1.0))
        width, self.use_aux = int(config.audio_width), bool(config.use_aux_features)
        self.audio_encoder = ConvBNEncoder(int(config.audio_in_dim), width, ("audio", "embed"), rngs)
        dim_audio_in = width
        if self.use_aux:
            a = int(config.aux_dim)
            self.pitch_embed = param(rngs, scaled_normal(1.0), (int(config.pitch_bins), a), (None, None))
            self.pitch_encoder = ConvBNEncoder(a, a, (None, None), rngs)
            self.blink_embed = param(rngs, scaled_normal(1.0), (2, a), (None, None))
            self.null_blink_embed = param(rngs, scaled_normal(1.0), (a,), (None,))
            self.mouth_amp_embed = param(rngs, scaled_normal(1.0), (a,), (None,))
            self.null_mouth_amp_embed = param(rngs, scaled_normal(1.0), (a,), (None,))
            dim_audio_in += 3 * a
        self.velocity = InContextTransformer(
            dim_in=motion_dim, dim_audio_in=dim_audio_in, dim=int(config.dim), depth=int(config.depth),
            heads=int(config.heads), dim_head=int(config.dim_head), ff_mult=float(config.ff_mult),
            time_hidden_dim=int(config.get("time_hidden_dim", 0) or 0) or None,
            conv_kernel=int(config.conv_kernel), num_registers=int(config.num_registers),
            register_position=int(config.register_position), rope_theta=float(config.rope_theta),
            logit_scale=float(config.logit_scale), query_chunk=int(config.get("attention_query_chunk", 128)),
            rngs=rngs)
        # Training task (not part of the original's released code).
        t = config.get("task") or {}
        self.frac_range = tuple(float(f) for f in t.get("frac_lengths_mask", (0.6, 1.0)))
        self.sigma_min = float(t.get("sigma_min", 0.0))
        self.p_drop_prompt, self.p_null_aux = float(t.get("p_drop_prompt", 0.0)), float(t.get("p_null_aux", 0.5))
        self.sync_weight, self.sync_min_t = float(t.get("sync_weight", 0.0)), float(t.get("sync_min_t", 0.0))
        self.eval_sampling = tuple(sorted(dict(config.get("eval_sampling") or {}).items()))
        # Part: a motion expert run (frozen) whose sync loss on the one-step estimate is added with sync_weight.
        self.motion_expert = nnx.data(motion_expert)
        self.frozen_parts = ("motion_expert",) if motion_expert is not None else ()

    # ----- The original's forward pieces -----

    def encode_audio(self, audio: jax.Array, *, f0: jax.Array | None = None, blink: jax.Array | None = None,
                     mouth_amp: jax.Array | None = None, null_aux: jax.Array | None = None,
                     train: bool = False) -> jax.Array:
        """Audio features (B, Ta, F) [+ f0 (B, Ta) Hz, blink (B, Ta) 0/1, mouth_amp (B, 1)] -> (B, Ta, dim_audio_in).

        Aux defaults follow the original: f0 = 0 (unvoiced), blink = 0, mouth_amp = 1. `null_aux` (B,) bool
        swaps blink and mouth-amp for their learned null vectors (the original's training-time dropout).
        """
        x = audio if (self.audio_mean, self.audio_std) == (0.0, 1.0) else (audio - self.audio_mean) / self.audio_std
        feats = self.audio_encoder(x, train)
        if not self.use_aux:
            return feats
        b, ta, _ = audio.shape
        f0 = jnp.zeros((b, ta), audio.dtype) if f0 is None else f0
        blink = jnp.zeros((b, ta), jnp.int32) if blink is None else blink.reshape(b, ta).astype(jnp.int32)
        mouth_amp = jnp.ones((b, 1), audio.dtype) if mouth_amp is None else mouth_amp.reshape(b, 1)
        pitch = self.pitch_encoder(jnp.take(self.pitch_embed[...], f0_to_coarse(f0), axis=0), train)
        blink_feat = jnp.take(self.blink_embed[...], blink, axis=0)
        mouth_feat = jnp.broadcast_to(mouth_amp[:, :, None] * self.mouth_amp_embed[...], blink_feat.shape)
        if null_aux is not None:
            blink_feat = jnp.where(null_aux[:, None, None], self.null_blink_embed[...], blink_feat)
            mouth_feat = jnp.where(null_aux[:, None, None], self.null_mouth_amp_embed[...], mouth_feat)
        return jnp.concatenate([feats, pitch, blink_feat, mouth_feat], axis=-1)

    def forward(self, x: jax.Array, times: jax.Array, cond_audio: jax.Array, cond: jax.Array,
                cond_mask: jax.Array | None = None, self_attn_mask: jax.Array | None = None,
                drop_prompt: jax.Array | None = None) -> jax.Array:
        """The original's `icl(x, times, cond_audio, cond, cond_mask, self_attn_mask)` on encoded features."""
        emb = self.velocity.embed_audio(cond_audio, x.shape[1])
        return self.velocity(x, times, emb, cond, cond_mask, self_attn_mask, drop_prompt)

    # ----- Training: audio-guided motion infilling -----

    def loss(self, batch: dict[str, jax.Array], rng: jax.Array, train: bool) -> tuple[jax.Array, dict[str, Any]]:
        x1, valid, audio = batch["motion"], batch["motion_mask"].astype(bool), batch["audio_features"]
        b = x1.shape[0]
        k_mask, k_flow, k_drop, k_aux = jax.random.split(rng, 4)
        cond_mask, mode = infill_masks.infill_mask(k_mask, valid, self.frac_range, return_mode=True)
        targets = flow_matching.flow_targets(x1, k_flow, self.sigma_min)
        drop = jax.random.bernoulli(k_drop, self.p_drop_prompt, (b,)) if train else None
        null_aux = jax.random.bernoulli(k_aux, self.p_null_aux, (b,)) if (train and self.use_aux) else None
        feats = self.encode_audio(audio, f0=batch.get("f0"), blink=batch.get("blink"), null_aux=null_aux,
                                  train=train)
        v = self.forward(targets.x_t, targets.t, feats, x1, cond_mask, valid, drop)
        loss_mask = cond_mask & valid
        flow = flow_matching.flow_loss(v, targets.target, loss_mask)
        x1_hat = jnp.where(cond_mask[..., None], flow_matching.predict_x1(targets.x_t, targets.t, v, self.sigma_min),
                           x1)
        m = loss_mask.astype(jnp.float32)
        metrics = {"flow": flow, "masked_fraction": m.sum() / jnp.maximum(valid.sum(), 1),
                   "span_mode": (mode == infill_masks.SPAN).astype(jnp.float32),
                   "x1_mse": (jnp.square(x1_hat - x1).mean(-1) * m).sum() / jnp.maximum(m.sum(), 1.0)}
        total = flow
        if self.motion_expert is not None:
            sync_mask = valid & (targets.t >= self.sync_min_t)[:, None]
            sync = self.motion_expert.sync_loss(x1_hat, audio, sync_mask)
            total = total + self.sync_weight * sync
            metrics["sync"] = sync
        return total, metrics

    # ----- Sampling -----

    def prepare(self, audio: jax.Array, *, prompt_motion: jax.Array | None = None,
                prompt_audio: jax.Array | None = None, prompt_mask: jax.Array | None = None,
                frame_mask: jax.Array | None = None, f0: jax.Array | None = None, prompt_f0: jax.Array | None = None,
                blink: jax.Array | None = None, mouth_amp: jax.Array | None = None) -> Prepared:
        """The original's `add_sample_to_context` + the first half of `forward(train=False)`.

        The prompt clip is prepended in time: audio [prompt_audio; audio] (prompt audio defaults to zeros, as the
        original's motion-only context), f0 [prompt_f0; f0], blink [0; blink]; N = total audio frames // r motion
        frames of which the first Tc = prompt frames hold the prompt motion. prompt_mask (B, Tc) and frame_mask
        (B, N - Tc) mark valid frames (default: all).
        """
        b = audio.shape[0]
        tc = 0 if prompt_motion is None else prompt_motion.shape[1]
        if tc:
            prompt_audio = (jnp.zeros((b, tc * self.audio_rate, audio.shape[-1]), audio.dtype)
                            if prompt_audio is None else prompt_audio)
            audio = jnp.concatenate([prompt_audio, audio], axis=1)
            if self.use_aux:
                pa, ta = prompt_audio.shape[1], audio.shape[1]
                prompt_f0 = jnp.zeros((b, pa), audio.dtype) if prompt_f0 is None else prompt_f0.reshape(b, pa)
                f0 = jnp.zeros((b, ta - pa), audio.dtype) if f0 is None else f0.reshape(b, ta - pa)
                f0 = jnp.concatenate([prompt_f0, f0], axis=1)
                if blink is not None:
                    blink = jnp.concatenate([jnp.zeros((b, pa), jnp.int32), blink.reshape(b, -1).astype(jnp.int32)], 1)
        n = audio.shape[1] // self.audio_rate
        if tc > n:
            raise ValueError(f"prompt of {tc} frames is longer than prompt + target ({n} frames)")
        features = self.encode_audio(audio, f0=f0, blink=blink, mouth_amp=mouth_amp)
        cond = jnp.zeros((b, n, self.motion_dim), audio.dtype)
        if tc:
            cond = cond.at[:, :tc].set(prompt_motion.astype(audio.dtype))
        cond_mask = jnp.broadcast_to(jnp.arange(n) >= tc, (b, n))
        mask = jnp.ones((b, n), bool)
        if prompt_mask is not None:
            mask = mask.at[:, :tc].set(prompt_mask.astype(bool))
        if frame_mask is not None:
            mask = mask.at[:, tc:].set(frame_mask.astype(bool))
        return Prepared(features, self.velocity.embed_audio(features, n), cond, cond_mask, mask, tc)


@register("mimictalk_a2m", parts={"motion_expert": Part("motion_expert_workdir")})
def _create(config, spec: MotionSpec | None, rngs: nnx.Rngs, **parts: nnx.Module) -> MimicTalkA2M:
    return MimicTalkA2M(config, spec, rngs, **parts)
