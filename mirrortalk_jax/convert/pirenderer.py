"""PIRenderer / DreamTalk renderer checkpoints (`renderer.pt`, key `net_G_ema`) -> the `pirenderer` model.

    python tools/convert_dreamtalk.py --renderer checkpoints/renderer.pt ...     # or, from Python:
    convert_renderer("checkpoints/renderer.pt", "ckpt/pirenderer")              # released sizes
    loaded = loader.load_model("ckpt/pirenderer")
    model, config = loaded.model, loaded.model_config

The original's keys (note its spelling `warpping_net`) map to ours through the table `RULES`; torch layouts become
ours in the hooks: Conv (O, I, kh, kw) -> (kh, kw, I, O); ConvTranspose2d (I, O, kh, kw) -> (kh, kw, I, O)
*without* the flip Flax's ConvTranspose needs, because image_layers.ConvTranspose2x applies torch's taps directly;
LayerNorm2d (C, 1, 1) -> (C,). Conversion fails on any missing, unused or mis-shaped key (name_map.convert).
The fixture kind "dreamtalk_renderer" (fixtures/pirenderer.py) lets `tools/check_fixture.py` compare a reference
dump at any size.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import ml_collections
import numpy as np

from mirrortalk_jax.models import abstract
from mirrortalk_jax.convert import hooks, name_map, pipeline, foreign
from mirrortalk_jax.runs import converted
from mirrortalk_jax.convert.name_map import Rule
from mirrortalk_jax.convert.foreign import ConversionError
from mirrortalk_jax.models.pirenderer import renderer as pirenderer

NESTING = ("net_G_ema",)  # where the generator's state dict sits in renderer.pt


def _taps(weight: np.ndarray) -> np.ndarray:
    """nn.ConvTranspose2d weight (in, out, kh, kw) -> (kh, kw, in, out), torch's tap order kept."""
    return np.transpose(weight, (2, 3, 0, 1))


def _per_channel(value: np.ndarray) -> np.ndarray:
    """LayerNorm2d weight/bias (C, 1, 1) -> (C,); other shapes pass and fail the shape check."""
    return value.reshape(value.shape[0]) if value.ndim == 3 and value.shape[1:] == (1, 1) else value


def _conv(src: str, dst: str, hook=hooks.conv) -> tuple[Rule, ...]:
    return Rule(src + r"\.weight", dst + "/kernel", hook), Rule(src + r"\.bias", dst + "/bias")


def _norm(src: str, dst: str) -> tuple[Rule, ...]:
    return Rule(src + r"\.weight", dst + "/scale", _per_channel), Rule(src + r"\.bias", dst + "/bias", _per_channel)


def _adain(src: str, dst: str) -> tuple[Rule, ...]:
    return (*_conv(src + r"\.mlp_shared\.0", dst + "/shared", hooks.linear),
            *_conv(src + r"\.mlp_gamma", dst + "/gamma", hooks.linear),
            *_conv(src + r"\.mlp_beta", dst + "/beta", hooks.linear))


_HG = r"warpping_net\.hourglass\."
_ENC_BLOCK = _HG + r"encoder\.encoder(\d+)\."
_DEC_BLOCK = _HG + r"decoder\.decoder(\d+)\."
_ED = r"editing_net\.encoder\."
_DD = r"editing_net\.decoder\."

RULES: tuple[Rule, ...] = (
    # MappingNet: Conv1d(k7), then `layer` x [LeakyReLU, Conv1d(k3, dilation 3)]
    *_conv(r"mapping_net\.first\.0", "mapping_net/first"),
    *_conv(r"mapping_net\.encoder(\d+)\.1", r"mapping_net/encoder/\1"),
    # WarpingNet: AdaIN hourglass + flow head (LayerNorm2d, LeakyReLU, Conv2d)
    *_conv(_HG + r"encoder\.input_layer", "warping_net/input_layer"),
    *_conv(_ENC_BLOCK + r"(conv_[01])", r"warping_net/encoder/\1/\2"),
    *_adain(_ENC_BLOCK + r"(norm_[01])", r"warping_net/encoder/\1/\2"),
    *_conv(_DEC_BLOCK + r"(conv_0)", r"warping_net/decoder/\1/\2"),
    *_conv(_DEC_BLOCK + r"(conv_[1s])", r"warping_net/decoder/\1/\2", _taps),  # ConvTranspose2d
    *_adain(_DEC_BLOCK + r"(norm_[01s])", r"warping_net/decoder/\1/\2"),
    *_norm(r"warpping_net\.flow_out\.0", "warping_net/flow_norm"),
    *_conv(r"warpping_net\.flow_out\.2", "warping_net/flow_conv"),
    # EditingNet: FineEncoder + FineDecoder; `model.0` is the conv and `model.1` the LayerNorm2d of each block
    *_conv(_ED + r"first\.model\.0", "editing_net/first/conv"),
    *_norm(_ED + r"first\.model\.1", "editing_net/first/norm"),
    *_conv(_ED + r"down(\d+)\.model\.0", r"editing_net/down/\1/conv"),
    *_norm(_ED + r"down(\d+)\.model\.1", r"editing_net/down/\1/norm"),
    *_conv(_DD + r"res(\d+)\.res(\d+)\.(conv[12])", r"editing_net/res/\1/\2/\3"),
    *_adain(_DD + r"res(\d+)\.res(\d+)\.(norm[12])", r"editing_net/res/\1/\2/\3"),
    *_conv(_DD + r"(up|jump)(\d+)\.model\.0", r"editing_net/\1/\2/conv"),
    *_norm(_DD + r"(up|jump)(\d+)\.model\.1", r"editing_net/\1/\2/norm"),
    *_conv(_DD + r"final\.model\.0", "editing_net/final"),
)


def renderer_tensors(path: str | os.PathLike, *, nesting: tuple[str, ...] = NESTING) -> dict[str, np.ndarray]:
    """The generator's tensors of a renderer checkpoint: `renderer.pt` (state dict under `net_G_ema`, read with
    weights_only=True) or a safetensors file of that state dict. Keys as in the original (`warpping_net.*`)."""
    tensors = foreign.read_tensors(path, nesting=nesting)
    if not any(k.startswith("mapping_net.") for k in tensors):
        raise ConversionError(f"{path}: no mapping_net.* keys; is this a PIRenderer/DreamTalk renderer state dict "
                              f"(keys seen: {sorted(tensors)[:5]})?")
    return tensors


def convert_tensors(tensors: Mapping[str, np.ndarray], config: ml_collections.ConfigDict | None = None, *,
                    source: str = "renderer checkpoint") -> pirenderer.PIRenderer:
    """A `pirenderer` model (default: released sizes) holding `tensors` (validated against its variables)."""
    return pipeline.convert_model(tensors, RULES, config or pirenderer.model_config(), None, source=source)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_renderer(path: str | os.PathLike, out_dir: str | os.PathLike,
                     config: ml_collections.ConfigDict | None = None) -> Path:
    """Converts a renderer checkpoint into a converted checkpoint folder (runs.loader.load_model reads it back).

    `config`: our model config (pirenderer.model_config(renderer_conf)); default the released sizes. The
    source file's sha256 is recorded in model.json (`source_sha256`) so exports can name their origin.
    """
    path = Path(path)
    config = config or pirenderer.model_config()
    tensors = renderer_tensors(path)
    build = abstract.builder(config, None)
    variables = name_map.convert(tensors, RULES, abstract.abstract_variables(build), source=str(path))
    return converted.save(out_dir, variables, model_config=config, source=path.name,
                          extra={"source_sha256": _sha256(path) if path.is_file() else None})
