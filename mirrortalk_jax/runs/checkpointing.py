"""Orbax checkpoints of a training run: train state + Grain iterator state + the config, resumable anywhere.

Layout: WORKDIR/checkpoints/<step>/{state, data_iter, config}; `config` is JSON: {"config": the run's config,
"motion_spec": its motion space, "parts": the configs of the parts it was built with, and for a real-face motion
space "motion_basis": the dataset's fitted mesh basis}, enough to rebuild the model, and to project new faces into
its motion space (generate/), without the dataset or other runs (runs/loader.py). The state is restored against an abstract
tree whose leaves carry the *target* shardings, so a checkpoint written on one mesh restores onto another.

The data iterator's state is one `data_iter/process_<i>-of-<n>.json` per process. A run resumed with a different
number of processes cannot read "its" file, so its position is derived from the saved ones: the input pipeline
(data/pipeline.py) gives every process the same global stream and process i of n its stride `[i::n]`, so n
saved positions describe one global position, which any other process count can resume from.

Integrity: Orbax stores arrays without a checksum of their data (0.12 only checksums the zarr3 shard index), so
flipped bits or overwritten bytes in a data file restore silently and surface steps later as a non-finite
loss. Once a step is committed, process 0 records the size and sha256 of every file of its directory in
`<step>/checksums.json`; a restore first verifies them and raises `CorruptCheckpointError` naming the step
and the file. `restore_latest(..., fallback_to_previous=True)` instead moves a corrupt step aside (to
`<checkpoints>-corrupt/`) and resumes from the newest earlier step that verifies.
"""

from __future__ import annotations

import hashlib
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
from jax.experimental import multihost_utils

from mirrortalk_jax import storage

_ITER_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")
CHECKSUM_FILE = "checksums.json"
# JSON files Orbax parses on restore; checked before it reads them, so an empty or truncated one is named as
# such instead of surfacing as a model/config mismatch (checkpoints without checksums rely on this alone).
_JSON_FILES = ("_CHECKPOINT_METADATA", "state/_METADATA", "state/_sharding", "config/metadata")
FALLBACK_FLAG = "config.train.fallback_to_previous_checkpoint"


class CorruptCheckpointError(ValueError):
    """A damaged checkpoint step (as opposed to one written by a different model): names the step and file."""

    def __init__(self, step: int, path: str | os.PathLike, problem: str):
        self.step, self.path, self.problem = step, os.fspath(path), problem
        super().__init__(f"checkpoint step {step} is corrupt: {self.path} {problem}")


