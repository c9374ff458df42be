"""Models for generation: a converted checkpoint (tools/convert_*.py) or a training run, of an expected kind."""

from __future__ import annotations

import os
from pathlib import Path

import ml_collections

from mirrortalk_jax.convert import converted
from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.train import pretrained


def model_config(path: str | os.PathLike, name: str, what: str
                 ) -> tuple[ml_collections.ConfigDict, MotionSpec | None]:
    """The model config and motion space stored at `path`, read without any weights (so inputs can be checked
    against it first), refused unless the registry model is `name`. `what` names the input in messages."""
    directory = Path(path)
    if not (converted.is_converted(directory) or (directory / "checkpoints").is_dir()):
        raise FileNotFoundError(f"{what} {path}: neither a converted checkpoint (a folder with model.json, as "
                                "tools/convert_*.py write) nor a training run (a workdir with checkpoints/)")
    config, spec = pretrained.stored_model_config(directory)
    if config.get("name") != name:
        raise ValueError(f"{what} {path} holds a {config.get('name')!r} model; expected a {name!r} checkpoint")
    return config, spec


def load(path: str | os.PathLike, name: str, what: str) -> pretrained.LoadedRun:
    """The model at `path` (a run's EMA weights when it kept them), refused as `model_config` refuses."""
    model_config(path, name, what)
    return pretrained.load_model(path)
