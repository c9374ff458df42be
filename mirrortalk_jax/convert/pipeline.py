"""Conversion end to end for registry models: foreign tensors -> validated variables -> converted checkpoint
(runs/converted.py; `runs.loader.load_model` reads it back like a training run)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import ml_collections
import numpy as np
from flax import nnx

from mirrortalk_jax.convert import name_map
from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.models import abstract
from mirrortalk_jax.runs import converted


def convert_model(tensors: Mapping[str, np.ndarray], rules: Sequence[name_map.Rule],
                  model_config: ml_collections.ConfigDict, spec: MotionSpec | None = None, *,
                  source: str = "checkpoint") -> nnx.Module:
    """The registry model `model_config.name` with its variables taken from `tensors` (validated)."""
    build = abstract.builder(model_config, spec)
    variables = name_map.convert(tensors, rules, abstract.abstract_variables(build), source=source)
    return abstract.merge(build, variables)


def convert_to_checkpoint(tensors: Mapping[str, np.ndarray], rules: Sequence[name_map.Rule],
                          model_config: ml_collections.ConfigDict, out_dir: str | os.PathLike,
                          spec: MotionSpec | None = None, *, source: str = "checkpoint") -> Path:
    """Converts and writes a converted checkpoint folder."""
    build = abstract.builder(model_config, spec)
    variables = name_map.convert(tensors, rules, abstract.abstract_variables(build), source=source)
    return converted.save(out_dir, variables, model_config=model_config, motion_spec=spec, source=source)
