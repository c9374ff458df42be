"""Model factories by name, so a config picks the model without the trainer importing it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

import jax
from flax import nnx

from mirrortalk_jax.data.motion_spec import MotionSpec


class TrainableModel(Protocol):
    """What the trainer needs from a model."""

    def loss(self, batch: dict[str, jax.Array], rng: jax.Array, train: bool) -> tuple[jax.Array, dict[str, Any]]:
        """Scalar loss and a dict of scalar metrics for a global batch."""


Factory = Callable[[Any, MotionSpec, nnx.Rngs], nnx.Module]
_FACTORIES: dict[str, Factory] = {}
# Model name -> module that registers it; only the module of the requested model is imported.
_MODULES = {
    "audio_regression": "mirrortalk_jax.models.baselines.regression",
    "motion_expert": "mirrortalk_jax.models.mirrortalk.motion_expert",
    "style_encoder": "mirrortalk_jax.models.mirrortalk.style_encoder",
    "mirrortalk": "mirrortalk_jax.models.mirrortalk.generator",
    "dreamtalk": "mirrortalk_jax.models.dreamtalk.denoiser",
    "dreamtalk_lip_expert": "mirrortalk_jax.models.dreamtalk.lip_expert",
    "dreamtalk_style_predictor": "mirrortalk_jax.models.dreamtalk.style_predictor",
    "pirenderer": "mirrortalk_jax.models.pirenderer.renderer",
    "syncnet": "mirrortalk_jax.models.syncnet.model",
    "mimictalk_a2m": "mirrortalk_jax.models.mimictalk.a2m",
    "hubert": "mirrortalk_jax.models.audio_encoders.wav2vec2",
    "wav2vec2": "mirrortalk_jax.models.audio_encoders.wav2vec2",
}


def register(name: str) -> Callable[[Factory], Factory]:
    def wrap(factory: Factory) -> Factory:
        if name in _FACTORIES:
            raise ValueError(f"model {name!r} registered twice")
        _FACTORIES[name] = factory
        return factory
    return wrap


def create_model(model_config, spec: MotionSpec, rngs: nnx.Rngs) -> nnx.Module:
    """Instantiates `model_config.name` with its config and the dataset's motion space."""
    if model_config.name not in _FACTORIES:  # user code may have registered its own model already
        if model_config.name not in _MODULES:
            raise ValueError(f"unknown model {model_config.name!r}; known: {sorted(set(_MODULES) | set(_FACTORIES))}")
        importlib.import_module(_MODULES[model_config.name])  # registers its factory
    return _FACTORIES[model_config.name](model_config, spec, rngs)
