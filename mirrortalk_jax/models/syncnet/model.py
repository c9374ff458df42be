"""SyncNet (syncnet_python `SyncNetModel.S`, "SyncNet v2"): the audio and lip towers behind LSE-C / LSE-D.

An exact port of the model the literature's lip-sync metrics use (Chung & Zisserman 2016; weights
`syncnet_v2.model`, converted by tools/convert_syncnet.py). Two VGG-M-like towers embed 0.2 s of each stream:

* audio: (N, 13, 20) MFCC (13 coefficients x 20 frames at 100 Hz, python_speech_features conventions, computed on
  raw int16 sample values; see evaluate/lse.py) -> 2-D conv tower -> FC -> (N, E);
* lips: (N, 5, 224, 224, 3) face crops, 5 frames at 25 fps, **BGR channel order, raw 0..255 values, no
  normalisation** (the original reads frames with OpenCV) -> 3-D conv tower -> FC -> (N, E).

The embeddings are compared by plain L2 distance (evaluate/sync.py). BatchNorm uses the stored running
statistics (inference mode, eps 1e-5): the metric is defined by the frozen released network, so there is no
training path here.

Layout differences from PyTorch (the converter transposes weights): activations are channels-last, the lip input is
(N, T, H, W, C) instead of (N, C, T, H, W) and MFCC windows are (N, 13, 20) instead of (N, 1, 13, 20). The last conv
of each tower leaves a 1x1 (x1) map, so flattening is layout-independent and the FC weights need no permutation.

Only the first lip conv looks across time (kernel 5, no padding); every later lip layer is per frame. So a whole
clip of T frames goes through the lip tower at once and gives the T - 4 window embeddings of every 5-frame window
exactly as window-by-window evaluation would, without materialising 5 copies of each frame (`lip_sequence`).

Widths: the release hard-codes every channel count; `width_divisor` divides them (the test fixture uses 8) and
`num_layers_in_fc_layers` (the original's name) is the embedding size, 1024 in the release.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from mirrortalk_jax.models.nn import layers
from mirrortalk_jax.models.registry import register

BATCHNORM_EPS = 1e-5
MFCC_SHAPE = (13, 20)  # coefficients x MFCC frames (0.2 s at 100 Hz)
LIP_SHAPE = (5, 224, 224, 3)  # frames x height x width x BGR
WINDOW_FRAMES = 5


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One Conv -> BatchNorm -> ReLU [-> MaxPool] block of a tower, as in the original nn.Sequential.

    `index` is the position of the conv inside the Sequential (its BatchNorm is at index + 1); the converter's
    name table is built from it. Kernel/stride/padding are per spatial axis ((time,) height, width).
    """

    index: int
    width: int  # released output channels (before width_divisor)
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    pool: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None  # (window, stride, padding)


# netcnnaud: input (13 MFCC, 20 frames). MaxPool2d(k=1) at index 3 is the identity and is left out.
AUDIO_TOWER = (
    ConvSpec(0, 64, (3, 3), (1, 1), (1, 1)),
    ConvSpec(4, 192, (3, 3), (1, 1), (1, 1), pool=((3, 3), (1, 2), (0, 0))),
    ConvSpec(8, 384, (3, 3), (1, 1), (1, 1)),
    ConvSpec(11, 256, (3, 3), (1, 1), (1, 1)),
    ConvSpec(14, 256, (3, 3), (1, 1), (1, 1), pool=((3, 3), (2, 2), (0, 0))),
    ConvSpec(18, 512, (5, 4), (1, 1), (0, 0)),
)
# netcnnlip: input (5 frames, 224, 224). Spatial 224 -> 109 -> 54 -> 26 -> 13 -> 13 -> 6 -> 1, time 5 -> 1.
LIP_TOWER = (
    ConvSpec(0, 96, (5, 7, 7), (1, 2, 2), (0, 0, 0), pool=((1, 3, 3), (1, 2, 2), (0, 0, 0))),
    ConvSpec(4, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1), pool=((1, 3, 3), (1, 2, 2), (0, 1, 1))),
    ConvSpec(8, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ConvSpec(11, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ConvSpec(14, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), pool=((1, 3, 3), (1, 2, 2), (0, 0, 0))),
    ConvSpec(18, 512, (1, 6, 6), (1, 1, 1), (0, 0, 0)),
)
FC_HIDDEN = 512  # netfcaud / netfclip: Linear(512, 512), BatchNorm1d, ReLU, Linear(512, num_layers_in_fc_layers)

