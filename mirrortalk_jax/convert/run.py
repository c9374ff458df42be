"""Conversion end to end for registry models: foreign tensors -> validated variables -> converted checkpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import ml_collections
import numpy as np
from flax import nnx

from mirrortalk_jax.convert import converted, name_map
from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.models.registry import create_model


def builder(model_config: ml_collections.ConfigDict, spec: MotionSpec | None):
    """A zero-argument constructor of the registry model, for nnx.eval_shape (nothing is initialised)."""
    return lambda: create_model(model_config, spec, nnx.Rngs(0))


def convert_model(tensors: Mapping[str, np.ndarray], rules: Sequence[name_map.Rule],
                  model_config: ml_collections.ConfigDict, spec: MotionSpec | None = None, *,
                  source: str = "checkpoint") -> nnx.Module:
    """The registry model `model_config.name` with its variables taken from `tensors` (validated)."""
    build = builder(model_config, spec)
    variables = name_map.convert(tensors, rules, name_map.abstract_variables(build), source=source)
    return name_map.merge(build, variables)


def convert_to_checkpoint(tensors: Mapping[str, np.ndarray], rules: Sequence[name_map.Rule],
                          model_config: ml_collections.ConfigDict, out_dir: str | os.PathLike,
                          spec: MotionSpec | None = None, *, source: str = "checkpoint") -> Path:
    """Converts and writes a checkpoint that `load_converted` (and train.pretrained.load_model) reads."""
    build = builder(model_config, spec)
    variables = name_map.convert(tensors, rules, name_map.abstract_variables(build), source=source)
    return converted.save(out_dir, variables, model_config=model_config, motion_spec=spec, source=source)


def load_converted(directory: str | os.PathLike) -> tuple[nnx.Module, ml_collections.ConfigDict, MotionSpec | None]:
    """The model stored in a converted checkpoint, rebuilt from its model.json, with its config and motion space."""
    model_config = converted.model_config(directory)
    spec = converted.motion_spec(directory)
    build = builder(model_config, spec)
    variables = converted.restore(directory, name_map.abstract_variables(build))
    return name_map.merge(build, variables), model_config, spec
