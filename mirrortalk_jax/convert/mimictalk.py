"""MimicTalk ICS-A2M checkpoints (`InContextAudio2MotionModel`) -> models.mimictalk.a2m.MimicTalkA2M.

    tensors = read_checkpoint("checkpoints/240112_icl_audio2secc_vox2_cmlr/model_ckpt_steps_N.ckpt")
    model = pipeline.convert_model(tensors, rules(config), config)      # config: config_from_tensors(tensors)

The release is a `torch.save` dict; the weights are `ckpt['state_dict']['model']` (the repo's loader also
accepts a flat `state_dict` with `model.`-prefixed keys; both are read here, torch files with
weights_only=True). Transformer keys sit under `backbone.icl_transformer_model.` (mode `icl_flow_matching`,
the released model) or directly under `backbone.` (mode `icl_transformer`); one table serves both.

Layout changes (all in `rules`): Linear (out, in) -> kernel (in, out); Conv1d (out, in/groups, k) -> (k, in/groups,
out); the fused `to_qkv` (3 * heads * dim_head, D) -> (D, 3, heads, dim_head) (chunks q|k|v, head-major, as the
original's rearrange); `to_out` (D, heads * dim_head) -> (heads, dim_head, D); the GEGLU input Linear (2I, D) ->
(D, 2, I) ([value | gate] halves); q/k RMSNorm gains (heads, 1, dim_head) -> (heads, dim_head). The RoPE
`inv_freq` buffer is checked against the config and kept (its exact bits matter); BatchNorm `num_batches_tracked` is dropped.

Its fixture kind "mimictalk_icl_a2m" (fixtures/mimictalk.py, tools/check_fixture.py) is built from the fixture's
config.json, so reference dumps of any size or seed check the port.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import ml_collections
import numpy as np

from mirrortalk_jax.convert import hooks, pipeline, foreign
from mirrortalk_jax.convert.name_map import Rule
from mirrortalk_jax.models.mimictalk import icl_transformer

FLOW_PREFIX = "backbone.icl_transformer_model."  # mode icl_flow_matching (the released checkpoint)
TRANSFORMER_PREFIX = "backbone."  # mode icl_transformer
_P = r"backbone\.(?:icl_transformer_model\.)?"
_LAYER = _P + r"transformer\.layers\.(\d+)\."


def _conv_bn(source: str, target: str) -> tuple[Rule, ...]:
    """nn.Sequential(Conv1d, BatchNorm1d, GELU, Conv1d) at indices 0, 1, 3."""
    s = re.escape(source)
    return (Rule(rf"{s}\.0\.weight", f"{target}/conv_in/kernel", hooks.conv),
            Rule(rf"{s}\.1\.weight", f"{target}/norm/scale"), Rule(rf"{s}\.1\.bias", f"{target}/norm/bias"),
            Rule(rf"{s}\.1\.running_mean", f"{target}/norm/mean"), Rule(rf"{s}\.1\.running_var", f"{target}/norm/var"),
            Rule(rf"{s}\.1\.num_batches_tracked", None),
            Rule(rf"{s}\.3\.weight", f"{target}/conv_out/kernel", hooks.conv))


def _layout(name: str, *shape: int, transpose: bool = False):
    """Hook: (transposed, for Linear weights) tensor -> `shape`; a tensor of another size is a ConversionError
    naming it (a checkpoint of another width or head count), not a numpy error."""
    def hook(value: np.ndarray) -> np.ndarray:
        value = hooks.linear(value) if transpose else value
        if value.size != int(np.prod(shape)):
            raise foreign.ConversionError(f"{name} of shape {tuple(value.shape)} cannot be laid out as {shape}: "
                                          "the checkpoint's heads/widths differ from the model config")
        return value.reshape(shape)
    return hook


def _inv_freq_hook(expected: np.ndarray):
    """Keeps the checkpoint's RoPE `inv_freq` (its last bits matter at position -10000), after checking it against
    the config. An all-zero tensor is a key/shape manifest's stand-in (name_map.check_manifest; a real buffer
    starts with 1 / theta^0 = 1): only its shape is checked then."""
    check = hooks.expect(lambda: expected, "rotary_emb.inv_freq", keep=True)

    def hook(value: np.ndarray) -> np.ndarray:
        if value.shape != expected.shape:
            raise foreign.ConversionError(f"rotary_emb.inv_freq of shape {tuple(value.shape)}, the config implies "
                                          f"{expected.shape}: the checkpoint's dim_head differs from the config")
        return np.asarray(value, np.float32) if not np.any(value) else check(value)
    return hook


def rules(config: ml_collections.ConfigDict) -> tuple[Rule, ...]:
    """The name map for a model config (head/FF sizes shape the reshapes; the RoPE buffer is checked)."""
    h, d, dim = int(config.heads), int(config.dim_head), int(config.dim)
    inner = int(dim * float(config.ff_mult) * 2 / 3)
    inv_freq = icl_transformer.rope_inv_freq(d, float(config.rope_theta))
    v, layer = "velocity/", r"velocity/layers/\1/"
    return (
        *_conv_bn("hubert_encoder", "audio_encoder"),
        *_conv_bn("pitch_encoder", "pitch_encoder"),
        Rule(r"(pitch_embed|blink_embed)\.weight", r"\1"),
        Rule(r"(null_blink_embed|mouth_amp_embed|null_mouth_amp_embed)", r"\1"),
        Rule(_P + r"null_cond", v + "null_cond"),
        Rule(_P + r"sinu_pos_emb\.0\.weights", v + "time_weights"),
        Rule(_P + r"sinu_pos_emb\.1\.weight", v + "time_mlp/kernel", hooks.linear),
        Rule(_P + r"sinu_pos_emb\.1\.bias", v + "time_mlp/bias"),
        Rule(_P + r"(to_cond_emb|to_embed)\.weight", v + r"\1/kernel", hooks.linear),
        Rule(_P + r"(to_cond_emb|to_embed)\.bias", v + r"\1/bias"),
        Rule(_P + r"conv_embed\.dw_conv1d\.0\.weight", v + "conv_embed/kernel", hooks.conv),
        Rule(_P + r"conv_embed\.dw_conv1d\.0\.bias", v + "conv_embed/bias"),
        Rule(_P + r"transformer\.register_tokens", v + "register_tokens"),
        Rule(_P + r"transformer\.rotary_emb\.inv_freq", v + "rope_inv_freq", _inv_freq_hook(inv_freq)),
        Rule(_LAYER + r"2\.(to_gamma|to_beta)\.weight", layer + r"attn_norm/\2/kernel", hooks.linear),
        Rule(_LAYER + r"2\.(to_gamma|to_beta)\.bias", layer + r"attn_norm/\2/bias"),
        Rule(_LAYER + r"3\.q_norm\.gamma", layer + "attn/q_gamma", _layout("q_norm.gamma", h, d)),
        Rule(_LAYER + r"3\.k_norm\.gamma", layer + "attn/k_gamma", _layout("k_norm.gamma", h, d)),
        Rule(_LAYER + r"3\.to_qkv\.weight", layer + "attn/wqkv", _layout("to_qkv.weight", dim, 3, h, d, transpose=True)),
        Rule(_LAYER + r"3\.to_out\.weight", layer + "attn/wo", _layout("to_out.weight", h, d, dim, transpose=True)),
        Rule(_LAYER + r"4\.(to_gamma|to_beta)\.weight", layer + r"ff_norm/\2/kernel", hooks.linear),
        Rule(_LAYER + r"4\.(to_gamma|to_beta)\.bias", layer + r"ff_norm/\2/bias"),
        Rule(_LAYER + r"5\.0\.weight", layer + "ff/up", _layout("5.0.weight", dim, 2, inner, transpose=True)),
        Rule(_LAYER + r"5\.0\.bias", layer + "ff/up_bias", _layout("5.0.bias", 2, inner)),
        Rule(_LAYER + r"5\.3\.weight", layer + "ff/down/kernel", hooks.linear),
        Rule(_LAYER + r"5\.3\.bias", layer + "ff/down/bias"),
        Rule(_P + r"transformer\.final_norm\.gamma", v + "final_norm"),
        Rule(_P + r"to_pred\.weight", v + "to_pred/kernel", hooks.linear),
    )


def model_config(**fields) -> ml_collections.ConfigDict:
    """A registry config of the original architecture; defaults = the released checkpoint without aux features."""
    config = {"name": "mimictalk_a2m", "mode": "icl_flow_matching", "motion_dim": 64, "audio_in_dim": 1024,
              "audio_rate": 2, "audio_width": 256, "use_aux_features": False, "aux_dim": 32, "pitch_bins": 300,
              "dim": 256, "depth": 16, "heads": 8, "dim_head": 64, "ff_mult": 4.0, "time_hidden_dim": 1024,
              "conv_kernel": 31, "num_registers": 16, "register_position": -10000, "rope_theta": 50000.0,
              "logit_scale": 10.0}
    unknown = set(fields) - set(config)
    if unknown:
        raise ValueError(f"unknown MimicTalk model fields {sorted(unknown)}")
    config.update(fields)
    return ml_collections.ConfigDict(config)


def config_from_tensors(tensors: Mapping[str, np.ndarray], **overrides) -> ml_collections.ConfigDict:
    """The architecture a state dict holds, read from its shapes (mode, widths, depth, heads, aux features).

    What the shapes cannot tell keeps the original's constants (audio_rate 2 for 50 Hz HuBERT, register
    position -10000, logit scale 10); the RoPE theta is read from the stored `inv_freq` buffer (the original's
    is 50000); `overrides` set any field.
    """
    prefix = FLOW_PREFIX if any(k.startswith(FLOW_PREFIX) for k in tensors) else TRANSFORMER_PREFIX

    def shape(key: str) -> tuple[int, ...]:
        if key not in tensors:
            raise foreign.ConversionError(f"{key} is missing: not a MimicTalk audio-to-motion checkpoint")
        return tuple(tensors[key].shape)

    width, audio_in, _ = shape("hubert_encoder.0.weight")
    dim, three_m = shape(prefix + "to_embed.weight")
    heads, _, dim_head = shape(prefix + "transformer.layers.0.3.q_norm.gamma")
    _, inner = shape(prefix + "transformer.layers.0.5.3.weight")
    layer_key = re.compile(re.escape(prefix) + r"transformer\.layers\.(\d+)\.")
    layers = {int(m.group(1)) for k in tensors if (m := layer_key.match(k))}
    registers = prefix + "transformer.register_tokens"  # absent when the original had num_register_tokens = 0
    fields = {"mode": "icl_flow_matching" if prefix == FLOW_PREFIX else "icl_transformer",
              "motion_dim": three_m // 3, "audio_in_dim": audio_in, "audio_width": width, "dim": dim,
              "depth": len(layers), "heads": heads, "dim_head": dim_head,
              "time_hidden_dim": shape(prefix + "sinu_pos_emb.1.weight")[0],
              "conv_kernel": shape(prefix + "conv_embed.dw_conv1d.0.weight")[-1],
              "num_registers": int(tensors[registers].shape[0]) if registers in tensors else 0,
              "ff_mult": 4.0 if int(dim * 4 * 2 / 3) == inner else inner * 3 / (2 * dim),
              "use_aux_features": "pitch_embed.weight" in tensors}
    if fields["use_aux_features"]:
        fields["pitch_bins"], fields["aux_dim"] = shape("pitch_embed.weight")
    inv_freq = tensors.get(prefix + "transformer.rotary_emb.inv_freq")
    inv = None if inv_freq is None else np.asarray(inv_freq, np.float64).ravel()
    if inv is not None and inv.size >= 2 and np.all((inv > 0) & (inv <= 1)):  # (not a manifest's zero stand-in)
        # entry j is 1 / theta^(2j / dim_head); the last one pins theta down best (to ~1e-7, the float32 pow's
        # error); a round value (the original's 50000) is preferred when it reproduces the buffer as well
        theta = float(inv[-1] ** (-dim_head / (2 * (inv.size - 1))))
        fields["rope_theta"] = next((t for t in (float(f"{theta:.5g}"), float(f"{theta:.6g}"))
                                     if np.allclose(icl_transformer.rope_inv_freq(dim_head, t), inv, rtol=1e-6,
                                                    atol=1e-7)), theta)
    fields.update(overrides)
    return model_config(**fields)


def read_checkpoint(path: str | Path, *, ignore: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The model's state dict from a release `.ckpt` (torch, weights_only=True) or a safetensors export.

    Accepts ckpt['state_dict']['model'] and a flat ckpt['state_dict'] with `model.` keys (the repo's loader takes
    both); a `model.` prefix on every key of a safetensors file is stripped too. `ignore`: regexes of keys to
    drop first (e.g. a sync expert saved inside the model).
    """
    path = Path(path)
    if path.suffix in foreign.TORCH_SUFFIXES:
        try:
            tensors = foreign.read_tensors(path, nesting=("state_dict", "model"))
        except foreign.ConversionError as e:
            if "expected key 'model'" not in str(e):
                raise
            flat = foreign.read_tensors(path, nesting=("state_dict",))
            tensors = foreign.strip_prefix({k: t for k, t in flat.items() if k.startswith("model.")}, "model.",
                                           source=str(path))
    else:
        tensors = foreign.read_tensors(path)
    if tensors and all(k.startswith("model.") for k in tensors):
        tensors = foreign.strip_prefix(tensors, "model.", source=str(path))
    dropped = [re.compile(p) for p in ignore]
    return {k: t for k, t in tensors.items() if not any(p.fullmatch(k) for p in dropped)}


def convert_checkpoint(path: str | Path, out_dir: str | Path, config: ml_collections.ConfigDict | None = None, *,
                       ignore: Sequence[str] = ()) -> tuple[Path, ml_collections.ConfigDict]:
    """A release checkpoint -> a converted checkpoint folder (runs.loader.load_model reads it).

    Without `config` the architecture is read from the file (config_from_tensors). Raises ConversionError
    naming every missing, unused or mis-shaped tensor when the file does not fit.
    """
    tensors = read_checkpoint(path, ignore=ignore)
    config = config if config is not None else config_from_tensors(tensors)
    return pipeline.convert_to_checkpoint(tensors, rules(config), config, out_dir, None, source=Path(path).name), config
