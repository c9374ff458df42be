"""Converted checkpoints on disk: DIR/variables (Orbax) + DIR/model.json (what to build), loadable by name.

    converted.save("ckpt/dreamtalk", variables, model_config=config.model, source="denoising_network.pth")
    model = runs.loader.load_model("ckpt/dreamtalk").model        # same call as for a training run

`model.json` holds {"format", "config": {"model": ...}, "motion_spec", "source"} so the model is rebuilt
through the registry (`config.model.name`) without the original files. Variables restore onto any devices.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from mirrortalk_jax import storage
from mirrortalk_jax.data.motion_spec import MotionSpec

FORMAT = "mirrortalk_jax.converted/1"
META_FILE = "model.json"


class CheckpointError(ValueError):
    """A checkpoint (converted folder or training run) that cannot be read as, or does not fit, its model."""


def is_converted(directory: str | os.PathLike) -> bool:
    return (storage.path(directory) / META_FILE).is_file()


def _refuse_existing(directory: epath.Path) -> None:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FileExistsError(f"{directory} exists and is not empty; choose a new output folder")


@contextlib.contextmanager
def new_folder(directory: str | os.PathLike) -> Iterator[epath.Path]:
    """Writes an output folder completely or not at all.

        with converted.new_folder(out) as tmp:     # tmp: an empty folder next to `out`
            ...write everything under tmp...       # renamed to `out` when the block succeeds

    Refuses (FileExistsError) a `directory` that exists and is not empty, before anything is written; an existing
    empty folder is replaced. The temporary folder (`.<name>.partial-<random>`, in the same parent, so the final
    rename stays on one file system) is removed if the block raises: a failed conversion leaves nothing at
    `directory` and never touches what was there. Nested uses (a folder of converted checkpoints) compose.

    On an object store (gs://), which cannot rename, the folder is written locally and uploaded with its
    META_FILE last: readers take a folder with model.json as complete (`is_converted`).
    """
    directory = storage.path(directory)
    _refuse_existing(directory)
    if storage.is_remote(directory):
        with storage.local_folder(directory, last=(META_FILE,)) as local:
            yield epath.Path(local)
            _refuse_existing(directory)
        return
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.partial-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        _refuse_existing(directory)  # created by someone else meanwhile
        if directory.is_dir():
            directory.rmdir()  # empty (checked above)
        os.rename(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save(directory: str | os.PathLike, variables: nnx.State, *, model_config: ml_collections.ConfigDict | dict,
         motion_spec: MotionSpec | None = None, source: str = "", extra: dict[str, Any] | None = None) -> epath.Path:
    """Writes variables + metadata (through `new_folder`: all or nothing); refuses to overwrite an existing
    checkpoint."""
    directory = storage.path(directory)
    config = model_config.to_dict() if isinstance(model_config, ml_collections.ConfigDict) else dict(model_config)
    meta = {"format": FORMAT, "config": {"model": config}, "source": str(source),
            "motion_spec": motion_spec.to_json() if motion_spec is not None else None, **(extra or {})}
    text = json.dumps(meta, indent=1, default=_json_default)  # fails before anything is written
    with new_folder(directory) as tmp:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(tmp / "variables", nnx.to_pure_dict(variables))
        # Written last: a folder with model.json is a complete checkpoint.
        (tmp / META_FILE).write_text(text)
    return directory


def _json_default(value):
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in model.json")


def load_meta(directory: str | os.PathLike) -> dict[str, Any]:
    path = storage.path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {directory} is not a converted checkpoint")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def model_config(directory: str | os.PathLike) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(load_meta(directory)["config"]["model"])


def motion_spec(directory: str | os.PathLike) -> MotionSpec | None:
    text = load_meta(directory).get("motion_spec")
    return MotionSpec.from_json(text) if text else None


def restore(directory: str | os.PathLike, abstract: nnx.State) -> nnx.State:
    """The saved variables in the structure of `abstract` (from nnx.eval_shape), on the default device.

    A checkpoint of another architecture or size raises CheckpointError naming the differing entries.
    """
    directory = storage.path(directory)
    load_meta(directory)
    target = nnx.to_pure_dict(abstract)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), target)
    with ocp.StandardCheckpointer() as checkpointer:
        saved = checkpointer.metadata(directory / "variables")
        saved_tree = saved.item_metadata.tree if hasattr(saved, "item_metadata") else saved
        _check_same_tree(directory, saved_tree, target)
        values = checkpointer.restore(directory / "variables", target)
    state = jax.tree.map(lambda x: x, abstract)
    nnx.replace_by_pure_dict(state, values)
    return state


def _check_same_tree(directory: epath.Path, saved: Any, target: Any) -> None:
    def flat(tree):
        # Orbax stores integer keys (list indices) as strings: compare "/"-joined paths.
        return {"/".join(str(getattr(k, "key", k)) for k in p): tuple(getattr(leaf, "shape", ()) or ())
                for p, leaf in jax.tree_util.tree_leaves_with_path(tree)}
    have, want = flat(saved), flat(target)
    missing = sorted(want.keys() - have.keys())
    unexpected = sorted(have.keys() - want.keys())
    shapes = sorted(f"{k}: saved {have[k]} vs model {want[k]}" for k in have.keys() & want.keys() if have[k] != want[k])
    if missing or unexpected or shapes:
        raise CheckpointError(f"{directory} does not fit the model built from its model.json: missing {missing[:20]}, "
                              f"unexpected {unexpected[:20]}, shape mismatches {shapes[:20]}")
