"""DreamTalk's denoiser checkpoint (`checkpoints/denoising_network.pth`) -> models.dreamtalk.denoiser.DreamTalk.

    tensors = read_denoiser("denoising_network.pth")          # torch (weights_only=True) or a safetensors export
    model = convert_model(tensors, mirrortalk_jax.configs.dreamtalk.get_config("released").model)

The file is a dict whose `model_state_dict` holds `diff_net.*` keys (the original loader keeps only those, strips
the prefix and loads `DiffusionNet` strictly); here every `diff_net.net.*` parameter lands under `net/` of our
model. Layouts: nn.Linear (out, in) -> kernel (in, out); nn.MultiheadAttention's in_proj (3D, D) rows [q; k; v]
-> (D, 3, D); LayerNorm weight -> scale. Buffers are consumed and checked against what our config computes:
the variance schedule (`var_sched.*`, 1001 entries), the null style clip and mask, and the sinusoid tables
(`*.pos_embed.pos_table`); a mismatch means the checkpoint was made with other settings than the config.

Its fixture kind "dreamtalk_denoiser" (fixtures/dreamtalk.py, tools/check_fixture.py) builds the model at
the sizes the fixture's config.json names and compares forwards (outputs and intermediates, the plain and
the cached sampling path), the audio windows and complete DDIM runs (fast sampler, chunked sampler, and the
literal transcription of the original loop with its per-step traces).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import ml_collections
import numpy as np

from mirrortalk_jax.convert import hooks, pipeline, foreign
from mirrortalk_jax.convert.name_map import Rule
from mirrortalk_jax.convert.foreign import ConversionError
from mirrortalk_jax.models.nn import torch_compat
from mirrortalk_jax.models.dreamtalk.net import dims_from_config
from mirrortalk_jax.objectives.dreamtalk import variance_schedule

PREFIX = "diff_net."
NESTING = ("model_state_dict",)


def in_proj_weight(weight: np.ndarray) -> np.ndarray:
    """nn.MultiheadAttention in_proj_weight (3D, D), rows [q; k; v] -> (D_in, 3, D_out)."""
    d = weight.shape[1]
    if weight.shape[0] != 3 * d:
        raise ConversionError(f"in_proj_weight of shape {weight.shape} is not (3D, D)")
    return np.transpose(weight.reshape(3, d, d), (2, 0, 1))


def in_proj_bias(bias: np.ndarray) -> np.ndarray:
    """(3D,) -> (3, D)."""
    if bias.shape[0] % 3:
        raise ConversionError(f"in_proj_bias of shape {bias.shape} does not split into [q; k; v]")
    return bias.reshape(3, -1)


def _linear(source: str, target: str) -> tuple[Rule, ...]:
    return (Rule(source + r"\.weight", target + "/kernel", hooks.linear), Rule(source + r"\.bias", target + "/bias"))


def _norm(source: str, target: str) -> tuple[Rule, ...]:
    return (Rule(source + r"\.weight", target + "/scale"), Rule(source + r"\.bias", target + "/bias"))


def _attention(source: str, target: str) -> tuple[Rule, ...]:
    return (Rule(source + r"\.in_proj_weight", target + "/in_proj", in_proj_weight),
            Rule(source + r"\.in_proj_bias", target + "/in_proj_bias", in_proj_bias),
            *_linear(source + r"\.out_proj", target + "/out_proj"))


def _layer(source: str, target: str, cross: bool) -> tuple[Rule, ...]:
    """One post/pre-norm transformer layer (encoder, or decoder with `cross`)."""
    return (*_attention(source + r"\.self_attn", target + "/self_attn"),
            *(_attention(source + r"\.multihead_attn", target + "/multihead_attn") if cross else ()),
            *_linear(source + r"\.linear1", target + "/ffn/linear1"),
            *_linear(source + r"\.linear2", target + "/ffn/linear2"),
            *(r for i in ((1, 2, 3) if cross else (1, 2)) for r in _norm(source + rf"\.norm{i}", target + f"/norm{i}")))


def _sequential(source: str, target: str, torch_indices: tuple[int, ...]) -> tuple[Rule, ...]:
    """nn.Sequential of Linears with activations between: torch index -> our list position."""
    return tuple(r for ours, theirs in enumerate(torch_indices)
                 for r in _linear(rf"{source}\.{theirs}", f"{target}/{ours}"))


_ENC = r"net\.(content_encoder|style_encoder)\.encoder"
_DEC = r"net\.decoder\.(upper|lower)_decoder"

# Every parameter of the released layout (after stripping `diff_net.`).
PARAM_RULES: tuple[Rule, ...] = (
    *_linear(r"net\.(content_encoder|style_encoder)\.increase_embed_dim", r"net/\1/increase_embed_dim"),
    *_layer(_ENC + r"\.layers\.(\d+)", r"net/\1/encoder/layers/\2", cross=False),
    *_norm(_ENC + r"\.norm", r"net/\1/encoder/norm"),  # pre-norm encoders only
    *_linear(r"net\.style_encoder\.aggregate_method\.W\.0", "net/style_encoder/pool_hidden"),
    *_linear(r"net\.style_encoder\.aggregate_method\.W\.2", "net/style_encoder/pool_score"),
    *_layer(_DEC + r"\.layers\.(\d+)", r"net/decoder/\1_decoder/layers/\2", cross=True),
    *_norm(_DEC + r"\.norm", r"net/decoder/\1_decoder/norm"),
    *_sequential(r"net\.decoder\.upper_tail_fc", "net/decoder/upper_tail_fc/layers", (0, 2, 4)),
    *_sequential(r"net\.decoder\.lower_tail_fc", "net/decoder/lower_tail_fc/layers", (0, 2, 4)),
    *_sequential(r"net\.content_xt_to_decoder_input_wo_time", "net/fusion", (0, 2, 4)),
    *_sequential(r"net\.time_embed_net", "net/time_embed", (0, 2)),
)


def buffer_rules(model_config: ml_collections.ConfigDict) -> tuple[Rule, ...]:
    """Rules consuming the checkpoint's buffers, each checked against what `model_config` implies."""

    dims = dims_from_config(model_config)
    d = model_config.diffusion
    schedule = variance_schedule(int(d.num_steps), float(d.beta_1), float(d.beta_T))
    rules = [Rule(rf"var_sched\.{name}", None, hooks.expect(lambda v=value: v, f"var_sched.{name}"))
             for name, value in schedule.buffers().items()]
    null_clip = np.zeros((dims.style_max_len, dims.motion_dim), np.float32)
    rules += [Rule(r"null_style_clip", None, hooks.expect(lambda: null_clip, "null_style_clip")),
              Rule(r"null_pad_mask", None, hooks.expect(lambda: np.zeros(dims.style_max_len, bool), "null_pad_mask"))]
    for name, stack in (("content_encoder", dims.content), ("style_encoder", dims.style), ("decoder", dims.decoder)):
        table = torch_compat.sinusoid_table(stack.pos_embed_len, dims.d_model)[None]
        rules.append(Rule(rf"net\.{name}\.pos_embed\.pos_table", None,
                          hooks.expect(lambda t=table: t, f"net.{name}.pos_embed.pos_table")))
    return tuple(rules)


