"""PyTorch-compatible 2-D image layers in NHWC, for exact ports of torch image networks (PIRenderer and kin).

Each layer reproduces one torch convention that Flax does not share: symmetric integer padding, the tap order of
`nn.ConvTranspose2d`, the statistics of `InstanceNorm2d` and of PIRenderer's `LayerNorm2d` (biased variance,
eps 1e-5), AdaIN modulation `x_hat * (1 + gamma) + beta`. Kernels are stored HWIO; the converter transposes torch
weights once (convert/hooks.py), never at run time.

Two layers compute a cheaper but equal form of the original (a sum of the same products, in another order):
- `UpsampleConv`: nearest 2x upsampling followed by a 3x3 convolution equals four 2x2 convolutions of the small
  input (one per output phase) with summed taps: 16 instead of 36 multiply-adds per input pixel and channel pair.
- `ConvTranspose2x`: torch's ConvTranspose2d(k3, s2, p1, output_padding=1) as four phase convolutions with 1, 2,
  2 and 4 taps (9 in all) instead of a convolution over a zero-dilated input (36).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from mirrortalk_jax.models.nn.layers import dense, fan_in_normal

Axes = tuple[str | None, str | None]
_DIMS = ("NHWC", "HWIO", "NHWC")
_zeros = nnx.initializers.zeros
_ones = nnx.initializers.ones


def conv2d(in_ch: int, out_ch: int, kernel: int, rngs: nnx.Rngs, *, stride: int = 1, padding: int = 0,
           axes: Axes = ("embed", "mlp"), precision: str | None = None) -> nnx.Conv:
    """torch Conv2d(in_ch, out_ch, kernel, stride, padding) on NHWC; kernel (k, k, in, out), logical axes
    (conv, conv, *axes). Use None in `axes` for image-side channel counts (3 colours, 2 flow components).
    `precision`: lax precision on GPU/TPU ("highest" = float32 exact; None/"default" lets them use TF32/bf16
    passes); no effect on CPU."""
    return nnx.Conv(in_ch, out_ch, kernel_size=(kernel, kernel), strides=(stride, stride),
                    padding=((padding, padding), (padding, padding)), precision=_precision(precision),
                    kernel_init=nnx.with_partitioning(fan_in_normal((0, 1, 2)), ("conv", "conv", *axes)),
                    bias_init=nnx.with_partitioning(_zeros, (axes[1],)), rngs=rngs)


def conv1d(in_ch: int, out_ch: int, kernel: int, rngs: nnx.Rngs, *, dilation: int = 1,
           axes: Axes = ("embed", "mlp"), precision: str | None = None) -> nnx.Conv:
    """torch Conv1d(in_ch, out_ch, kernel, dilation=dilation, padding=0) on (B, T, C): T shrinks by
    dilation * (kernel - 1)."""
    return nnx.Conv(in_ch, out_ch, kernel_size=(kernel,), kernel_dilation=(dilation,), padding="VALID",
                    precision=_precision(precision),
                    kernel_init=nnx.with_partitioning(fan_in_normal((0, 1)), ("conv", *axes)),
                    bias_init=nnx.with_partitioning(_zeros, (axes[1],)), rngs=rngs)


def _precision(name: str | None) -> lax.Precision | None:
    return None if name in (None, "default") else lax.Precision(name)


def _conv(x: jax.Array, kernel: jax.Array, padding, precision: str | None) -> jax.Array:
    return lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), padding, dimension_numbers=_DIMS,
                                    precision=_precision(precision))


def _interleave(phases: list[list[jax.Array]]) -> jax.Array:
    """phases[a][b]: (B, H, W, C), the outputs at rows 2i+a, columns 2j+b -> (B, 2H, 2W, C)."""
    rows = [jnp.stack(p, axis=3) for p in phases]  # (B, H, W, 2, C) each
    out = jnp.stack(rows, axis=2)  # (B, H, 2, W, 2, C)
    b, h, _, w, _, c = out.shape
    return out.reshape(b, 2 * h, 2 * w, c)


class _Kernel3(nnx.Module):
    """A 3x3 kernel (3, 3, in, out) + bias (out,) with logical axes, shared by the phase-decomposed layers."""

    def __init__(self, in_ch: int, out_ch: int, rngs: nnx.Rngs, axes: Axes = ("embed", "mlp"),
                 precision: str | None = None):
        self.precision = precision
        self.kernel = nnx.Param(nnx.with_partitioning(fan_in_normal((0, 1, 2)), ("conv", "conv", *axes))(
            rngs.params(), (3, 3, in_ch, out_ch)))
        self.bias = nnx.Param(nnx.with_partitioning(_zeros, (axes[1],))(rngs.params(), (out_ch,)))


class UpsampleConv(_Kernel3):
    """`F.interpolate(x, scale_factor=2)` (nearest) then torch Conv2d(k3, s1, p1). (B, H, W, in) -> (B, 2H, 2W, out).

    Output row 2i takes upsampled rows 2i-1, 2i, 2i+1 = input rows i-1, i, i: taps (k0, k1+k2) on rows (i-1, i);
    row 2i+1 takes input rows i, i, i+1: taps (k0+k1, k2) on rows (i, i+1). Likewise for columns. Zero padding of
    the upsampled image is zero padding of the input, so each phase is a 2x2 convolution of the input.
    kernel[ky, kx, i, o] = torch weight[o, i, ky, kx] (hooks.conv).
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel[...]

        def fold(k, axis, phase):  # the two taps of one phase along `axis` (0: rows, 1: columns)
            t = [lax.index_in_dim(k, j, axis, keepdims=True) for j in range(3)]
            return jnp.concatenate([t[0], t[1] + t[2]] if phase == 0 else [t[0] + t[1], t[2]], axis=axis)

        phases = [[_conv(x, fold(fold(k, 0, a), 1, b), ((1 - a, a), (1 - b, b)), self.precision) for b in (0, 1)]
                  for a in (0, 1)]
        return _interleave(phases) + self.bias[...].astype(x.dtype)


