"""Orbax checkpoints of a training run: train state + Grain iterator state + the config, resumable anywhere.

Layout: WORKDIR/checkpoints/<step>/{state, data_iter, config}; `config` is JSON: {"config": the run's config,
"motion_spec": its motion space}, enough to rebuild the model without the dataset (see train/pretrained.py). The state is restored against an abstract
tree whose leaves carry the *target* shardings, so a checkpoint written on one mesh restores onto another.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import optax
import orbax.checkpoint as ocp


class Checkpointer:
    """Keeps the last `keep` checkpoints of a run, saved asynchronously every `every` steps."""

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, every: int = 1000,
                 async_save: bool = True):
        self.directory = os.path.abspath(os.fspath(directory))
        self.every = every
        # The interval is decided here (see `save`), not by Orbax, whose policy also saves the very first step.
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_names=("state", "data_iter", "config"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep,
                                                 enable_async_checkpointing=async_save, create=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iter: grain.DatasetIterator | None, meta: dict, *,
             force: bool = False) -> bool:
        """Saves if `step` is on the interval (or `force`) and not saved yet; returns whether a save started."""
        if (step % self.every and not force) or step == self.manager.latest_step():
            return False
        items = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(meta)}
        if data_iter is not None:
            items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, abstract_state: Any, data_iter: grain.DatasetIterator | None) -> Any:
        """Restores the state onto the shardings in `abstract_state` and the iterator in place."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iter is not None:
            items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"checkpoint {self.directory}/{step} does not match this model/config "
                             f"(different architecture or sizes?): {e}") from e
        return restored["state"]

    def saved_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs that carry the shardings to restore onto.

    Frozen parameter groups leave empty `optax.MaskedNode`s in the optimizer state; they hold no array and
    pass through unchanged.
    """
    def leaf(a, s):
        return a if isinstance(a, optax.MaskedNode) else jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s)
    return jax.tree.map(leaf, abstract_state, shardings, is_leaf=lambda x: isinstance(x, optax.MaskedNode))
