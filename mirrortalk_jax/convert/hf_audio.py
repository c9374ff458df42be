"""Hugging Face HuBERT / wav2vec 2.0 checkpoints -> `models.audio_encoders.wav2vec2.SpeechEncoder`.

One table serves both model types and both layer-norm arrangements: they share key names, and a key whose
target the config does not build (a conv bias with conv_bias=False, a GroupNorm with feat_extract_norm="layer")
is reported by `name_map.convert` like any other mismatch. Keys may carry the `hubert.` / `wav2vec2.` prefix of
the *ForCTC / *ForPreTraining checkpoints the talking-head repos load; the heads of those checkpoints (CTC
`lm_head`, the pre-training quantizer and projections) and SpecAugment's `masked_spec_embed` are consumed and
dropped. The positional conv's weight norm is read from either the legacy names in the released files
(`weight_g` / `weight_v`), the parametrization names of recent torch (`original0` / `original1`), or a plain
`weight` (split into g = per-tap norm and v = weight, which gives back the same kernel).

    python tools/convert_hf_audio.py HF_FOLDER OUT_DIR     # config.json + safetensors -> converted checkpoint
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mirrortalk_jax.convert import hooks, pipeline, foreign
from mirrortalk_jax.convert.name_map import Rule
from mirrortalk_jax.convert.foreign import ConversionError
from mirrortalk_jax.models.audio_encoders import wav2vec2 as audio_encoders

_P = r"(?:(?:hubert|wav2vec2)\.)?"  # optional base-model prefix of *ForCTC / *ForPreTraining checkpoints
_CONV = _P + r"feature_extractor\.conv_layers\.(\d+)\."
_POS = _P + r"encoder\.pos_conv_embed\.conv\."
_LAYER = _P + r"encoder\.layers\.(\d+)\."
_POS_TARGETS = ("encoder/pos_conv_embed/weight_g", "encoder/pos_conv_embed/weight_v")


def split_weight_norm(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A plain pos-conv weight (H, H/groups, k) -> (g (k, 1, 1), v (k, H/groups, H)) with g * v / |v| == weight."""
    v = hooks.conv(weight)
    return np.sqrt(np.sum(np.square(v.astype(np.float64)), axis=(1, 2), keepdims=True)).astype(weight.dtype), v


RULES = (
    Rule(_CONV + r"conv\.weight", r"feature_extractor/conv_layers/\1/conv/kernel", hooks.conv),
    Rule(_CONV + r"conv\.bias", r"feature_extractor/conv_layers/\1/conv/bias"),
    Rule(_CONV + r"layer_norm\.weight", r"feature_extractor/conv_layers/\1/layer_norm/scale"),
    Rule(_CONV + r"layer_norm\.bias", r"feature_extractor/conv_layers/\1/layer_norm/bias"),
    Rule(_P + r"feature_projection\.layer_norm\.weight", "feature_projection/layer_norm/scale"),
    Rule(_P + r"feature_projection\.layer_norm\.bias", "feature_projection/layer_norm/bias"),
    Rule(_P + r"feature_projection\.projection\.weight", "feature_projection/projection/kernel", hooks.linear),
    Rule(_P + r"feature_projection\.projection\.bias", "feature_projection/projection/bias"),
    # g (1, 1, k) -> (k, 1, 1) and v (H, H/groups, k) -> (k, H/groups, H): the conv layout hook does both.
    Rule(_POS + r"(?:weight_g|parametrizations\.weight\.original0)", _POS_TARGETS[0], hooks.conv),
    Rule(_POS + r"(?:weight_v|parametrizations\.weight\.original1)", _POS_TARGETS[1], hooks.conv),
    Rule(_POS + r"weight", _POS_TARGETS, split_weight_norm),
    Rule(_POS + r"bias", "encoder/pos_conv_embed/bias"),
    Rule(_P + r"encoder\.layer_norm\.weight", "encoder/layer_norm/scale"),
    Rule(_P + r"encoder\.layer_norm\.bias", "encoder/layer_norm/bias"),
    Rule(_LAYER + r"attention\.(q|k|v|out)_proj\.weight", r"encoder/layers/\1/attention/\2_proj/kernel", hooks.linear),
    Rule(_LAYER + r"attention\.(q|k|v|out)_proj\.bias", r"encoder/layers/\1/attention/\2_proj/bias"),
    Rule(_LAYER + r"(layer_norm|final_layer_norm)\.weight", r"encoder/layers/\1/\2/scale"),
    Rule(_LAYER + r"(layer_norm|final_layer_norm)\.bias", r"encoder/layers/\1/\2/bias"),
    Rule(_LAYER + r"feed_forward\.(intermediate_dense|output_dense)\.weight", r"encoder/layers/\1/feed_forward/\2/kernel",
         hooks.linear),
    Rule(_LAYER + r"feed_forward\.(intermediate_dense|output_dense)\.bias", r"encoder/layers/\1/feed_forward/\2/bias"),
    # Not part of the encoder: SpecAugment's mask embedding (training only) and the task heads.
    Rule(_P + r"masked_spec_embed", None),
    Rule(r"lm_head\.(?:weight|bias)", None),
    Rule(r"(?:quantizer|project_q|project_hid)\..*", None),
)


def check_prefix(tensors: Mapping[str, np.ndarray], model_type: str, source: str) -> None:
    """Refuses a checkpoint whose base-model prefix names the other model type (a HuBERT file for wav2vec2)."""
    other = [t for t in audio_encoders.MODEL_TYPES if t != model_type]
    foreign = [k for k in tensors if any(k.startswith(f"{t}.") for t in other)]
    if foreign:
        raise ConversionError(f"{source}: keys such as {foreign[:2]} belong to a {other[0]} checkpoint, but "
                              f"config.json says model_type={model_type!r}")


def read_hf_config(path: str | os.PathLike) -> dict:
    """config.json of a Hugging Face folder (or the file itself)."""
    path = Path(path)
    path = path / "config.json" if path.is_dir() else path
    if not path.is_file():
        raise ConversionError(f"{path}: missing; a Hugging Face model folder holds config.json next to the weights")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: not valid JSON ({e})") from e


def model_config(hf_config: Mapping) -> audio_encoders.ml_collections.ConfigDict:
    try:
        return audio_encoders.config_from_hf(hf_config)
    except (KeyError, ValueError) as e:
        raise ConversionError(f"config.json cannot be ported: {e}") from e


def convert(tensors: Mapping[str, np.ndarray], hf_config: Mapping, *, source: str = "checkpoint"):
    """The SpeechEncoder with the checkpoint's weights (validated: every key used, every parameter filled)."""
    config = model_config(hf_config)
    check_prefix(tensors, config.name, source)
    return pipeline.convert_model(tensors, RULES, config, None, source=source)


def convert_folder(folder: str | os.PathLike, out_dir: str | os.PathLike, *,
                   weights: str | os.PathLike | None = None) -> Path:
    """HF folder (config.json + safetensors, or `weights` = any file foreign.read_tensors reads) -> a converted
    checkpoint whose model.json holds the model config (load with runs.loader.load_model)."""
    hf_config = read_hf_config(folder)
    config = model_config(hf_config)
    source = str(weights or folder)
    tensors = foreign.read_tensors(weights or folder)
    check_prefix(tensors, config.name, source)
    return pipeline.convert_to_checkpoint(tensors, RULES, config, out_dir, None, source=source)
