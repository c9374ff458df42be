"""Orbax checkpoints of a training run: train state + Grain iterator state + the config, resumable anywhere.

Layout: WORKDIR/checkpoints/<step>/{state, data_iter, config}; `config` is JSON: {"config": the run's config,
"motion_spec": its motion space}, enough to rebuild the model without the dataset (see train/pretrained.py). The state is restored against an abstract
tree whose leaves carry the *target* shardings, so a checkpoint written on one mesh restores onto another.

The data iterator's state is one `data_iter/process_<i>-of-<n>.json` per process. A run resumed with a different
number of processes cannot read "its" file, so its position is derived from the saved ones: the input pipeline
(data/pipeline.py) gives every process the same global stream and process i of n its stride `[i::n]`, so n
saved positions describe one global position, which any other process count can resume from.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

import grain
import jax
import optax
import orbax.checkpoint as ocp
from etils import epath

_ITER_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")


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
        """Restores the state onto the shardings in `abstract_state` and the iterator in place (also when the
        checkpoint was written by a different number of processes)."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        saved_iterators = self.saved_iterator_states(step) if data_iter is not None else {}
        same_processes = all(n == jax.process_count() for _, n in saved_iterators)
        if data_iter is not None and same_processes:
            items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"checkpoint {self.directory}/{step} does not match this model/config "
                             f"(different architecture or sizes?): {e}") from e
        if data_iter is not None and not same_processes:
            _restore_iterator_across_process_counts(data_iter, saved_iterators, step)
        return restored["state"]

    def saved_iterator_states(self, step: int) -> dict[tuple[int, int], Any]:
        """{(process index, process count): iterator state} of the data_iter files saved at `step`."""
        directory = epath.Path(self.directory) / str(step) / "data_iter"
        if not directory.exists():
            return {}
        states = {}
        for path in directory.iterdir():
            match = _ITER_FILE.fullmatch(path.name)
            if match:
                states[(int(match[1]), int(match[2]))] = json.loads(path.read_text())
        return states

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


def reshard_iterator_state(saved: dict[int, Any], saved_count: int, process_index: int,
                           process_count: int) -> dict[str, int] | None:
    """The iterator state of process `process_index` of `process_count` that resumes where the `saved_count`
    processes whose states are `saved` ({process index: state}) stopped; None for a state it cannot read.

    Each saved state is `{"next_index": k}`: process i of n consumed the global elements i, i + n, ..., so the
    global stream is consumed up to k * n. Positions differ only when a process skipped bad records; the
    earliest one is taken (a few windows seen twice rather than some never).
    """
    if not saved or any(not isinstance(s, dict) or set(s) != {"next_index"} for s in saved.values()):
        return None
    global_next = min(int(s["next_index"]) for s in saved.values()) * saved_count
    # The first element of this process's stride [process_index::process_count] at or after global_next.
    return {"next_index": max(0, -(-(global_next - process_index) // process_count))}


def _restore_iterator_across_process_counts(data_iter: grain.DatasetIterator,
                                            saved: dict[tuple[int, int], Any], step: int) -> None:
    counts = sorted({n for _, n in saved})
    if len(counts) != 1:
        raise ValueError(f"data_iter of checkpoint step {step} mixes process counts {counts}")
    state = reshard_iterator_state({i: s for (i, _), s in saved.items()}, counts[0], jax.process_index(),
                                   jax.process_count())
    if state is None:
        logging.warning("checkpoint step %d was written by %d processes, this run has %d, and its data iterator "
                        "state %s is not a plain stream position: the data stream restarts from its beginning",
                        step, counts[0], jax.process_count(), next(iter(saved.values())))
        return
    logging.warning("checkpoint step %d was written by %d processes, this run has %d: process %d resumes the "
                    "data stream at its element %d (global position derived from the saved iterator states)",
                    step, counts[0], jax.process_count(), jax.process_index(), state["next_index"])
    data_iter.set_state(state)
