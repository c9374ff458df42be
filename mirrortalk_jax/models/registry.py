"""Model factories by name, so a config picks the model without the trainer importing it."""

from __future__ import annotations

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


def register(name: str) -> Callable[[Factory], Factory]:
    def wrap(factory: Factory) -> Factory:
        if name in _FACTORIES:
            raise ValueError(f"model {name!r} registered twice")
        _FACTORIES[name] = factory
        return factory
    return wrap


def create_model(model_config, spec: MotionSpec, rngs: nnx.Rngs) -> nnx.Module:
    """Instantiates `model_config.name` with its config and the dataset's motion space."""
    from mirrortalk_jax.models import regression  # noqa: F401  (registers its factory)

    if model_config.name not in _FACTORIES:
        raise ValueError(f"unknown model {model_config.name!r}; known: {sorted(_FACTORIES)}")
    return _FACTORIES[model_config.name](model_config, spec, rngs)