class ConvTranspose2x(_Kernel3):
    """torch ConvTranspose2d(in, out, k3, s2, p1, output_padding=1): (B, H, W, in) -> (B, 2H, 2W, out).

    Output o = 2i - 1 + k for input i and tap k, so row 2m uses tap 1 of row m, and row 2m+1 uses tap 2 of row m
    plus tap 0 of row m+1 (zero past the end: the output padding). kernel[ky, kx, i, o] = torch weight[i, o, ky, kx]
    (torch stores transposed-convolution weights (in, out, kh, kw); no flip, see convert/pirenderer.py).
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel[...]
        taps = ([1], [2, 0])  # phase 0: tap 1 at offset 0; phase 1: tap 2 at offset 0, tap 0 at offset +1

        def phase_kernel(a, b):  # (len(taps[a]), len(taps[b]), in, out)
            rows = jnp.stack([k[t] for t in taps[a]])
            return jnp.stack([rows[:, t] for t in taps[b]], axis=1)

        phases = [[_conv(x, phase_kernel(a, b), ((0, a), (0, b)), self.precision) for b in (0, 1)] for a in (0, 1)]
        return _interleave(phases) + self.bias[...].astype(x.dtype)


def _normalize(x: jax.Array, axes: tuple[int, ...], eps: float) -> jax.Array:
    """(x - mean) / sqrt(biased var + eps) over `axes`, statistics in float32 (two passes, as torch)."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=axes, keepdims=True)
    centred = x32 - mean
    var = jnp.mean(jnp.square(centred), axis=axes, keepdims=True)
    return (centred * lax.rsqrt(var + eps)).astype(x.dtype)


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """torch InstanceNorm2d(affine=False): per sample and channel over (H, W); instance statistics always."""
    return _normalize(x, (1, 2), eps)


class LayerNorm2d(nnx.Module):
    """PIRenderer's LayerNorm2d: per sample over (H, W, C) jointly, then a per-channel affine. (B,H,W,C) -> same."""

    def __init__(self, channels: int, rngs: nnx.Rngs, eps: float = 1e-5):
        self.eps = eps
        self.scale = nnx.Param(nnx.with_partitioning(_ones, ("mlp",))(rngs.params(), (channels,)))
        self.bias = nnx.Param(nnx.with_partitioning(_zeros, ("mlp",))(rngs.params(), (channels,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return _normalize(x, (1, 2, 3), self.eps) * self.scale[...] + self.bias[...]


class AdaIN(nnx.Module):
    """Adaptive instance norm: instance_norm(x) * (1 + gamma(z)) + beta(z), gamma/beta from a ReLU MLP of z.

    x (B, H, W, C), z (B, D) -> (B, H, W, C). The MLP is Linear(D, hidden) -> ReLU, then one Linear each.
    """

    def __init__(self, channels: int, descriptor_nc: int, rngs: nnx.Rngs, hidden: int = 128):
        self.shared = dense(descriptor_nc, hidden, ("embed", "mlp"), rngs)
        self.gamma = dense(hidden, channels, ("mlp", "embed"), rngs)
        self.beta = dense(hidden, channels, ("mlp", "embed"), rngs)

    def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.shared(z))
        gamma, beta = self.gamma(h)[:, None, None, :], self.beta(h)[:, None, None, :]
        return instance_norm(x) * (1.0 + gamma) + beta


def avg_pool2(x: jax.Array) -> jax.Array:
    """torch AvgPool2d(2, 2) on even H, W. (B, H, W, C) -> (B, H/2, W/2, C)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
