"""DreamTalk (arXiv 2312.09767) as a registry model: the exact denoiser port and its x0 diffusion loss.

The network itself is `dreamtalk_net.DreamTalkDenoiser` (attribute `net`, so converted checkpoints of the
released `diff_net.net.*` weights land under `net/`). This wrapper adds what the trainer and the samplers need:

  loss(batch, rng, train)   x0-prediction diffusion loss ||x0 - net(x_t, t, audio windows, style clip)||^2 over
                            valid frames and channels, t ~ U{1..T} on the original schedule (objectives/dreamtalk.py);
                            the style clip is the batch's style reference, replaced by the null clip with probability
                            `cf_guidance.null_prob` (classifier-free guidance training, as the original's config).
                            Dropout (config `dropout`, 0.1 in the original) is active when `train`.
                            With a lip expert run (`lip_expert_workdir`, mirrortalk_jax/configs/dreamtalk_lip_expert.py) the
                            paper's L_sync = -log P_sync of the frozen style-aware expert on the x0 estimate is
                            added with `sync_weight`, for clips with t <= `sync_max_t` and their own style clip.
Sampling (DDIM / DDPM with guidance, and the trainer's periodic evaluation samples) is sample/dreamtalk.py.

Audio: `batch["audio_features"]` is (B, L, stride * F) per video frame: the frame's `audio_stride` feature
rows of width F (`audio_dim`) concatenated in time order (our log-mel frontend: stride 1, F = 4 x 80; the
released model: stride 2 wav2vec2 rows of 1024 at 50 Hz). Frame i's window holds rows stride * i - win ..
stride * i + win (zeros outside the training window, as outside the clip in the original). Rows are first
standardised with the fixed `audio_mean` / `audio_std` (0 / 1 for the released model: an identity), so the zero
padding means "average sound" rather than a loud log-mel value. Training windows are cropped clips, so their
edge frames see zero rows where the full clip has sound: a small train / test difference at crop edges only.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mirrortalk_jax.data.windows import centred_windows
from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.models.dreamtalk import lip_expert as lip
from mirrortalk_jax.models.dreamtalk import net as dreamtalk_net
from mirrortalk_jax.models.dreamtalk.net import DreamTalkDenoiser, dims_from_config
from mirrortalk_jax.models.registry import Part, register
from mirrortalk_jax.objectives import dreamtalk as objective


class DreamTalk(nnx.Module):
    """Part: `lip_expert`, a style-aware lip expert run (frozen), whose sync loss on the x0 estimate is added with
    `sync_weight` (not part of the exact port: the network stays untouched)."""

    def __init__(self, config, spec: MotionSpec | None, rngs: nnx.Rngs, *, lip_expert: nnx.Module | None = None):
        self.dims = dims_from_config(config, spec)
        self.net = DreamTalkDenoiser(self.dims, rngs)
        self.win_size, self.audio_stride = int(config.win_size), int(config.get("audio_stride", 1))
        self.audio_mean, self.audio_std = float(config.get("audio_mean", 0.0)), float(config.get("audio_std", 1.0))
        d = config.diffusion
        self.schedule_args = (int(d.num_steps), float(d.beta_1), float(d.beta_T))
        self.null_prob = float(config.cf_guidance.null_prob)
        self.guidance_scale = config.cf_guidance.get("scale", 1.0)
        self.ddim_steps = int(config.get("sampler", {}).get("ddim_steps", 10))
        self.sync_weight, self.sync_max_t = float(config.get("sync_weight", 0.0)), int(config.get("sync_max_t", 0))
        if lip_expert is not None:
            _check_lip_expert(lip_expert, config.get("lip_expert_workdir"), self.audio_stride * self.dims.audio_dim)
        self.lip_expert = nnx.data(lip_expert)
        self.frozen_parts = ("lip_expert",) if lip_expert is not None else ()

    @property
    def style_max_len(self) -> int:
        return self.dims.style_max_len

    def schedule(self) -> objective.VarianceSchedule:
        return objective.variance_schedule(*self.schedule_args)

    # ----- Inputs -----

    def audio_windows(self, features: jax.Array) -> jax.Array:
        """Per-frame features (B, L, stride * F) (the frame's `stride` rows concatenated in time order, as our
        pipeline stores them) -> standardised windows (B, L, W, F)."""
        b, length, _ = features.shape
        rows = self.standardised_rows(features.reshape(b, length * self.audio_stride, -1))
        return centred_windows(rows, self.win_size, stride=self.audio_stride, num_frames=length, axis=1)

    def standardised_rows(self, rows: jax.Array) -> jax.Array:
        """Audio feature rows (B, N, F) standardised with the config's fixed mean and std."""
        return (rows - self.audio_mean) / self.audio_std

    def style_code(self, reference_motion: jax.Array, reference_mask: jax.Array) -> jax.Array:
        """(B, R, M) reference + (B, R) valid mask -> (B, D) style code (the interface other models read)."""
        return self.net.style_encoder(*self.style_inputs(reference_motion, reference_mask.astype(bool)))

    def style_inputs(self, reference_motion: jax.Array, reference_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Our batches' reference (B, R, M) + valid mask (B, R) -> the original's clip (B, STYLE_MAX_LEN, M) and
        pad mask (True = padded), zero-padded like `get_video_style_clip`."""
        r, n = reference_motion.shape[1], self.style_max_len
        if r > n:
            raise ValueError(f"style reference of {r} frames is longer than style_max_len={n} (the style encoder's "
                             "positional table); shorten data.reference_frames or raise style_encoder.pos_embed_len")
        clip = jnp.pad(reference_motion * reference_mask[..., None], ((0, 0), (0, n - r), (0, 0)))
        pad_mask = jnp.pad(~reference_mask.astype(bool), ((0, 0), (0, n - r)), constant_values=True)
        return clip, pad_mask

    # ----- What the trainer reads -----

    def loss(self, batch: dict[str, jax.Array], rng: jax.Array, train: bool) -> tuple[jax.Array, dict[str, Any]]:
        k_t, k_noise, k_null, k_drop = jax.random.split(rng, 4)
        x0, mask = batch["motion"], batch["motion_mask"]
        b = x0.shape[0]
        x_t, t = objective.noisy_sample(self.schedule(), x0, k_t, k_noise)
        clip, pad_mask = self.style_inputs(batch["reference_motion"], batch["reference_mask"])
        # Condition dropout in training only: evaluation measures the conditional denoiser.
        null = jax.random.bernoulli(k_null, self.null_prob if train else 0.0, (b,))
        clip = jnp.where(null[:, None, None], 0.0, clip)  # null_style_clip: zeros, nothing masked
        pad_mask = jnp.where(null[:, None], False, pad_mask)
        pred = self.net(x_t, t.astype(jnp.float32), self.audio_windows(batch["audio_features"]), clip, pad_mask,
                        rng=k_drop if train else None)
        loss = objective.x0_loss(pred, x0, mask)
        metrics = {"denoise": loss, "null_style_fraction": null.mean()}
        if self.lip_expert is None:
            return loss, metrics
        sync, judged = self.sync_loss(pred, t, null, batch)
        metrics.update(sync=sync, sync_fraction=judged.mean(dtype=jnp.float32))
        return loss + self.sync_weight * sync, metrics

    def sync_loss(self, pred_x0: jax.Array, t: jax.Array, null: jax.Array,
                  batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """The frozen lip expert's -log P_sync over the valid frames of the x0 estimates (B, L, M) it judges:
        t (B,) <= sync_max_t, and a real style clip (null (B,) False). Returns (scalar, (B,) bool judged).

        Above sync_max_t, x_t holds little of the mouth and the MSE-optimal estimate is the smooth conditional
        mean, where a sync loss would only fight the denoising loss. Null-style clips are left out because the
        expert judges lips against the reference's style, which the unconditional branch must not learn.
        """
        judged = (t <= self.sync_max_t) & ~null
        mask = batch["motion_mask"].astype(bool) & judged[:, None]
        # The expert's style encoder is frozen: cutting the gradient here saves its backward pass.
        style = jax.lax.stop_gradient(self.lip_expert.style_code(batch["reference_motion"], batch["reference_mask"]))
        return lip.sync_loss(self.lip_expert, pred_x0, batch["audio_features"], style, mask), judged


class StyleEncoder(dreamtalk_net.StyleEncoder):
    """DreamTalk's style encoder on its own, for other models (e.g. the lip expert's conditional encoders), in
    this project's mask convention: `encoder(motion (B, R, M), mask (B, R) True = valid) -> (B, hidden)`."""

    def __init__(self, motion_dim: int, hidden: int, num_heads: int, mlp_dim: int, num_layers: int, max_frames: int,
                 *, rngs: nnx.Rngs, dropout: float = 0.0):
        super().__init__(motion_dim, hidden, dreamtalk_net.StackDims(num_heads, num_layers, mlp_dim, max_frames),
                         rngs, dropout_rate=dropout)

    def __call__(self, motion: jax.Array, mask: jax.Array | None = None, rng: jax.Array | None = None) -> jax.Array:
        return super().__call__(motion, None if mask is None else ~mask.astype(bool), rng)


def _check_lip_expert(expert: nnx.Module, run: str | None, audio_width: int) -> None:
    """The lip expert must be one, judging the same per-frame audio features (B, L, audio_width) that the
    denoiser's batches carry."""
    if not isinstance(expert, lip.DreamTalkLipExpert):
        raise TypeError(f"model.lip_expert_workdir={run} trained a {type(expert).__name__}, not a "
                        "mirrortalk_jax/configs/dreamtalk_lip_expert.py lip expert")
    if expert.audio_dim != audio_width:
        raise ValueError(f"model.lip_expert_workdir={run}: the lip expert reads {expert.audio_dim}-d audio "
                         f"features per frame (its mirrortalk_jax/configs/dreamtalk_lip_expert.py model.audio_dim), but this "
                         f"denoiser's batches carry {audio_width} (mirrortalk_jax/configs/dreamtalk.py model.audio_stride x "
                         "model.audio_dim); train the expert on the same audio features")


@register("dreamtalk", parts={"lip_expert": Part("lip_expert_workdir")})
def _create(config, spec: MotionSpec | None, rngs: nnx.Rngs, **parts: nnx.Module) -> DreamTalk:
    return DreamTalk(config, spec, rngs, **parts)
