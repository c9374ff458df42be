"""Trained weights into part of a fresh train state: a composite model's parts from their runs
(`runs.loader.Recipe.init_from`) and the config's `train.init_from`, loaded once at a fresh start.

An entry is (subtree, run) or (subtree, run, source subtree): the run's whole model, or only its `source subtree`,
goes to `subtree` of the new model ('' = the whole model). The three-part form takes the layers that still fit
from a model trained elsewhere, e.g. the released PIRenderer's warping and editing nets into a PIRenderer whose
mapping net reads another motion space:
    --config.train.init_from='(("warping_net", "ckpt/dreamtalk/renderer", "warping_net"),
                                ("editing_net", "ckpt/dreamtalk/renderer", "editing_net"))'
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mirrortalk_jax.runs import loader
from mirrortalk_jax.train import state as state_lib


def _subtree(tree: Any, path: str) -> Any:
    for key in filter(None, path.split("/")):
        if key not in tree:
            raise KeyError(f"no parameter subtree {path!r}: {key!r} is not among {sorted(map(str, tree.keys()))}")
        tree = tree[key]
    return tree


def _flat(tree: Any) -> dict[tuple, Any]:
    return dict(nnx.to_flat_state(tree))


def _check_fits(run_dir: str | os.PathLike, subtree: str, source: Any, target: Any, what: str) -> None:
    src, dst = _flat(source), _flat(target)
    missing = sorted("/".join(map(str, k)) for k in dst.keys() - src.keys())
    unexpected = sorted("/".join(map(str, k)) for k in src.keys() - dst.keys())
    shapes = sorted(f"{'/'.join(map(str, k))}: {src[k].shape} vs {dst[k].shape}"
                    for k in src.keys() & dst.keys() if src[k].shape != dst[k].shape)
    if missing or unexpected or shapes:
        raise ValueError(f"run {run_dir} does not fit {what} subtree {subtree!r}: missing {missing}, "
                         f"unexpected {unexpected}, shape mismatches {shapes}")


def _graft(tree: Any, subtree: str, value: Any) -> Any:
    """A copy of `tree` (an nnx.State) with `value` at `subtree` ('' = the whole tree)."""
    if not subtree:
        return value
    tree = jax.tree.map(lambda x: x, tree)  # a new State, so the caller's stays untouched
    *parents, last = subtree.split("/")
    _subtree(tree, "/".join(parents))[last] = value
    return tree


def _overwrite(target: Any, values: Any, shardings: Any, run_dir, subtree: str) -> Any:
    """`target` (an nnx.State) with the variables of `values` (a subset of its paths) put in their place."""
    flat, placement = _flat(target), _flat(shardings)
    for path, var in _flat(values).items():
        name = "/".join(map(str, path))
        if path not in flat or flat[path].shape != var.shape:
            raise ValueError(f"run {run_dir} does not fit subtree {subtree!r}: its variable {name} "
                             f"{var.shape} has no place of that shape in the model")
        flat[path] = flat[path].replace(jax.device_put(var.get_value(), placement[path].get_value()))
    return nnx.from_flat_state(list(flat.items()))


def _child(module: Any, key: str, run_dir, path: str) -> Any:
    """module.key, module[key] (nnx.Dict) or module[int(key)] (nnx.List)."""
    for get in (lambda: getattr(module, key), lambda: module[key], lambda: module[int(key)]):
        try:
            return get()
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            continue
    raise KeyError(f"run {run_dir} has no subtree {path!r}: nothing named {key!r} in its "
                   f"{type(module).__name__}")


def load_subtree(state: state_lib.TrainState, subtree: str, run_dir: str | os.PathLike,
                 shardings: state_lib.TrainState, source_subtree: str = "") -> state_lib.TrainState:
    """Replaces the variables under `subtree` ('' = all) of a fresh state by those of the run (or converted
    checkpoint) at `run_dir` (under its `source_subtree`, '' = its whole model): its parameters, and its other
    variables (batch statistics, buffers such as a converted RoPE table) too; RNG state stays this run's.

    The stored (sub)model must have exactly the subtree's parameter names and shapes; a mismatch raises ValueError
    listing the missing, unexpected and mis-shaped ones.
    """
    model = loader.load_model(run_dir).model
    for key in filter(None, source_subtree.split("/")):
        model = _child(model, key, run_dir, source_subtree)
    params = nnx.state(model, nnx.Param)
    _check_fits(run_dir, subtree, params, _subtree(state.params, subtree), "parameter")
    placed = jax.tree.map(jax.device_put, params, _subtree(shardings.params, subtree))
    new_params = _graft(state.params, subtree, placed)
    others = nnx.state(model, nnx.All(nnx.Not(nnx.Param), nnx.Not(nnx.RngState)))
    model_state = state.model_state
    if _flat(others):
        model_state = _graft(model_state, subtree, _overwrite(
            _subtree(model_state, subtree), others, _subtree(shardings.model_state, subtree), run_dir, subtree))
    # The EMA starts from the loaded weights too, in buffers of its own: the train step donates the whole state,
    # and one buffer in two leaves cannot be donated twice.
    ema = None if state.ema_params is None else jax.tree.map(jnp.copy, new_params)
    return state.replace(params=new_params, model_state=model_state, ema_params=ema)
