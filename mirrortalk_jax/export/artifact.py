"""Exporting a model's apply function as a portable artifact (read back by runtime.py, jax + numpy only).

    spec = ExportSpec(inputs=(TensorSpec("x", (BATCH, 64)),), outputs=(TensorSpec("y", (BATCH, 8)),),
                      apply=lambda model, x: {"y": model(x)})
    export_model(model, spec, "exports/my_model", model_name="my_model")

The computation is `apply` traced by jax.export with a symbolic batch size and lowered for every platform asked
for (StableHLO; default cpu, cuda and tpu, from any machine). The model's variables are its first argument, a
flat {parameter path: array} dict saved as weights.npz, so the artifact holds no copy of them and new weights of
the same architecture need no re-export. Random-number state (if any) is baked in as constants.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import numpy as np
from etils import epath
from flax import nnx

from mirrortalk_jax import safe_paths, storage
from mirrortalk_jax.export import runtime
from mirrortalk_jax.export.runtime import BATCH, FORMAT

DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
COMPUTATION_FILE = "computation.jaxexport"
WEIGHTS_FILE = "weights.npz"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output: `shape` uses BATCH ("batch") for the symbolic batch dimension."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "description": self.description}


@dataclasses.dataclass(frozen=True)
class ExportSpec:
    """What to export: `apply(model, *inputs)` returns a dict holding at least every output named here."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    apply: Callable[..., Mapping[str, jax.Array]]
    conventions: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _abstract(spec: TensorSpec, batch) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(batch if d == BATCH else int(d) for d in spec.shape), np.dtype(spec.dtype))


def _shape_json(aval) -> list[int | str]:
    return [d if isinstance(d, int) else str(d) for d in aval.shape]


def export_model(model: nnx.Module, spec: ExportSpec, out_dir: str | os.PathLike, *, model_name: str,
                 platforms: Sequence[str] = DEFAULT_PLATFORMS, model_config: Mapping[str, Any] | None = None,
                 source: Mapping[str, Any] | None = None) -> epath.Path:
    """Writes the artifact folder `out_dir` (which must not exist or be empty) and returns its path.

    `model_config` and `source` (e.g. {"checkpoint": name, "sha256": ...}) are recorded in the manifest.
    """
    target = storage.path(out_dir)  # local or gs://
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists and is not empty; choose a new output folder")
    graphdef, variables, rest = nnx.split(model, nnx.Not(nnx.RngState), ...)
    flat = list(nnx.to_flat_state(variables))
    names = ["/".join(map(str, path)) for path, _ in flat]
    weights = {name: np.asarray(var.get_value()) for name, (_, var) in zip(names, flat)}

    def computation(params: dict[str, jax.Array], *inputs: jax.Array) -> dict[str, jax.Array]:
        state = nnx.from_flat_state([(path, var.replace(params[name])) for name, (path, var) in zip(names, flat)])
        outputs = spec.apply(nnx.merge(graphdef, state, rest), *inputs)
        return {o.name: outputs[o.name] for o in spec.outputs}

    (batch,) = jax.export.symbolic_shape(BATCH)
    weight_args = {name: jax.ShapeDtypeStruct(w.shape, w.dtype) for name, w in weights.items()}
    exported = jax.export.export(jax.jit(computation), platforms=tuple(platforms))(
        weight_args, *(_abstract(t, batch) for t in spec.inputs))
    produced = dict(zip(sorted(o.name for o in spec.outputs), exported.out_avals))  # dicts flatten sorted
    for out in spec.outputs:
        got = _shape_json(produced[out.name])
        if got != list(out.shape) or str(produced[out.name].dtype) != out.dtype:
            raise ValueError(f"output {out.name}: the computation gives {got} {produced[out.name].dtype}, "
                             f"the spec says {list(out.shape)} {out.dtype}")

    with storage.local_folder(target, last=(runtime.MANIFEST,)) as out_dir:
        _write_files(out_dir, exported, weights, spec, model_name, model_config, source)
    return target


def _write_files(out_dir: Path, exported: jax.export.Exported, weights: dict[str, np.ndarray], spec: ExportSpec,
                 model_name: str, model_config: Mapping[str, Any] | None, source: Mapping[str, Any] | None) -> None:
    (out_dir / COMPUTATION_FILE).write_bytes(exported.serialize())
    np.savez(out_dir / WEIGHTS_FILE, **weights)
    manifest = {
        "format": FORMAT,
        "model": model_name,
        "inputs": [t.to_json() for t in spec.inputs],
        "outputs": [t.to_json() for t in spec.outputs],
        "conventions": dict(spec.conventions),
        "computation": {**_file_entry(out_dir, COMPUTATION_FILE), "platforms": list(exported.platforms),
                        "calling_convention_version": exported.calling_convention_version,
                        "arguments": ["weights (flat dict, weights.npz)"] + [t.name for t in spec.inputs],
                        "symbolic_dims": {BATCH: "any size >= 1, chosen per call"}},
        "weights": {**_file_entry(out_dir, WEIGHTS_FILE), "count": len(weights),
                    "num_params": int(sum(w.size for w in weights.values()))},
        "model_config": dict(model_config) if model_config is not None else None,
        "source": dict(source or {}),
        "created_with": {"mirrortalk_jax": _version("mirrortalk_jax"), "jax": jax.__version__,
                         "jaxlib": _version("jaxlib"), "flax": _version("flax")},
    }
    # Written last (and uploaded last): a folder with manifest.json is a complete artifact.
    (out_dir / runtime.MANIFEST).write_text(json.dumps(manifest, indent=1, default=_json_default))


def _file_entry(out_dir: Path, name: str) -> dict[str, Any]:
    """A written file's manifest entry. The name passes the same check runtime.py makes when loading (a plain
    name of a regular file in the folder), so every artifact written here is one the runtime accepts; the size
    lets the runtime refuse a truncated or swapped file before reading it."""
    path = safe_paths.plain_file_in(out_dir, name)
    return {"file": name, "size": path.stat().st_size, "sha256": runtime.file_sha256(path)}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _json_default(value):
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in manifest.json")


def directory_sha256(directory: str | os.PathLike) -> str:
    """One digest of a folder's files (relative paths and contents), e.g. a converted checkpoint."""
    directory = storage.path(directory)
    lines = [f"{p.relative_to(directory).as_posix()} {_sha256(p)}" for p in storage.files_under(directory)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _sha256(file: epath.Path) -> str:
    with file.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
