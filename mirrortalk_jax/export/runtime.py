"""Runs an exported mirrortalk_jax artifact with nothing but jax and numpy.

This file imports nothing from mirrortalk_jax: copy it next to your code to serve an exported model without the
framework (or torch), on any platform the artifact was exported for (by default cpu, cuda and tpu).

    from runtime import load                        # or: from mirrortalk_jax.export.runtime import load
    renderer = load("exports/pirenderer")
    print(renderer.manifest["inputs"])              # names, shapes ("batch" = any size), dtypes, meanings
    out = renderer(source_image=images, driving_source=windows)   # dict of numpy arrays, e.g. out["fake_image"]

An artifact is a folder:
    manifest.json          format version, inputs/outputs (name, shape with "batch" for the symbolic batch size,
                           dtype, meaning), conventions (layout, value ranges), sha256 of each file and of the
                           checkpoint it came from
    computation.jaxexport  the jax.export serialization (StableHLO) of the model's apply function; its first
                           argument is the flat weight dict, the model inputs follow in manifest order
    weights.npz            the weights, keyed by parameter path; passed as an argument, not baked in, so one
                           computation serves re-trained or personalised weights of the same architecture
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = "mirrortalk_jax.export/1"
BATCH = "batch"  # the symbolic batch dimension's name in manifest shapes
MANIFEST = "manifest.json"


class ArtifactError(ValueError):
    """An artifact folder that is incomplete, corrupted, or of another format version."""


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ExportedModel:
    """A loaded artifact: call it with the manifest's inputs (by name or in order) to get its outputs."""

    def __init__(self, directory: str | os.PathLike, *, verify: bool = True):
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: {self.directory} is not an exported artifact")
        self.manifest: dict[str, Any] = json.loads(path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ArtifactError(f"{path}: format {self.manifest.get('format')!r}; this runtime reads {FORMAT!r}")
        computation, weights = self.manifest["computation"], self.manifest["weights"]
        if verify:
            for entry in (computation, weights):
                if file_sha256(self.directory / entry["file"]) != entry["sha256"]:
                    raise ArtifactError(f"{self.directory / entry['file']}: sha256 differs from the manifest's "
                                        "(corrupted or replaced file)")
        self.exported = jax.export.deserialize(bytearray((self.directory / computation["file"]).read_bytes()))
        with np.load(self.directory / weights["file"]) as npz:
            self.weights = {name: jnp.asarray(npz[name]) for name in npz.files}
        if len(self.weights) != weights["count"]:
            raise ArtifactError(f"{weights['file']}: {len(self.weights)} tensors, the manifest lists {weights['count']}")
        self._call = jax.jit(self.exported.call)

    @property
    def input_names(self) -> list[str]:
        return [t["name"] for t in self.manifest["inputs"]]

    @property
    def output_names(self) -> list[str]:
        return [t["name"] for t in self.manifest["outputs"]]

    def _check(self, values: list[Any]) -> list[np.ndarray]:
        arrays, batch = [], None
        for spec, value in zip(self.manifest["inputs"], values):
            array = np.asarray(value)
            if array.dtype.kind not in "fiub":
                raise ValueError(f"input {spec['name']}: dtype {array.dtype} is not numeric")
            array = array.astype(spec["dtype"], copy=False)
            want = spec["shape"]
            fits = array.ndim == len(want) and all(w == BATCH or w == s for w, s in zip(want, array.shape))
            if not fits or (array.ndim and array.shape[0] < 1):
                raise ValueError(f"input {spec['name']}: shape {array.shape}, expected {tuple(want)}")
            if BATCH in want:
                size = array.shape[want.index(BATCH)]
                if batch is not None and size != batch:
                    raise ValueError(f"input {spec['name']}: batch size {size}, other inputs have {batch}")
                batch = size
            arrays.append(array)
        return arrays

    def __call__(self, *args: Any, as_numpy: bool = True, **kwargs: Any) -> dict[str, Any]:
        """Inputs by position (manifest order) or name -> {output name: array} (numpy unless as_numpy=False)."""
        names = self.input_names
        if len(args) > len(names):
            raise TypeError(f"{len(args)} positional inputs; the artifact takes {names}")
        given = dict(zip(names, args))
        for name, value in kwargs.items():
            if name not in names or name in given:
                raise TypeError(f"unexpected or repeated input {name!r}; the artifact takes {names}")
            given[name] = value
        missing = [n for n in names if n not in given]
        if missing:
            raise TypeError(f"missing inputs {missing}")
        platform = jax.devices()[0].platform
        platforms = self.manifest["computation"]["platforms"]
        if platform == "cpu" and "cpu" not in platforms or platform == "tpu" and "tpu" not in platforms:
            raise ArtifactError(f"this artifact was exported for {platforms}, not {platform}")
        outputs = self._call(self.weights, *self._check([given[n] for n in names]))
        return {k: np.asarray(v) if as_numpy else v for k, v in outputs.items()}


def load(directory: str | os.PathLike, *, verify: bool = True) -> ExportedModel:
    """The artifact in `directory`; `verify` checks the files' sha256 against the manifest first."""
    return ExportedModel(directory, verify=verify)