_PRECISIONS = {"highest": jax.lax.Precision.HIGHEST, "high": jax.lax.Precision.HIGH,
               "default": jax.lax.Precision.DEFAULT}


def _batch_norm(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """Inference-mode BatchNorm (running statistics, torch eps); scale/bias on the channel axis."""
    return nnx.BatchNorm(features, use_running_average=True, epsilon=BATCHNORM_EPS,
                         scale_init=nnx.with_partitioning(nnx.initializers.ones, ("mlp",)),
                         bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("mlp",)), rngs=rngs)


def max_pool(x: jax.Array, window: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...]) -> jax.Array:
    """PyTorch MaxPoolNd (floor mode) on channels-last (N, *spatial, C); padding counts as -inf, as in torch."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *window, 1), (1, *stride, 1),
                                 ((0, 0), *((p, p) for p in padding), (0, 0)))


class ConvBlock(nnx.Module):
    """Conv -> BatchNorm (running stats) -> ReLU -> optional MaxPool; (N, *spatial, C_in) -> (N, *spatial', C_out)."""

    def __init__(self, spec: ConvSpec, in_features: int, out_features: int, in_axis: str, precision,
                 rngs: nnx.Rngs):
        self.pool = spec.pool
        spatial = ("conv",) * len(spec.kernel)
        self.conv = nnx.Conv(in_features, out_features, kernel_size=spec.kernel, strides=spec.stride,
                             padding=[(p, p) for p in spec.padding], precision=precision,
                             kernel_init=nnx.with_partitioning(layers.fan_in_normal(tuple(range(len(spec.kernel) + 1))),
                                                               (*spatial, in_axis, "mlp")),
                             bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("mlp",)), rngs=rngs)
        self.norm = _batch_norm(out_features, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.norm(self.conv(x)))
        return x if self.pool is None else max_pool(x, *self.pool)


class Tower(nnx.Module):
    """A stack of ConvBlocks (the original's netcnnaud / netcnnlip)."""

    def __init__(self, specs: tuple[ConvSpec, ...], in_features: int, in_axis: str, width_divisor: int, precision,
                 rngs: nnx.Rngs):
        blocks = []
        for i, spec in enumerate(specs):
            out = _divide(spec.width, width_divisor)
            blocks.append(ConvBlock(spec, in_features, out, in_axis if i == 0 else "embed", precision, rngs))
            in_features = out
        self.blocks = nnx.List(blocks)
        self.out_features = in_features

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        return x


class Head(nnx.Module):
    """Linear -> BatchNorm1d (running stats) -> ReLU -> Linear (the original's netfcaud / netfclip); (..., C) -> (..., E)."""

    def __init__(self, in_features: int, hidden: int, embed_dim: int, precision, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(in_features, hidden, precision=precision,
                              kernel_init=nnx.with_partitioning(layers.fan_in_normal((0,)), ("embed", "mlp")),
                              bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("mlp",)), rngs=rngs)
        self.norm = _batch_norm(hidden, rngs)
        self.fc2 = nnx.Linear(hidden, embed_dim, precision=precision,
                              kernel_init=nnx.with_partitioning(layers.fan_in_normal((0,)), ("mlp", "embed")),
                              bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("embed",)), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        lead = x.shape[:-1]
        h = x.reshape(-1, x.shape[-1])  # BatchNorm1d sees (N, C)
        h = self.fc2(jax.nn.relu(self.norm(self.fc1(h))))
        return h.reshape(*lead, h.shape[-1])


def _divide(width: int, divisor: int) -> int:
    if width % divisor:
        raise ValueError(f"width_divisor={divisor} does not divide the released width {width}")
    return width // divisor


