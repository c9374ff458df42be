"""syncnet_python `syncnet_v2.model` (a flat state dict of `SyncNetModel.S`) -> models.syncnet.model.SyncNet.

    tensors = foreign.read_tensors("syncnet_v2.model")           # torch file (weights_only=True) or safetensors
    model = pipeline.convert_model(tensors, RULES, configs.released.syncnet.get_config("released").model)

Source keys are `netcnnaud.<i>.*`, `netcnnlip.<i>.*` (i = position in the original nn.Sequential: conv at i, its
BatchNorm at i + 1) and `netfcaud.{0,1,3}.*`, `netfclip.{0,1,3}.*`. The table below is generated from the tower
layouts in models/syncnet/model.py, so the name map and the architecture cannot drift apart. BatchNorm
`num_batches_tracked` counters are consumed and dropped (inference needs only the running statistics); the
original's loader tolerates files without them, and so does this map (a rule with no target needs no key).

Its fixture kind "syncnet" (fixtures/syncnet.py, tools/check_fixture.py) builds the model at the
widths the fixture's config.json names and compares every output of its io.npz (tower outputs, MFCC, window
embeddings, distances, offsets, confidences).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import ml_collections
import numpy as np

from mirrortalk_jax.convert import hooks, pipeline, foreign
from mirrortalk_jax.convert.name_map import Rule
from mirrortalk_jax.models.syncnet import model as syncnet


def _tower_rules(source: str, target: str, specs: tuple[syncnet.ConvSpec, ...]) -> tuple[Rule, ...]:
    rules = []
    for k, spec in enumerate(specs):
        conv, norm, ours = rf"{source}\.{spec.index}\.", rf"{source}\.{spec.index + 1}\.", f"{target}/blocks/{k}"
        rules += [Rule(conv + "weight", f"{ours}/conv/kernel", hooks.conv),
                  Rule(conv + "bias", f"{ours}/conv/bias")]
        rules += _norm_rules(norm, f"{ours}/norm")
    return tuple(rules)


def _norm_rules(source: str, target: str) -> list[Rule]:
    return [Rule(source + "weight", f"{target}/scale"), Rule(source + "bias", f"{target}/bias"),
            Rule(source + "running_mean", f"{target}/mean"), Rule(source + "running_var", f"{target}/var"),
            Rule(source + "num_batches_tracked", None)]


def _head_rules(source: str, target: str) -> tuple[Rule, ...]:
    return (Rule(rf"{source}\.0\.weight", f"{target}/fc1/kernel", hooks.linear),
            Rule(rf"{source}\.0\.bias", f"{target}/fc1/bias"),
            *_norm_rules(rf"{source}\.1\.", f"{target}/norm"),
            Rule(rf"{source}\.3\.weight", f"{target}/fc2/kernel", hooks.linear),
            Rule(rf"{source}\.3\.bias", f"{target}/fc2/bias"))


RULES: tuple[Rule, ...] = (
    *_tower_rules("netcnnaud", "audio_cnn", syncnet.AUDIO_TOWER),
    *_head_rules("netfcaud", "audio_fc"),
    *_tower_rules("netcnnlip", "lip_cnn", syncnet.LIP_TOWER),
    *_head_rules("netfclip", "lip_fc"),
)


def model_config(num_layers_in_fc_layers: int = 1024, width_divisor: int = 1,
                 precision: str = "highest") -> ml_collections.ConfigDict:
    """The registry config of a SyncNet of the given size (mirrortalk_jax/configs/released/syncnet.py holds the named variants)."""
    return ml_collections.ConfigDict({"name": "syncnet", "num_layers_in_fc_layers": int(num_layers_in_fc_layers),
                                      "width_divisor": int(width_divisor), "precision": precision})


def read_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """The state dict of `syncnet_v2.model` (torch, read with weights_only=True) or a safetensors export of it.

    A `.model` file is read as a torch file (the release's name); other names go by suffix (foreign.read_tensors).

    syncnet_python saves the flat state dict without a prefix; a `module.` prefix (DataParallel) is stripped.
    """
    tensors = foreign.read_tensors(path, torch_file=Path(path).suffix == ".model")  # the release's file name
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = foreign.strip_prefix(tensors, "module.", source=str(path))
    return tensors


def convert_model(tensors: Mapping[str, np.ndarray], config: ml_collections.ConfigDict, *,
                  source: str = "checkpoint") -> syncnet.SyncNet:
    """The SyncNet of `config` (a model config, e.g. mirrortalk_jax/configs/released/syncnet.py's `.model`) with `tensors` (validated)."""
    return pipeline.convert_model(tensors, RULES, config, None, source=source)


def convert_checkpoint(path: str | Path, out_dir: str | Path, config: ml_collections.ConfigDict) -> Path:
    """`syncnet_v2.model` (or its safetensors export) -> a converted checkpoint (runs.loader.load_model reads it).

    Raises ConversionError naming every missing, unused or mis-shaped tensor when the file does not fit `config`.
    """
    tensors = read_checkpoint(path)
    return pipeline.convert_to_checkpoint(tensors, RULES, config, out_dir, None, source=Path(path).name)
