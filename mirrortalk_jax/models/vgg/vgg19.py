r"""torchvision's `vgg19().features` as a frozen feature network: perceptual losses and an LPIPS-style distance.

    python tools/convert_vgg.py --weights vgg19-dcbb9e9d.pth --out ckpt/vgg19      # user-supplied weights
    model = runs.loader.load_model("ckpt/vgg19").model
    features = model(images)                        # (B, H, W, 3) RGB in [-1, 1] -> [relu1_1, ..., relu5_1]
    d = perceptual_distance(model, a, b)            # (B,)

The network: 16 conv3x3 (padding 1) + ReLU in five blocks of 2, 2, 4, 4, 4 convs, a 2x2 max pool (stride 2,
floor mode) after each block; no batch norm, and the classifier is not part of it. `ARCHITECTURE` lists every
conv with its block, its position in the block and its index in torchvision's nn.Sequential (0, 2, 5, 7, 10, ...);
the converter's name map (convert/vgg.py) is generated from it, so the two cannot drift apart.

Layers are named reluB_K: the ReLU after conv K of block B (both from 1), e.g. relu3_1 = the ReLU at index 11 of
torchvision's `features`. `layers` (model config) names the activations `__call__` returns, in that order; the
default `DEFAULT_LAYERS` (relu1_1 ... relu5_1) is what PIRenderer's and pix2pixHD's perceptual losses use. Only
the convs up to the deepest requested layer run; every conv is always held (the converter fills all of them).

Inputs are this project's images, RGB in [-1, 1] (B, H, W, 3); inside they are mapped to [0, 1] and normalised by
ImageNet's mean / std, as torchvision's weights expect. Layout is NHWC; kernels (3, 3, in, out) with logical axes
(conv, conv, None | embed, mlp).

`perceptual_distance` is the "baseline" LPIPS of Zhang et al. 2018 (no learned linear weights): per layer,
features unit-normalised over channels, squared differences summed over channels and averaged over H, W, summed
over layers; a finite gradient everywhere (also where a feature vector is all zeros), so it serves as a loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mirrortalk_jax.models.nn import image_layers
from mirrortalk_jax.models.registry import register

BLOCK_SIZES = (2, 2, 4, 4, 4)  # convs per block
RELEASED_CHANNELS = (64, 128, 256, 512, 512)  # output channels of each block's convs (torchvision)
DEFAULT_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORM_EPS = 1e-10  # LPIPS's normalize_tensor


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One conv3x3 + ReLU of `features`: block and conv within it (from 1), and the conv's index in torchvision's
    nn.Sequential (its ReLU is at index + 1; a block's max pool follows the ReLU of its last conv)."""

    block: int
    conv: int
    index: int

    @property
    def name(self) -> str:
        return f"relu{self.block}_{self.conv}"


def _architecture() -> tuple[ConvSpec, ...]:
    specs, index = [], 0
    for block, size in enumerate(BLOCK_SIZES, start=1):
        for conv in range(1, size + 1):
            specs.append(ConvSpec(block, conv, index))
            index += 2  # conv, ReLU
        index += 1  # MaxPool2d
    return tuple(specs)


ARCHITECTURE: tuple[ConvSpec, ...] = _architecture()  # 16 convs at 0, 2, 5, 7, 10, 12, 14, 16, 19, ..., 34
LAYER_NAMES: tuple[str, ...] = tuple(spec.name for spec in ARCHITECTURE)
_POSITION = {name: i for i, name in enumerate(LAYER_NAMES)}


def check_layers(layers: Sequence[str]) -> tuple[str, ...]:
    """`layers` as a tuple, each a known reluB_K name (ValueError otherwise); at least one, none twice."""
    layers = tuple(str(name) for name in layers)
    unknown = [name for name in layers if name not in _POSITION]
    if unknown:
        raise ValueError(f"unknown VGG19 layer(s) {unknown}; known: {', '.join(LAYER_NAMES)} (reluB_K: block B of "
                         f"1..{len(BLOCK_SIZES)}, conv K within it; blocks hold {BLOCK_SIZES} convs)")
    if not layers or len(set(layers)) != len(layers):
        raise ValueError(f"layers must name at least one layer, each once; got {list(layers)}")
    return layers