class SyncNet(nnx.Module):
    """syncnet_python `SyncNetModel.S`: `forward_aud`, `forward_lip`, `forward_lipfeat` as in the original.

    Args:
      num_layers_in_fc_layers: embedding size E (the original's argument name; 1024 in the release).
      width_divisor: every released channel count is divided by it (1 = released model).
      precision: matmul/conv precision ("highest" keeps float32 exact on GPUs/TPUs, whose default is lower).
    """

    def __init__(self, *, num_layers_in_fc_layers: int = 1024, width_divisor: int = 1, precision: str = "highest",
                 rngs: nnx.Rngs):
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
        p = _PRECISIONS[precision]
        self.embed_dim = num_layers_in_fc_layers
        hidden = _divide(FC_HIDDEN, width_divisor)
        self.audio_cnn = Tower(AUDIO_TOWER, 1, "audio", width_divisor, p, rngs)
        self.audio_fc = Head(self.audio_cnn.out_features, hidden, num_layers_in_fc_layers, p, rngs)
        self.lip_cnn = Tower(LIP_TOWER, 3, "conv", width_divisor, p, rngs)
        self.lip_fc = Head(self.lip_cnn.out_features, hidden, num_layers_in_fc_layers, p, rngs)

    def forward_aud(self, mfcc: jax.Array) -> jax.Array:
        """(N, 13, 20) MFCC windows (coefficients x frames) -> (N, E) audio embeddings."""
        if mfcc.ndim != 3 or tuple(mfcc.shape[1:]) != MFCC_SHAPE:
            raise ValueError(f"expected (N, 13, 20) MFCC windows, got shape {mfcc.shape}")
        h = self.audio_cnn(mfcc[..., None].astype(jnp.float32))  # (N, 1, 1, C)
        return self.audio_fc(h.reshape(h.shape[0], -1))

    def forward_lipfeat(self, lips: jax.Array) -> jax.Array:
        """(N, 5, 224, 224, 3) BGR 0..255 windows -> (N, C) flattened lip-tower features (before the FC)."""
        _check_lips(lips, exact_frames=True)
        return self._lip_features(lips)[:, 0]

    def forward_lip(self, lips: jax.Array) -> jax.Array:
        """(N, 5, 224, 224, 3) BGR 0..255 windows -> (N, E) lip embeddings."""
        return self.lip_fc(self.forward_lipfeat(lips))

    def lip_sequence(self, frames: jax.Array) -> jax.Array:
        """(N, T, 224, 224, 3) BGR 0..255 clips, T >= 5 -> (N, T - 4, E): row i embeds frames i .. i+4.

        Equal to `forward_lip` on every 5-frame window (only the first conv spans time), in one pass.
        """
        _check_lips(frames, exact_frames=False)
        return self.lip_fc(self._lip_features(frames))

    def _lip_features(self, frames: jax.Array) -> jax.Array:
        h = self.lip_cnn(frames.astype(jnp.float32))  # (N, T - 4, 1, 1, C)
        return h.reshape(*h.shape[:2], -1)


def _check_lips(x: jax.Array, exact_frames: bool) -> None:
    frames_ok = x.ndim == 5 and (x.shape[1] == WINDOW_FRAMES if exact_frames else x.shape[1] >= WINDOW_FRAMES)
    if not frames_ok or tuple(x.shape[2:]) != LIP_SHAPE[1:]:
        want = "(N, 5, 224, 224, 3)" if exact_frames else "(N, T >= 5, 224, 224, 3)"
        raise ValueError(f"expected {want} BGR face crops (channels last), got shape {x.shape}")


@register("syncnet")
def _create(config, spec, rngs: nnx.Rngs) -> SyncNet:  # spec: SyncNet does not use a motion space
    del spec
    return SyncNet(num_layers_in_fc_layers=config.num_layers_in_fc_layers,
                   width_divisor=config.get("width_divisor", 1), precision=config.get("precision", "highest"),
                   rngs=rngs)
