"""Trained runs as building blocks: load a run's model, or its parameters into part of a new model.

A run's checkpoint carries its config and motion space, so a model is rebuilt from the workdir alone:

    expert = load_model("runs/motion_expert").model          # an nnx.Module with trained weights
    expert = run_model("runs/motion_expert", spec, rngs)     # its architecture, fresh weights (for a factory)
    config.train.init_from = (("motion_expert", "runs/motion_expert"),)   # inside a bigger model
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import ml_collections
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.models.registry import create_model
from mirrortalk_jax.train import checkpointing, mesh as mesh_lib, state as state_lib


@dataclasses.dataclass
class LoadedRun:
    model: nnx.Module
    config: ml_collections.ConfigDict
    spec: MotionSpec
    step: int


def _open(run_dir: str | os.PathLike) -> checkpointing.Checkpointer:
    directory = Path(run_dir).expanduser() / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"no checkpoints in {directory}: is {run_dir} a training workdir?")
    ckpt = checkpointing.Checkpointer(directory, async_save=False)
    if ckpt.latest_step() is None:
        ckpt.close()
        raise FileNotFoundError(f"{directory} holds no finished checkpoint")
    return ckpt


def load_config(run_dir: str | os.PathLike) -> tuple[ml_collections.ConfigDict, MotionSpec]:
    """A run's config and motion space (cheap: no arrays are read)."""
    ckpt = _open(run_dir)
    try:
        meta = ckpt.saved_meta(ckpt.latest_step())
    finally:
        ckpt.close()
    return ml_collections.ConfigDict(meta["config"]), MotionSpec.from_json(meta["motion_spec"])


def stored_model_config(run_dir: str | os.PathLike) -> tuple[ml_collections.ConfigDict, MotionSpec | None]:
    """The model config and motion space of a trained run or a converted checkpoint (tools/convert_*.py; its
    motion space may be None), read without any arrays."""
    from mirrortalk_jax.convert import converted  # noqa: PLC0415 - converters are rarely needed
    if converted.is_converted(run_dir):
        return converted.model_config(run_dir), converted.motion_spec(run_dir)
    config, spec = load_config(run_dir)
    return config.model, spec


def run_model(run_dir: str | os.PathLike, spec: MotionSpec | None, rngs: nnx.Rngs, *,
              check_name: bool = True) -> nnx.Module:
    """A freshly initialised model with the architecture of a trained run or converted checkpoint.

    Only its config is read (cheap, no arrays), so model factories call this for their parts even under
    eval_shape and jit; the trainer loads the weights at a fresh start (the model's `pretrained_subtrees`).
    The run must work on `spec`'s channels (None: any), and with `check_name` on the same motion space by
    name too; a converted checkpoint that records no motion space is built on `spec`.
    """
    run_config, run_spec = stored_model_config(run_dir)
    run_spec = run_spec or spec
    if spec is not None and (run_spec.dim != spec.dim or (check_name and run_spec.name != spec.name)):
        raise ValueError(f"{run_dir} was trained on motion space {run_spec.name!r} ({run_spec.dim} channels); "
                         f"this model uses {spec.name!r} ({spec.dim})")
    return create_model(run_config, run_spec, rngs)


def _restore(run_dir: str | os.PathLike, step: int | None):
    ckpt = _open(run_dir)
    try:
        step = ckpt.latest_step() if step is None else step
        meta = ckpt.saved_meta(step)
        config = ml_collections.ConfigDict(meta["config"])
        spec = MotionSpec.from_json(meta["motion_spec"])
        training = state_lib.make_training(lambda rngs: create_model(config.model, spec, rngs), config.train)
        graphdef = training.graphdef
        abstract = jax.eval_shape(training.init, jax.random.key(0))
        # Restore onto this process's devices, replicated: the caller re-shards what it keeps.
        mesh = mesh_lib.create_mesh({"ici_data": -1})
        replicated = jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), abstract)
        state = ckpt.restore(step, checkpointing.abstract_with_shardings(abstract, replicated), None)
    finally:
        ckpt.close()
    return graphdef, state, config, spec, step


def load_model(run_dir: str | os.PathLike, step: int | None = None, use_ema: bool = True) -> LoadedRun:
    """The trained model of a run (its EMA parameters when it kept them and `use_ema`).

    `run_dir` may also be a converted checkpoint (tools/convert_*.py): its model and config, step 0.
    """
    from mirrortalk_jax.convert import converted, run  # noqa: PLC0415 - converters are rarely needed
    if converted.is_converted(run_dir):
        model, model_config, spec = run.load_converted(run_dir)
        return LoadedRun(model, ml_collections.ConfigDict({"model": model_config.to_dict()}), spec, 0)
    graphdef, state, config, spec, step = _restore(run_dir, step)
    params = state.ema_params if (use_ema and state.ema_params is not None) else state.params
    return LoadedRun(nnx.merge(graphdef, params, state.model_state), config, spec, step)


def _subtree(tree: Any, path: str) -> Any:
    for key in filter(None, path.split("/")):
        if key not in tree:
            raise KeyError(f"no parameter subtree {path!r}: {key!r} is not among {sorted(map(str, tree.keys()))}")
        tree = tree[key]
    return tree


def init_subtree_from(state: state_lib.TrainState, subtree: str, run_dir: str | os.PathLike,
                      shardings: state_lib.TrainState) -> state_lib.TrainState:
    """Replaces the parameters under `subtree` ('' = all) of a fresh state by those of a trained run.

    The trained model must have exactly the same parameter names and shapes as the subtree; a mismatch
    raises ValueError listing the missing, unexpected and mis-shaped parameters.
    """
    loaded = load_model(run_dir).model
    source = nnx.state(loaded, nnx.Param)
    target = _subtree(state.params, subtree)
    flat_src = {k: v for k, v in nnx.to_flat_state(source)}
    flat_dst = {k: v for k, v in nnx.to_flat_state(target)}
    missing = sorted("/".join(map(str, k)) for k in flat_dst.keys() - flat_src.keys())
    unexpected = sorted("/".join(map(str, k)) for k in flat_src.keys() - flat_dst.keys())
    shapes = sorted(f"{'/'.join(map(str, k))}: {flat_src[k].shape} vs {flat_dst[k].shape}"
                    for k in flat_src.keys() & flat_dst.keys() if flat_src[k].shape != flat_dst[k].shape)
    if missing or unexpected or shapes:
        raise ValueError(f"run {run_dir} does not fit parameter subtree {subtree!r}: missing {missing}, "
                         f"unexpected {unexpected}, shape mismatches {shapes}")
    target_shardings = _subtree(shardings.params, subtree)
    placed = jax.tree.map(lambda value, sharding: jax.device_put(value, sharding), source, target_shardings)
    params = jax.tree.map(lambda x: x, state.params)  # a new State, so the caller's stays untouched
    if subtree:
        *parents, last = subtree.split("/")
        _subtree(params, "/".join(parents))[last] = placed
    else:
        params = placed
    return state.replace(params=params, ema_params=None if state.ema_params is None else params)
