"""MirrorTalk: SDSE style code + hierarchically modulated DiT diffusion over motion, with a motion-expert sync loss.

Stages (mirrortalk_jax/configs/mirrortalk.py):
  0. motion expert  (mirrortalk_jax/configs/motion_expert.py)        lip-sync expert on lower-face motion vs audio;
  1. SDSE           (mirrortalk_jax/configs/style_encoder.py)        style encoder under the frozen expert's supervision;
  2. generator      (mirrortalk_jax/configs/mirrortalk.py)           this model: DiT denoiser, SDSE frozen or fine-tuned,
                                                       the expert frozen as an auxiliary sync loss.
Without `style_encoder_workdir` the SDSE is built from `model.style_encoder` and trained jointly (its own
stage-1 losses added with weight `loss_weights.style`); without `motion_expert_workdir` there is no sync loss.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.models.mirrortalk.dit import DiTDenoiser
from mirrortalk_jax.models.registry import Part, register
from mirrortalk_jax.objectives import diffusion


def temporal_smoothness(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean squared error of frame-to-frame velocities over pairs of valid frames. (B, L, D) -> ()."""
    pair = (mask[:, 1:] & mask[:, :-1]).astype(pred.dtype)[..., None]
    err = jnp.square(jnp.diff(pred, axis=1) - jnp.diff(target, axis=1)) * pair
    return err.sum() / jnp.maximum(pair.sum() * pred.shape[-1], 1.0)


class MirrorTalk(nnx.Module):
    """Parts: `style_encoder`, an SDSE (a stage-1 run, frozen unless `freeze_style_encoder` is False, or built
    from `model.style_encoder` and trained jointly); `motion_expert`, a stage-0 run, frozen (optional)."""

    def __init__(self, config, spec: MotionSpec, rngs: nnx.Rngs, *, style_encoder: nnx.Module,
                 motion_expert: nnx.Module | None = None):
        if not hasattr(style_encoder, "encoder"):
            raise TypeError(f"style_encoder {type(style_encoder).__name__} is not an SDSE (mirrortalk_jax/configs/style_encoder.py)")
        self.spec_dim = spec.dim
        # A stage-1 SDSE (from a run) is not trained on its own losses here; a jointly built one is.
        self.style_from_run = bool(config.get("style_encoder_workdir"))
        self.freeze_style = bool(config.get("freeze_style_encoder", True)) and self.style_from_run
        self.style_encoder = style_encoder
        self.motion_expert = motion_expert
        frozen = {"style_encoder": self.freeze_style, "motion_expert": motion_expert is not None}
        self.frozen_parts = tuple(name for name, is_frozen in frozen.items() if is_frozen)
        style_dim = self.style_encoder.encoder.style_head.out_features
        self.denoiser = DiTDenoiser(spec, audio_dim=config.audio_dim, style_dim=style_dim, hidden=config.hidden,
                                    num_layers=config.num_layers, num_heads=config.num_heads,
                                    mlp_ratio=config.mlp_ratio, audio_radius=config.audio_radius,
                                    gate_prior={k: tuple(v) for k, v in dict(config.gate_prior).items()},
                                    audio_mean=config.get("audio_mean", 0.0), audio_std=config.get("audio_std", 1.0),
                                    hierarchical_modulation=config.get("hierarchical_modulation", True),
                                    scan_layers=config.get("scan_layers", False),
                                    remat=config.get("remat", "none"), rngs=rngs)
        d = config.diffusion
        self.schedule_kind, self.num_train_steps = d.schedule, int(d.num_steps)
        self.prediction, self.weighting = d.prediction, d.weighting
        self.p_drop = (float(config.cfg.p_drop_audio), float(config.cfg.p_drop_style), float(config.cfg.p_drop_both))
        self.weights = tuple(sorted(dict(config.loss_weights).items()))
        self.eval_sampler_steps = int(config.get("eval_sampler_steps", 20))  # sample/mirrortalk.py generate_for_eval

    def schedule(self) -> diffusion.DiffusionSchedule:
        # Concrete arrays even under jit: samplers derive their timestep grids (e.g. log-SNR spacing) from it.
        with jax.ensure_compile_time_eval():
            return diffusion.make_schedule(self.schedule_kind, self.num_train_steps)

    def style_code(self, reference_motion: jax.Array, reference_mask: jax.Array) -> jax.Array:
        """(B, R, D), (B, R) -> (B, S); no gradient into a frozen SDSE."""
        code = self.style_encoder.encoder(reference_motion, reference_mask)
        return jax.lax.stop_gradient(code) if self.freeze_style else code

    def loss(self, batch: dict[str, jax.Array], rng: jax.Array, train: bool) -> tuple[jax.Array, dict[str, Any]]:
        del train
        w = dict(self.weights)
        k_diff, k_drop, k_style = jax.random.split(rng, 3)
        x0, mask, audio = batch["motion"], batch["motion_mask"], batch["audio_features"]
        sched = self.schedule()
        style = self.style_code(batch["reference_motion"], batch["reference_mask"])
        targets = diffusion.diffusion_targets(sched, x0, k_diff, self.prediction)
        drop_audio, drop_style = diffusion.condition_drop_masks(k_drop, x0.shape[0], *self.p_drop)
        pred = self.denoiser(targets.x_t, targets.t, audio, style, drop_audio=drop_audio, drop_style=drop_style,
                             mask=mask)
        weights = diffusion.loss_weight(sched, targets.t, self.prediction, self.weighting)
        denoise = diffusion.diffusion_loss(pred, targets, mask, weights)
        x0_pred = diffusion.predict_x0(sched, targets.x_t, targets.t, pred, self.prediction)
        smooth = temporal_smoothness(x0_pred, x0, mask)
        total = denoise + w.get("smooth", 0.0) * smooth
        metrics = {"denoise": denoise, "smooth": smooth,
                   "x0_mse": jnp.sum(jnp.square(x0_pred - x0) * mask[..., None]) / jnp.maximum(
                       mask.sum() * x0.shape[-1], 1)}
        if self.motion_expert is not None:
            # Only where the audio was given: a denoiser told to ignore audio should not be pushed to sync.
            sync = self.motion_expert.sync_loss(x0_pred, audio, mask & ~drop_audio[:, None])
            total = total + w.get("sync", 0.0) * sync
            metrics["sync"] = sync
        if not self.style_from_run and w.get("style", 0.0) > 0:
            style_loss, style_metrics = self.style_encoder.loss(batch, k_style, True)
            total = total + w["style"] * style_loss
            metrics.update({f"sdse_{k}": v for k, v in style_metrics.items()})
        return total, metrics


@register("mirrortalk", parts={
    "style_encoder": Part("style_encoder_workdir", config_key="style_encoder", drawn_first=True),
    "motion_expert": Part("motion_expert_workdir", drawn_first=True)})
def _create(config, spec: MotionSpec, rngs: nnx.Rngs, **parts: nnx.Module) -> MirrorTalk:
    return MirrorTalk(config, spec, rngs, **parts)