def rules(model_config: ml_collections.ConfigDict) -> tuple[Rule, ...]:
    return buffer_rules(model_config) + PARAM_RULES


def read_denoiser(path: str | Path) -> dict[str, np.ndarray]:
    """The `diff_net.` tensors of a denoiser checkpoint, prefix stripped (other prefixes are ignored, as the
    original's loader does); a torch file is read from `model_state_dict` with weights_only=True."""
    tensors = foreign.read_tensors(path, nesting=NESTING)
    mine = {k: v for k, v in tensors.items() if k.startswith(PREFIX)}
    if not mine:
        raise ConversionError(f"{path}: no key starts with {PREFIX!r} (found e.g. {sorted(tensors)[:3]}); "
                              "is this DreamTalk's denoising_network.pth?")
    return foreign.strip_prefix(mine, PREFIX, source=str(path))


def convert_model(tensors: Mapping[str, np.ndarray], model_config: ml_collections.ConfigDict, *,
                  source: str = "checkpoint"):
    """models.dreamtalk.denoiser.DreamTalk of `model_config` with `tensors` (prefix stripped), fully validated."""
    return pipeline.convert_model(tensors, rules(model_config), model_config, None, source=source)


def convert_checkpoint(path: str | Path, out_dir: str | Path, model_config: ml_collections.ConfigDict) -> Path:
    """denoising_network.pth (or a safetensors export) -> a converted checkpoint (runs.loader.load_model reads
    it). Raises ConversionError naming every problem."""
    return pipeline.convert_to_checkpoint(read_denoiser(path), rules(model_config), model_config, out_dir, None,
                                          source=Path(path).name)


