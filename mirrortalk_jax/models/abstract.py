"""Models built without initialising anything: their shape-only variables, and real variables merged in.

    build = abstract.builder(model_config, spec)          # () -> model, for nnx.eval_shape
    shapes = abstract.abstract_variables(build)           # what a checkpoint or converter must fill
    model = abstract.merge(build, variables)              # the model with those variables

Loading (runs/), converting (convert/) and evaluation networks (evaluate/inception.py) all build this way, so a
checkpoint never costs a random initialisation first.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from flax import nnx

from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.models.registry import create_model


def builder(model_config: ml_collections.ConfigDict, spec: MotionSpec | None,
            **parts: nnx.Module) -> Callable[[], nnx.Module]:
    """A zero-argument constructor of the registry model, for nnx.eval_shape (nothing is initialised)."""
    return lambda: create_model(model_config, spec, nnx.Rngs(0), **parts)


def abstract_variables(build: Callable[[], nnx.Module]) -> nnx.State:
    """Shape-only variables (params, batch statistics, buffers; no RNG state) of the model `build()` makes."""
    return nnx.state(nnx.eval_shape(build), nnx.Not(nnx.RngState))


def merge(build: Callable[[], nnx.Module], variables: nnx.State) -> nnx.Module:
    """The model `build()` makes, with `variables` (e.g. restored or converted); built abstractly, nothing is
    initialised."""
    graphdef, _, rng_state = nnx.split(nnx.eval_shape(build), nnx.Not(nnx.RngState), ...)
    return nnx.merge(graphdef, variables, _concrete_rngs(rng_state))


def _concrete_rngs(rng_state: nnx.State) -> nnx.State:
    """RNG variables of an eval_shape'd model are abstract; fixed real values let the model run (deterministic)."""
    def concrete(var):
        shape_dtype = var.get_value()
        if jax.dtypes.issubdtype(shape_dtype.dtype, jax.dtypes.prng_key):
            return var.replace(jax.random.key(0))
        return var.replace(np.zeros(shape_dtype.shape, shape_dtype.dtype))
    return jax.tree.map(concrete, rng_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