def max_pool2(x: jax.Array) -> jax.Array:
    """torch MaxPool2d(2, 2) (floor mode: an odd last row / column is dropped). (B, H, W, C) -> (B, H//2, W//2, C)."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


class VGG19Features(nnx.Module):
    """torchvision `vgg19().features`; `__call__` returns the activations after the ReLUs named in `layers`.

    Args:
      channels: output channels of the convs of each of the 5 blocks (torchvision: RELEASED_CHANNELS).
      layers: reluB_K names returned by `__call__`, in this order (default DEFAULT_LAYERS).
      precision: conv precision on GPU/TPU ("highest" = float32 exact; "default" lets them use TF32/bf16).
    Parameters: convs/<i>/kernel (3, 3, in, out) and convs/<i>/bias (out,), i = 0..15 in ARCHITECTURE order.
    """

    def __init__(self, *, channels: Sequence[int] = RELEASED_CHANNELS, layers: Sequence[str] = DEFAULT_LAYERS,
                 precision: str | None = "highest", rngs: nnx.Rngs):
        channels = tuple(int(c) for c in channels)
        if len(channels) != len(BLOCK_SIZES) or min(channels) < 1:
            raise ValueError(f"channels must give {len(BLOCK_SIZES)} positive widths (one per block), got {channels}")
        self.channels = channels
        self.layers = check_layers(layers)
        convs, in_ch = [], 3
        for spec in ARCHITECTURE:
            out_ch = channels[spec.block - 1]
            axes = (None, "mlp") if spec.index == 0 else ("embed", "mlp")  # 3 colours: not sharded
            convs.append(image_layers.conv2d(in_ch, out_ch, 3, rngs, padding=1, axes=axes, precision=precision))
            in_ch = out_ch
        self.convs = nnx.List(convs)

    def preprocess(self, images: jax.Array) -> jax.Array:
        """RGB in [-1, 1] -> [0, 1] -> ImageNet-normalised, float32 (B, H, W, 3)."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (B, H, W, 3) RGB images, got shape {images.shape}")
        x = (images.astype(jnp.float32) + 1.0) * 0.5
        return (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)

    def __call__(self, images: jax.Array, layers: Sequence[str] | None = None) -> list[jax.Array]:
        """(B, H, W, 3) RGB in [-1, 1] -> [(B, H_l, W_l, C_l) per layer], in the order of `layers` (default: the
        model's). H_l = H // 2**(block - 1) (floor at each pool); the convs past the deepest layer do not run."""
        layers = self.layers if layers is None else check_layers(layers)
        wanted = {_POSITION[name] for name in layers}
        last = max(wanted)
        x, found = self.preprocess(images), {}
        for i, (spec, conv) in enumerate(zip(ARCHITECTURE, self.convs)):
            if i > last:
                break
            if spec.conv == 1 and spec.block > 1:
                x = max_pool2(x)  # the pool closing the previous block
            x = jax.nn.relu(conv(x))
            if i in wanted:
                found[i] = x
        return [found[_POSITION[name]] for name in layers]


def _unit_normalize(x: jax.Array) -> jax.Array:
    """x / (||x||_2 over channels + 1e-10), LPIPS's normalize_tensor. At x = 0 the norm's gradient is taken as 0
    (sqrt's is infinite there, NaN in a naive port), leaving the formula's own 1 / 1e-10, which the ReLU before it
    masks (an all-zero feature vector has no active unit)."""
    squares = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    positive = squares > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0)
    return x / (norm + NORM_EPS)


def perceptual_distance(model: VGG19Features, a: jax.Array, b: jax.Array,
                        layers: Sequence[str] | None = None) -> jax.Array:
    """LPIPS "baseline" (no learned weights) between image pairs: (B, H, W, 3), (B, H, W, 3) in [-1, 1] -> (B,).

    Sum over `layers` (default: the model's) of the mean over H, W of sum over C of (unit(f_a) - unit(f_b))**2.
    Both batches go through the network in one pass. 0 for identical images.
    """
    if a.shape != b.shape:
        raise ValueError(f"image batches differ in shape: {a.shape} vs {b.shape}")
    features = model(jnp.concatenate([a, b], axis=0), layers)
    n = a.shape[0]
    total = jnp.zeros((n,), jnp.float32)
    for f in features:
        diff = _unit_normalize(f[:n]) - _unit_normalize(f[n:])
        total = total + jnp.mean(jnp.sum(jnp.square(diff), axis=-1), axis=(1, 2))
    return total


@register("vgg19")
def _create(config, spec, rngs: nnx.Rngs) -> VGG19Features:  # spec: a feature network has no motion space
    del spec
    return VGG19Features(channels=tuple(config.get("channels", RELEASED_CHANNELS)),
                         layers=tuple(config.get("layers", DEFAULT_LAYERS)),
                         precision=config.get("precision", "highest"), rngs=rngs)
