"""The sampler the trainer's periodic evaluation runs, for each registry model that generates motion.

    sampler = for_eval.eval_sampler(config.model.name)   # (model, batch, rng) -> (B, L, D) motion, or None
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx

from mirrortalk_jax.sample import dreamtalk, mimictalk, mirrortalk

EvalSampler = Callable[[nnx.Module, dict[str, jax.Array], jax.Array], jax.Array]

EVAL_SAMPLERS: dict[str, EvalSampler] = {
    "mirrortalk": mirrortalk.generate_for_eval,
    "dreamtalk": dreamtalk.generate_for_eval,
    "mimictalk_a2m": mimictalk.generate_for_eval,
}


def eval_sampler(model_name: str) -> EvalSampler | None:
    """Motion for the held-out windows of a batch (traceable, run inside the trainer's jitted step); None for
    models that do not generate motion (experts, style encoders, baselines)."""
    return EVAL_SAMPLERS.get(model_name)