# --------------------------------------------------------------------------------------------------------------
# The original's yacs config (as dumped in fixtures' config.json) -> our model config.
# --------------------------------------------------------------------------------------------------------------

def model_config_from_original(config: dict) -> ml_collections.ConfigDict:
    """Our model config from the original's hyperparameters (a fixture's config.json), any size.

    Raises ConversionError for settings the port does not implement (another decoder type, eps prediction, ...).
    """
    over = config.get("yacs_overrides_vs_configs/default.py", {})
    try:
        content, style, decoder = over["CONTENT_ENCODER"], over["STYLE_ENCODER"], config["DECODER"]
        d_model, win = int(over["D_MODEL"]), int(over["WIN_SIZE"])
        dataset, diffusion = config["DATASET"], config["DIFFUSION"]
    except KeyError as e:
        raise ConversionError(f"config.json lacks {e} of the original's DreamTalk config") from e
    problems = []
    widths = {"CONTENT_ENCODER": content.get("d_model"), "STYLE_ENCODER": style.get("d_model"),
              "DECODER": decoder.get("d_model")}
    problems += [f"{k}.d_model={v} differs from D_MODEL={d_model}" for k, v in widths.items() if v != d_model]
    settings = [(s.get("normalize_before", False), s.get("activation", "relu")) for s in (content, style, decoder)]
    if len(set(settings)) != 1:
        problems.append(f"normalize_before / activation differ between the stacks: {settings}")
    checks = {"DECODER.network_type": (decoder.get("network_type"), "TransformerDecoder"),
              "STYLE_ENCODER.aggregate_method": (style.get("aggregate_method"), "self_attention_pooling"),
              "DIFFUSION.PREDICT_WHAT": (diffusion.get("PREDICT_WHAT"), "x0"),
              "DIFFUSION.SCHEDULE.MODE": (diffusion["SCHEDULE"].get("MODE"), "linear"),
              "TRAIN.FACE3D_LATENT.TYPE": (config.get("TRAIN.FACE3D_LATENT.TYPE", "face3d"), "face3d")}
    problems += [f"{k}={have!r} (this port implements {want!r})" for k, (have, want) in checks.items() if have != want]
    if problems:
        raise ConversionError("unsupported DreamTalk configuration: " + "; ".join(problems))

    def stack(s: dict, layers_key: str) -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict({"num_heads": int(s["nhead"]), "num_layers": int(s[layers_key]),
                                              "ffn_dim": int(s["dim_feedforward"]),
                                              "pos_embed_len": int(s["pos_embed_len"])})
    m = ml_collections.ConfigDict()
    m.name = "dreamtalk"
    m.d_model = d_model
    m.motion_dim = int(dataset["FACE3D_DIM"])
    m.audio_dim = int(config.get("content_encoder_input_dim", 1024))
    m.audio_stride = 2  # wav2vec2 rows at 50 Hz, video at 25 fps
    m.win_size = win
    m.audio_mean, m.audio_std = 0.0, 1.0
    m.style_max_len = int(dataset["STYLE_MAX_LEN"])
    m.dropout = float(content.get("dropout", 0.1))
    m.layer_norm_eps = float(config.get("layernorm_eps", 1e-5))
    m.normalize_before, m.activation = bool(settings[0][0]), str(settings[0][1])
    m.content_encoder = stack(content, "num_encoder_layers")
    m.style_encoder = stack(style, "num_encoder_layers")
    m.decoder = stack(decoder, "num_decoder_layers")
    m.decoder.tail_hidden = int(config.get("tail_hidden_dim", d_model // 2))
    m.decoder.upper_indices = tuple(int(i) for i in decoder["upper_face3d_indices"])
    m.decoder.lower_indices = tuple(int(i) for i in decoder["lower_face3d_indices"])
    sched = diffusion["SCHEDULE"]
    m.diffusion = ml_collections.ConfigDict({"num_steps": int(sched["NUM_STEPS"]), "beta_1": float(sched["BETA_1"]),
                                                 "beta_T": float(sched["BETA_T"])})
    guidance = config.get("CF_GUIDANCE", {})
    m.cf_guidance = ml_collections.ConfigDict({"null_prob": float(guidance.get("NULL_PROB", 0.1)),
                                                   "scale": float(guidance.get("SCALE", 1.0))})
    m.sampler = ml_collections.ConfigDict({"ddim_steps": int(config.get("ddim_num_step", 10))})
    return m
