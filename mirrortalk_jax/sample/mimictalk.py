"""Sampling MimicTalk's in-context audio-to-motion model (models/mimictalk/a2m.py) by integrating its flow.

    out = mimictalk.sample(model, audio, rng=rng, steps=20, prompt_motion=ref)   # {"motion", "x_recon"}, traceable
    motion = mimictalk.generate(model, audio, rng, steps=20, prompt_motion=ref)  # jitted, compiled once
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mirrortalk_jax.models.mimictalk.a2m import MimicTalkA2M, Prepared
from mirrortalk_jax.sample import compiled, ode


def branch_velocity(model: MimicTalkA2M, prep: Prepared, guided: bool) -> ode.BranchVelocity:
    """v(x, t, drop) over the prepared condition, tiled once for the stacked guidance branches."""
    emb, cond, cond_mask, mask = prep.audio_emb, prep.cond, prep.cond_mask, prep.mask
    if guided:
        emb, cond, cond_mask, mask = (jnp.concatenate([a, a]) for a in (emb, cond, cond_mask, mask))
    return lambda x, t, drop: model.velocity(x, t, emb, cond, cond_mask, mask, drop)


def sample(model: MimicTalkA2M, audio: jax.Array, *, rng: jax.Array | None = None, x0: jax.Array | None = None,
           steps: int = 20, guidance_scale: float = 1.0, temperature: float = 1.0, method: str = "midpoint",
           return_trajectory: bool = False, **context) -> dict[str, jax.Array]:
    """Motion for audio (B, Ta, F) after an optional prompt (see `MimicTalkA2M.prepare` for `context`).

    The original's `forward(train=False)`: y0 = N(0, I) * temperature (or the given `x0`, already scaled),
    `steps` grid points torch.linspace(0, 1, steps), guidance `guidance_scale` on the prompt, output masked
    by the valid frames. Returns {"motion": (B, N - Tc, M) generated frames, "x_recon": (B, N, M)} plus
    "trajectory" (steps, B, N, M) and "call_times" with `return_trajectory`. Jit with static settings.
    """
    prep = model.prepare(audio, **context)
    out: dict[str, jax.Array] = {}
    if model.mode == "icl_transformer":  # a one-shot regressor: t = 0, input = the (zeroed) prompt
        y = model.velocity(prep.cond, 0.0, prep.audio_emb, prep.cond, prep.cond_mask, prep.mask)
    else:
        if x0 is None:
            x0 = jax.random.normal(rng, prep.cond.shape) * float(temperature)
        fn = ode.guided(branch_velocity(model, prep, float(guidance_scale) != 1.0), guidance_scale)
        y = ode.integrate(fn, x0, ode.time_grid(steps), method, return_trajectory=return_trajectory)
        if return_trajectory:
            y, states, times = y
            out.update(trajectory=states.at[-1].multiply(prep.mask[..., None]), call_times=times)
    x_recon = y * prep.mask[..., None]
    return {**out, "x_recon": x_recon, "motion": x_recon[:, prep.num_prompt:]}


def generate_for_eval(model: MimicTalkA2M, batch: dict[str, jax.Array], rng: jax.Array) -> jax.Array:
    """Held-out windows for the trainer's evaluation: the speaker's reference clip as a motion-only prompt
    (its audio unknown to the batch: a constant at the feature mean, i.e. 0 after standardisation)."""
    ref = batch["reference_motion"]
    prompt_audio = jnp.full((ref.shape[0], ref.shape[1] * model.audio_rate, batch["audio_features"].shape[-1]),
                            model.audio_mean, jnp.float32)
    return sample(model, batch["audio_features"], rng=rng, prompt_motion=ref, prompt_audio=prompt_audio,
                  prompt_mask=batch["reference_mask"], frame_mask=batch["motion_mask"],
                  **dict(model.eval_sampling))["motion"]


def _motion(model: MimicTalkA2M, audio: jax.Array, context: dict[str, jax.Array], rng: jax.Array,
            **settings) -> jax.Array:
    return sample(model, audio, rng=rng, **context, **settings)["motion"]


def generate(model: MimicTalkA2M, audio: jax.Array, rng: jax.Array, **kwargs) -> jax.Array:
    """Jitted `sample(model, ...)["motion"]`: array kwargs are the context (prompt_motion, prompt_audio, f0, ...),
    the others static settings (steps, guidance_scale, temperature, method), compiled once per combination."""
    context = {k: v for k, v in kwargs.items() if isinstance(v, jax.Array | np.ndarray)}
    settings = {k: v for k, v in kwargs.items() if k not in context}
    return compiled.bind(_motion, model, **settings)(audio, context, rng)
