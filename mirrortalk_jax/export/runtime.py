"""Runs an exported mirrortalk_jax artifact with nothing but jax and numpy.

This file imports nothing from mirrortalk_jax but its stdlib-only helper safe_paths.py: copy both next to your code
to serve an exported model without the framework (or torch), on any platform the artifact was exported for (by
default cpu, cuda and tpu).

    from runtime import load                        # or: from mirrortalk_jax.export.runtime import load
    renderer = load("exports/pirenderer")
    print(renderer.manifest["inputs"])              # names, shapes ("batch" = any size), dtypes, meanings
    out = renderer(source_image=images, driving_source=windows)   # dict of numpy arrays, e.g. out["fake_image"]

An artifact is a folder:
    manifest.json          format version, inputs/outputs (name, shape with "batch" for the symbolic batch size,
                           dtype, meaning), conventions (layout, value ranges), sha256 of each file and of the
                           checkpoint it came from, the size of each file in bytes
    computation.jaxexport  the jax.export serialization (StableHLO) of the model's apply function; its first
                           argument is the flat weight dict, the model inputs follow in manifest order
    weights.npz            the weights, keyed by parameter path; passed as an argument, not baked in, so one
                           computation serves re-trained or personalised weights of the same architecture
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

try:  # inside mirrortalk_jax: the package's one check of file names read from files
    from ..safe_paths import UnsafePathError, plain_file_in
except ImportError:  # copied out of the package (no parent package): safe_paths.py must sit next to this file
    try:
        from safe_paths import UnsafePathError, plain_file_in
    except ImportError as e:
        raise ImportError("runtime.py needs safe_paths.py (from the mirrortalk_jax package) next to it") from e

FORMAT = "mirrortalk_jax.export/1"
BATCH = "batch"  # the symbolic batch dimension's name in manifest shapes
MANIFEST = "manifest.json"
# Generous caps, so a damaged or hostile artifact cannot make the loader read without bound; raise them for
# larger models. Artifacts whose manifest records no file sizes (written before sizes were) get only the caps.
MAX_FILE_BYTES = 16 << 30  # one computation or weights file (and the weights' unpacked tensors together)
MAX_MANIFEST_BYTES = 16 << 20


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
        self.manifest: dict[str, Any] = _read_manifest(self.directory)
        where = self.directory / MANIFEST
        computation = _artifact_file(self.directory, self.manifest, "computation")
        weights = _artifact_file(self.directory, self.manifest, "weights")
        _field(self.manifest, "computation.platforms", list, where)
        count = _field(self.manifest, "weights.count", int, where)
        for part in ("inputs", "outputs"):
            _tensor_specs(self.manifest, part, where)
        serialized = _read_exactly(computation)
        if verify:
            computation.verify(hashlib.sha256(serialized).hexdigest())
            weights.verify(file_sha256(weights.path))
        self.exported = jax.export.deserialize(bytearray(serialized))
        self.weights = _load_weights(weights.path)
        if len(self.weights) != count:
            raise ArtifactError(f"{weights.path.name}: {len(self.weights)} tensors, the manifest lists {count}")
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


@dataclasses.dataclass(frozen=True)
class _File:
    """One file the manifest names, already checked to be a regular file inside the artifact of a sane size."""

    path: Path
    size: int
    sha256: str

    def verify(self, digest: str) -> None:
        if digest != self.sha256:
            raise ArtifactError(f"{self.path}: sha256 differs from the manifest's (corrupted or replaced file)")


def _field(manifest: dict[str, Any], key: str, kind: type, where: Path) -> Any:
    """manifest["a"][0]["b"] for key "a.0.b", of type `kind` (bool is no int here); ArtifactError naming the key."""
    value: Any = manifest
    for part in key.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise ArtifactError(f"{where}: missing key {key!r} (incomplete or hand-edited manifest)")
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ArtifactError(f"{where}: {key!r} is {value!r}, expected a {kind.__name__}")
    return value


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not os.path.lexists(path):
        raise ArtifactError(f"{path} is missing: {directory} is not an exported artifact")
    try:
        plain_file_in(directory, MANIFEST)
    except UnsafePathError as e:
        raise ArtifactError(str(e)) from e
    with open(path, "rb") as f:
        text = f.read(MAX_MANIFEST_BYTES + 1)
    if len(text) > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"{path}: more than MAX_MANIFEST_BYTES ({MAX_MANIFEST_BYTES}), not a manifest")
    try:
        manifest = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: format {manifest.get('format')!r}; this runtime reads {FORMAT!r}")
    return manifest


def _artifact_file(directory: Path, manifest: dict[str, Any], part: str) -> _File:
    """The file of manifest[part]: a plain name of a regular file in `directory`, of the recorded size (if the
    manifest records one) and at most MAX_FILE_BYTES, all checked before it is opened."""
    where = directory / MANIFEST
    name = _field(manifest, f"{part}.file", str, where)
    sha256 = _field(manifest, f"{part}.sha256", str, where)
    try:
        path = plain_file_in(directory, name)
    except UnsafePathError as e:
        raise ArtifactError(f"{where}: {part}.file: {e}") from e
    size = os.lstat(path).st_size
    recorded = _field(manifest, f"{part}.size", int, where) if "size" in manifest[part] else size
    if recorded != size:
        raise ArtifactError(f"{path}: {size} bytes, the manifest records {recorded} "
                            "(truncated, replaced or corrupted file)")
    if size > MAX_FILE_BYTES:
        raise ArtifactError(f"{path}: {size} bytes, more than MAX_FILE_BYTES ({MAX_FILE_BYTES})")
    return _File(path, size, sha256)


def _tensor_specs(manifest: dict[str, Any], part: str, where: Path) -> None:
    """manifest[part] lists {name, shape, dtype} objects, so calls never meet a KeyError."""
    for i in range(len(_field(manifest, part, list, where))):
        for key, kind in (("name", str), ("shape", list), ("dtype", str)):
            _field(manifest, f"{part}.{i}.{key}", kind, where)


def _read_exactly(file: _File) -> bytes:
    """The file's bytes, no more than its checked size (it may have grown since it was checked)."""
    with open(file.path, "rb") as f:
        data = f.read(file.size + 1)
    if len(data) != file.size:
        raise ArtifactError(f"{file.path}: changed size while being read ({len(data)} bytes, expected {file.size})")
    return data


def _load_weights(path: Path) -> dict[str, jax.Array]:
    # An .npz is a zip: its members' unpacked sizes may exceed the file's own (compression), so they are capped
    # too before numpy unpacks them.
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile as e:
        raise ArtifactError(f"{path}: not an .npz (zip) file ({e})") from e
    if unpacked > MAX_FILE_BYTES:
        raise ArtifactError(f"{path}: tensors of {unpacked} bytes, more than MAX_FILE_BYTES ({MAX_FILE_BYTES})")
    with np.load(path) as npz:
        return {name: jnp.asarray(npz[name]) for name in npz.files}


def load(directory: str | os.PathLike, *, verify: bool = True) -> ExportedModel:
    """The artifact in `directory`; `verify` checks the files' sha256 against the manifest first."""
    return ExportedModel(directory, verify=verify)
