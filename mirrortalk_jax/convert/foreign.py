"""Reading foreign checkpoints as flat {key: numpy array} dicts, without torch where possible.

- `*.safetensors` (and Hugging Face folders holding them, sharded or not): read with `safetensors.numpy`. The shard
  names of a `model.safetensors.index.json` must be plain names of regular files in its folder (not `../x`, not
  absolute, not symbolic links: a Hugging Face cache snapshot, whose files link into `../../blobs`, is read from
  a copy with real files instead, e.g. one downloaded with `--local-dir`).
- PyTorch files (`.pt`, `.pth`, `.bin`, `.ckpt`, `.tar`): only with `torch.load(weights_only=True)`, which refuses
  pickled code; torch is the optional `[torch]` extra and its absence gives an install hint, not a traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mirrortalk_jax.runs.converted import CheckpointError
from mirrortalk_jax.safe_paths import UnsafePathError, plain_file_in

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")


class ConversionError(CheckpointError):
    """A checkpoint that cannot be converted; the message names the file/keys and what was expected."""


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConversionError(f"{path}: not a readable safetensors file ({e})") from e


INDEX_EXPECTED = 'a JSON object {"weight_map": {tensor name: shard file name in the same folder}}'


def _index_shards(index: Path) -> list[Path]:
    """The shard files model.safetensors.index.json lists: plain names of regular files next to it, since the
    index is data that comes with the download and must not lead the reader out of the folder."""
    try:
        tree = json.loads(index.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{index}: not valid JSON ({e}); expected {INDEX_EXPECTED}") from e
    weight_map = tree.get("weight_map") if isinstance(tree, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ConversionError(f"{index}: no non-empty \"weight_map\" object; expected {INDEX_EXPECTED}")
    for key, name in weight_map.items():
        if not isinstance(name, str):
            raise ConversionError(f"{index}: weight_map[{key!r}] is {name!r}; expected {INDEX_EXPECTED}")
    shards = []
    for name in sorted(set(weight_map.values())):
        try:
            shards.append(plain_file_in(index.parent, name))
        except UnsafePathError as e:
            raise ConversionError(f"{index}: shard {name!r}: {e}") from e
    return shards


def _read_folder(path: Path) -> dict[str, np.ndarray]:
    """A Hugging Face model folder: model.safetensors, or shards listed in model.safetensors.index.json."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        tensors: dict[str, np.ndarray] = {}
        for shard in _index_shards(index):
            tensors.update(_read_safetensors(shard))
        return tensors
    files = sorted(path.glob("*.safetensors"))
    if len(files) != 1:
        raise ConversionError(f"{path}: expected one *.safetensors file or model.safetensors.index.json, "
                              f"found {[f.name for f in files]}")
    return _read_safetensors(files[0])


def _descend(tree, nesting: Sequence[str], path: Path):
    for key in nesting:
        if not isinstance(tree, Mapping) or key not in tree:
            have = sorted(map(str, tree.keys())) if isinstance(tree, Mapping) else type(tree).__name__
            raise ConversionError(f"{path}: expected key {key!r} (nesting {list(nesting)}), found {have}")
        tree = tree[key]
    return tree


def _read_torch(path: Path, nesting: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise ConversionError(f"{path} is a PyTorch file: install torch to read it (pip install "
                              "'mirrortalk_jax[torch]'), or convert it to safetensors first") from e
    try:
        tree = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise ConversionError(f"{path}: torch.load(weights_only=True) refused it: {e}") from e
    tree = _descend(tree, nesting, path)
    if not isinstance(tree, Mapping):
        raise ConversionError(f"{path}: expected a state dict under {list(nesting)}, found {type(tree).__name__}")
    out = {}
    for key, value in tree.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds every bfloat16 value exactly
            value = value.float()
        out[str(key)] = value.numpy()
    return out


def read_tensors(path: str | os.PathLike, *, nesting: Sequence[str] = (),
                 torch_file: bool = False) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint file or Hugging Face folder as numpy arrays, keyed as in the source.

    `nesting`: keys leading to the state dict inside a torch file (e.g. ("model_state_dict",)); safetensors
    files are flat already and ignore it. `torch_file=True` reads a file whose name does not say it is a torch
    file (e.g. syncnet_python's `syncnet_v2.model`), still only with weights_only=True.
    """
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_folder(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix in TORCH_SUFFIXES or torch_file:
        return _read_torch(path, nesting)
    raise ConversionError(f"{path}: unknown checkpoint format {path.suffix!r}; expected .safetensors, a Hugging "
                          f"Face folder, or a PyTorch file ({', '.join(TORCH_SUFFIXES)})")


def strip_prefix(tensors: Mapping[str, np.ndarray], prefix: str, *, source: str = "checkpoint") -> dict[str, np.ndarray]:
    """Keys without `prefix`; every key must carry it (a checkpoint of another model otherwise)."""
    foreign = [k for k in tensors if not k.startswith(prefix)]
    if foreign:
        raise ConversionError(f"{source}: {len(foreign)} keys lack the prefix {prefix!r} (e.g. {foreign[:3]}); "
                              "is this a checkpoint of the expected model?")
    return {k[len(prefix):]: v for k, v in tensors.items()}
