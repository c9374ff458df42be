"""torchvision `vgg19` state dicts (`vgg19-dcbb9e9d.pth`) -> models.vgg.vgg19.VGG19Features.

    tensors = vgg.read_checkpoint("vgg19-dcbb9e9d.pth")           # torch file (weights_only=True) or safetensors
    model = vgg.convert_model(tensors, configs.released.vgg19.get_config("released").model)
    vgg.convert_checkpoint("vgg19-dcbb9e9d.pth", "ckpt/vgg19", config)   # runs.loader.load_model reads it

Source keys are `features.<i>.weight` / `features.<i>.bias`, i = the conv's index in torchvision's nn.Sequential
(0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34); they map to `convs/<k>/kernel` (OIHW -> HWIO) and
`convs/<k>/bias`, k = 0..15. The table is generated from models/vgg/vgg19.py's ARCHITECTURE, so the name map and
the architecture cannot drift apart. `classifier.*` (the ImageNet head, unused by a feature network) is consumed
and dropped; a file without it (a saved `vgg19().features`, keys `features.*`) converts as well, and so does one
whose keys all carry `module.` (DataParallel). Any other missing, unused or mis-shaped tensor raises one
ConversionError naming each (a missing tensor both by our parameter path and by its torchvision key).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import ml_collections
import numpy as np

from mirrortalk_jax.convert import foreign, hooks, pipeline
from mirrortalk_jax.convert.name_map import Rule
from mirrortalk_jax.models.vgg import vgg19

RULES: tuple[Rule, ...] = tuple(
    rule for k, spec in enumerate(vgg19.ARCHITECTURE)
    for rule in (Rule(rf"features\.{spec.index}\.weight", f"convs/{k}/kernel", hooks.conv),
                 Rule(rf"features\.{spec.index}\.bias", f"convs/{k}/bias"))
) + (Rule(r"classifier\..*", None),)  # the ImageNet classifier: not part of the features
# Every tensor a torchvision vgg19 file must hold (32: a weight and a bias per conv), in ARCHITECTURE order.
FEATURE_KEYS: tuple[str, ...] = tuple(f"features.{spec.index}.{kind}" for spec in vgg19.ARCHITECTURE
                                      for kind in ("weight", "bias"))
_T = TypeVar("_T")


def _naming_missing_keys(tensors: Mapping[str, np.ndarray], convert: Callable[[], _T]) -> _T:
    """`convert()`; its ConversionError, when torchvision keys are missing, also lists them by their own names."""
    try:
        return convert()
    except foreign.ConversionError as e:
        missing = [k for k in FEATURE_KEYS if k not in tensors]
        if not missing:
            raise
        raise foreign.ConversionError(f"{e}\n  torchvision vgg19 keys missing ({len(missing)}): "
                                      + ", ".join(missing)) from e


def model_config(channels=vgg19.RELEASED_CHANNELS, layers=vgg19.DEFAULT_LAYERS,
                 precision: str = "highest") -> ml_collections.ConfigDict:
    """The registry config of a VGG19 feature network (mirrortalk_jax/configs/released/vgg19.py holds the named
    variants)."""
    return ml_collections.ConfigDict({"name": "vgg19", "channels": tuple(int(c) for c in channels),
                                      "layers": vgg19.check_layers(layers), "precision": precision})


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The state dict of torchvision's `vgg19-dcbb9e9d.pth` (torch, read with weights_only=True; needs the `torch`
    extra) or of a safetensors file holding the same keys. A `module.` prefix (DataParallel) is stripped."""
    tensors = foreign.read_tensors(path)
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = foreign.strip_prefix(tensors, "module.", source=str(path))
    return tensors


def convert_model(tensors: Mapping[str, np.ndarray], config: ml_collections.ConfigDict, *,
                  source: str = "checkpoint") -> vgg19.VGG19Features:
    """The VGG19Features of `config` (a model config, e.g. configs/released/vgg19.py's `.model`) with `tensors`
    (validated)."""
    return _naming_missing_keys(tensors, lambda: pipeline.convert_model(tensors, RULES, config, None, source=source))


def convert_checkpoint(path: str | os.PathLike, out_dir: str | os.PathLike,
                       config: ml_collections.ConfigDict) -> Path:
    """torchvision's vgg19 weights (or a safetensors export) -> a converted checkpoint folder that
    `runs.loader.load_model` reads (its model config, `layers` included, is stored with it).

    Raises ConversionError naming every missing, unused or mis-shaped tensor when the file does not fit `config`;
    nothing is written then.
    """
    vgg19.check_layers(config.get("layers", vgg19.DEFAULT_LAYERS))  # before reading anything
    tensors = read_checkpoint(path)
    return _naming_missing_keys(tensors, lambda: pipeline.convert_to_checkpoint(
        tensors, RULES, config, out_dir, None, source=Path(path).name))
