"""Sampling a MirrorTalk generator (models/mirrortalk/generator.py): one shot, long audio, the trainer's preview.

    motion = mirrortalk.sample(model, audio, style, rng, num_steps=20)            # (B, L, D), traceable
    motion = mirrortalk.generate(model, audio, ref, ref_mask, rng, num_steps=20)  # any length, compiled once
"""

from __future__ import annotations

import jax
from flax import nnx

from mirrortalk_jax.models.mirrortalk.generator import MirrorTalk
from mirrortalk_jax.sample import compiled
from mirrortalk_jax.sample import diffusion as samplers


def denoise_fn(model: MirrorTalk, gate_override: jax.Array | None = None) -> samplers.Denoiser:
    """The samplers' denoiser convention over cond = {"audio": (N, L, F), "style": (N, S)}."""
    def denoise(x_t, t, cond, drop_audio, drop_style):
        return model.denoiser(x_t, t, cond["audio"], cond["style"], drop_audio=drop_audio, drop_style=drop_style,
                              gate_override=gate_override)
    return denoise


def sample(model: MirrorTalk, audio_features: jax.Array, style: jax.Array, rng: jax.Array, *,
           sampler: str = "ddim", num_steps: int = 20, guidance: samplers.Guidance = samplers.NO_GUIDANCE,
           known: jax.Array | None = None, known_mask: jax.Array | None = None,
           gate_override: jax.Array | None = None, **sampler_kwargs) -> jax.Array:
    """Motion (B, L, D) for audio (B, L, F) and style codes (B, S) in one shot (see `generate` for long audio)."""
    if sampler not in samplers.SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {sorted(samplers.SAMPLERS)}")
    b, length, _ = audio_features.shape
    return samplers.SAMPLERS[sampler](
        denoise_fn(model, gate_override), model.schedule(), (b, length, model.spec_dim), rng,
        num_steps=num_steps, cond={"audio": audio_features, "style": style}, guidance=guidance, known=known,
        known_mask=known_mask, prediction=model.prediction, **sampler_kwargs)


def generate_for_eval(model: MirrorTalk, batch: dict[str, jax.Array], rng: jax.Array) -> jax.Array:
    """What the trainer's periodic evaluation samples: motion for held-out windows, DDIM, no guidance."""
    style = model.style_code(batch["reference_motion"], batch["reference_mask"])
    return sample(model, batch["audio_features"], style, rng, num_steps=model.eval_sampler_steps)


def _style_code(model: MirrorTalk, reference_motion: jax.Array, reference_mask: jax.Array) -> jax.Array:
    return model.style_code(reference_motion, reference_mask)


def _sample_chunk(model: MirrorTalk, style, cond, known, known_mask, key, **sample_kwargs) -> jax.Array:
    return sample(model, cond["audio"], style, key, known=known, known_mask=known_mask, **sample_kwargs)


def generate(model: MirrorTalk, audio_features: jax.Array, reference_motion: jax.Array, reference_mask: jax.Array,
             rng: jax.Array, *, chunk_frames: int = 64, overlap_frames: int = 8, **sample_kwargs) -> jax.Array:
    """Motion (B, T, D) for audio of any length T, in memory independent of T.

    The style code is computed once; the audio is cut into chunks of `chunk_frames` sampled by one compiled
    function (compiled once per model structure and sampler settings, reused across calls), each chunk
    continuing the previous one through `overlap_frames` inpainted frames. `sample_kwargs` go to `sample`
    (sampler, num_steps, guidance, ...) and must be hashable.
    """
    graphdef, state = nnx.split(model)
    style = compiled.jitted(_style_code, graphdef)(state, reference_motion, reference_mask)
    sample_with = compiled.jitted(_sample_chunk, graphdef, **sample_kwargs)

    def sample_chunk(cond, known, known_mask, key):
        return sample_with(state, style, cond, known, known_mask, key)

    return samplers.sample_long(sample_chunk, {"audio": audio_features}, audio_features.shape[1], chunk_frames,
                                overlap_frames, rng, motion_dim=model.spec_dim)