class Checkpointer:
    """Keeps the last `keep` checkpoints of a run, saved asynchronously every `every` steps."""

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, every: int = 1000,
                 async_save: bool = True):
        self.directory = storage.path(directory)  # local or gs://
        self.every = every
        # The interval is decided here (see `save`), not by Orbax, whose policy also saves the very first step.
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_names=("state", "data_iter", "config"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep,
                                                 enable_async_checkpointing=async_save, create=True))
        self._unsealed: int | None = None  # the step saved last, until its checksums are written

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def step_dir(self, step: int) -> epath.Path:
        return self.directory / str(step)

    def save(self, step: int, state: Any, data_iter: grain.DatasetIterator | None, meta: dict, *,
             force: bool = False) -> bool:
        """Saves if `step` is on the interval (or `force`) and not saved yet; returns whether a save started."""
        self._seal(wait=False)  # called every step: seals the previous save soon after Orbax commits it
        if (step % self.every and not force) or step == self.manager.latest_step():
            return False
        self._seal(wait=True)  # Orbax would wait for the previous save here anyway
        items = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(meta)}
        if data_iter is not None:
            items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
        started = self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        if started:
            self._unsealed = step
            self._seal(wait=False)  # a synchronous save is committed already
        return started

    def _seal(self, *, wait: bool) -> None:
        """Writes the checksums of the last saved step once Orbax has committed it.

        Only after the commit: an async save writes into a temporary directory renamed at the end, and its
        files are complete only then. Hashing the committed files (rather than fingerprinting arrays at save
        time) covers every file a restore reads, whatever process or mesh wrote it, names the damaged file,
        and costs one read of the checkpoint on process 0 per save, off the critical path of the others.
        """
        if self._unsealed is None:
            return
        if wait:
            self.manager.wait_until_finished()
        elif self.manager.is_saving_in_progress():
            return
        step, self._unsealed = self._unsealed, None
        if jax.process_index() != 0:
            return
        if not self.step_dir(step).is_dir():  # the save failed; Orbax reports that itself
            logging.warning("checkpoint step %d was not committed to %s: no checksums written", step,
                            self.step_dir(step))
            return
        write_checksums(self.step_dir(step), step)

    def verify(self, step: int) -> None:
        """Raises `CorruptCheckpointError` when a file of step `step` differs from what was saved."""
        if not verify_checksums(self.step_dir(step), step):
            logging.warning("checkpoint step %d has no %s (saved by an older version, or the run stopped before "
                            "sealing it): restoring it unverified", step, CHECKSUM_FILE)
        for name in _JSON_FILES:
            path = self.step_dir(step) / name
            if path.exists():
                _read_json(path, step)

    def restore(self, step: int, abstract_state: Any, data_iter: grain.DatasetIterator | None) -> Any:
        """Restores the state onto the shardings in `abstract_state` and the iterator in place (also when the
        checkpoint was written by a different number of processes), after verifying the step's files."""
        self.verify(step)
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

    def restore_fields(self, step: int, wanted: dict[str, Any]) -> dict[str, Any]:
        """Only the top-level fields `wanted` ({field: abstract pure-dict tree with target shardings}) of the
        saved train state, after verifying the step's files: e.g. the parameters for inference, without reading
        the optimizer moments. A field saved as None (EMA disabled) comes back None."""
        self.verify(step)
        directory = self.step_dir(step) / "state"
        handler = ocp.PyTreeCheckpointHandler()
        try:
            saved = handler.metadata(directory)
            saved = getattr(saved, "tree", saved)
            target = {field: tree for field, tree in wanted.items() if saved.get(field) is not None}
            try:  # partial_restore: the fields left out of `target` are never read
                restored = handler.restore(directory, args=ocp.args.PyTreeRestore(
                    target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"checkpoint {self.directory}/{step} does not match the model its config builds "
                                 f"(different architecture or sizes?): {e}") from e
        finally:
            handler.close()
        return {field: restored.get(field) for field in wanted}

    def restore_latest(self, abstract_state: Any, data_iter: grain.DatasetIterator | None, *,
                       fallback_to_previous: bool = False) -> tuple[int, Any] | None:
        """(step, state) of the newest checkpoint, or None when there is none.

        A corrupt newest step raises `CorruptCheckpointError`, unless `fallback_to_previous`: then it is moved
        aside (kept for inspection, and so that this run can save that step number again) with a warning, and
        the next older step is tried. Every process verifies every file, so all of them reach the same step
        without exchanging anything.
        """
        while (step := self.manager.latest_step()) is not None:
            try:
                logging.info("resuming from %s/%d", self.directory, step)
                return step, self.restore(step, abstract_state, data_iter)
            except CorruptCheckpointError as e:
                older = sorted(s for s in self.manager.all_steps() if s < step)
                if not (fallback_to_previous and older):
                    raise CorruptCheckpointError(e.step, e.path, e.problem + _fallback_hint(older)) from e
                logging.warning("%s; %s is set: moving step %d to %s and falling back to step %d", e, FALLBACK_FLAG,
                                step, self._quarantine(step), older[-1])
        return None

    def _quarantine(self, step: int) -> epath.Path:
        """Moves step `step` out of the checkpoint directory (process 0; the others wait for it)."""
        target = self.directory.parent / f"{self.directory.name}-corrupt" / str(step)
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            suffix = 0
            while target.exists():
                suffix += 1
                target = target.with_name(f"{step}.{suffix}")
            storage.move_folder(self.step_dir(step), target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"checkpoint_quarantine_{step}")
        self.manager.reload()
        return target

    def saved_iterator_states(self, step: int) -> dict[tuple[int, int], Any]:
        """{(process index, process count): iterator state} of the data_iter files saved at `step`."""
        directory = self.step_dir(step) / "data_iter"
        if not directory.exists():
            return {}
        states = {}
        for path in directory.iterdir():
            match = _ITER_FILE.fullmatch(path.name)
            if match:
                states[(int(match[1]), int(match[2]))] = _read_json(path, step)
        return states

    def saved_meta(self, step: int) -> dict:
        _read_json(self.step_dir(step) / "config" / "metadata", step)
        return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

    def wait(self) -> None:
        self.manager.wait_until_finished()
        self._seal(wait=False)  # committed now

    def close(self) -> None:
        self._seal(wait=True)
        self.manager.close()


def _fallback_hint(older: list[int]) -> str:
    if not older:
        return ". No earlier checkpoint step remains to fall back to"
    return (f". Earlier checkpoint steps {older} remain: set {FALLBACK_FLAG}=True to resume from the newest one "
            "that verifies (see docs/training.md)")


def _file_sha256(path: epath.Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _step_files(step_dir: epath.Path) -> list[epath.Path]:
    return [p for p in storage.files_under(step_dir) if p.name != CHECKSUM_FILE]


def write_checksums(step_dir: epath.Path, step: int) -> None:
    """`step_dir/checksums.json`: {relative path: {"size", "sha256"}} of every file of the committed step.

    Written to a temporary name and renamed, so a run stopped meanwhile leaves no checksum file (the step then
    restores unverified, with a warning) rather than a partial one that would condemn a healthy checkpoint.
    """
    step_dir = epath.Path(step_dir)
    files = {p.relative_to(step_dir).as_posix(): {"size": storage.size(p), "sha256": _file_sha256(p)}
             for p in _step_files(step_dir)}
    tmp = step_dir / f".{CHECKSUM_FILE}.tmp"
    tmp.write_text(json.dumps({"step": step, "algorithm": "sha256", "files": files}, indent=1))
    storage.replace(tmp, step_dir / CHECKSUM_FILE)


def verify_checksums(step_dir: epath.Path, step: int) -> bool:
    """Checks every file recorded in `step_dir/checksums.json`; False when the step has no such file.

    Files added after the seal are not judged: only what was there at save time is known to be right.
    """
    step_dir = epath.Path(step_dir)
    record = step_dir / CHECKSUM_FILE
    if not record.exists():
        return False
    files = _read_json(record, step).get("files")
    if not isinstance(files, dict):
        raise CorruptCheckpointError(step, record, "has no \"files\" table: not a checksum file of this trainer")
    for name, want in files.items():
        path = step_dir / name
        problem = _file_problem(path, int(want["size"]), want["sha256"], record)
        if problem:
            raise CorruptCheckpointError(step, path, problem)
    return True


def _file_problem(path: epath.Path, size: int, sha256: str, record: epath.Path) -> str | None:
    """What is wrong with `path` against the size and sha256 recorded at save time, or None."""
    if not path.is_file():
        return f"is missing ({size} bytes at save time, recorded in {record})"
    actual = storage.size(path)
    if actual == 0 and size:
        return f"is empty ({size} bytes at save time)"
    if actual < size:
        return f"is truncated ({actual} of the {size} bytes it had at save time)"
    if actual != size:
        return f"has {actual} bytes, {size} at save time"
    if _file_sha256(path) != sha256:
        return (f"differs from what was saved: same size ({size} bytes) but not the sha256 recorded in {record} "
                "(bits flipped or bytes overwritten)")
    return None


def _read_json(path: epath.Path, step: int) -> Any:
    """The parsed JSON file `path` of checkpoint step `step`; a `CorruptCheckpointError` naming it if unreadable."""
    text = path.read_text()
    if not text.strip():
        raise CorruptCheckpointError(step, path, f"is empty ({len(text)} bytes; expected a JSON document)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CorruptCheckpointError(step, path, f"is truncated or corrupt: not valid JSON ({e})") from e


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
