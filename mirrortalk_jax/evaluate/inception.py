"""pytorch-fid's FID InceptionV3 (pool3, 2048-d) as a Flax NNX module, its weight name map and loader.

FID numbers are only comparable when every detail of the feature network matches the one the literature used:
pytorch-fid's `InceptionV3([3])` with `use_fid_inception=True`, a port of the TensorFlow graph of
Heusel et al. (`pt_inception-2015-12-05-6726825d.pth`). That network is torchvision's Inception3 with three
differences, all in pooling branches (no parameter differs):

* FIDInceptionA / C / E_1 (Mixed_5b-d, 6b-e, 7b): the average pool of `branch_pool` does not count the zero
  padding (count_include_pad=False);
* FIDInceptionE_2 (Mixed_7c): `branch_pool` is a 3x3 MAX pool (stride 1, padding 1), a quirk of the TF graph;
* the 1008-class `fc` is not used: features are the global average of Mixed_7c (pool3).

Input handling as pytorch-fid: RGB images in [0, 1] are resized to 299x299 with bilinear interpolation
(align_corners=False, no antialiasing, as `F.interpolate`), then mapped to [-1, 1]. Layout here is NHWC.

Weights are user-supplied (nothing is downloaded): `tools/convert_inception.py` converts pytorch-fid's file
(torch, read with weights_only=True) or a safetensors file with the same keys through `RULES`, validated
against the `nnx.eval_shape` tree, into a converted checkpoint that `load_inception` reads. Without weights the
FID code still runs with any other `fid.FeatureExtractor`. The smallest input without resizing is 75x75.

Its fixture kind "fid_inception_v3" (fixtures/inception.py, tools/check_fixture.py) compares dumps of pytorch-fid's
own InceptionV3 at any seed, input size and flags output block by output block.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirrortalk_jax.models import abstract
from mirrortalk_jax.convert import hooks, name_map, foreign
from mirrortalk_jax.runs import converted
from mirrortalk_jax.convert.name_map import Rule

FEATURE_DIM = 2048
INPUT_SIZE = 299
MIN_SIZE = 75  # below this a valid convolution or pooling runs out of pixels before Mixed_7c
NAME = "fid_inception_v3"
FC_CLASSES = 1008  # pytorch-fid's fc (unused): 1008 classes, torchvision's ImageNet model has 1000


# ----- Layers -----


def _he_normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """N(0, 2 / fan_in) for (kh, kw, in, out) kernels: random-weight instances keep their activations O(1)."""
    fan_in = math.prod(shape[:-1])
    return (jax.random.normal(key, (math.prod(shape),), dtype) * math.sqrt(2.0 / fan_in)).reshape(shape)


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class BatchNormInference(nnx.Module):
    """BatchNorm with running statistics only: (x - mean) / sqrt(var + eps) * scale + bias over the last axis.

    Variable names are nnx.BatchNorm's (scale, bias: Param; mean, var: BatchStat), but no RNG is drawn: under
    nnx.eval_shape every RNG draw costs ~20 ms (about 6 s for the 282 draws of conv + BatchNorm layers).
    """

    def __init__(self, features: int, epsilon: float):
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((features,), jnp.float32))
        self.epsilon = epsilon

    def __call__(self, x: jax.Array) -> jax.Array:
        factor = self.scale[...] * jax.lax.rsqrt(self.var[...] + self.epsilon)
        return (x - self.mean[...]) * factor + self.bias[...]


class Conv2d(nnx.Module):
    """Bias-free NHWC convolution with explicit (symmetric) padding, kernel (kh, kw, in, out)."""

    def __init__(self, in_features: int, out_features: int, kernel_size, *, stride, padding, precision,
                 key: jax.Array):
        kh, kw = _pair(kernel_size)
        self.kernel = nnx.Param(_he_normal(key, (kh, kw, in_features, out_features)))
        ph, pw = _pair(padding)
        self.strides, self.padding, self.precision = _pair(stride), ((ph, ph), (pw, pw)), precision

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.lax.conv_general_dilated(x, self.kernel[...], self.strides, self.padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)


class BasicConv2d(nnx.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3, running statistics) + ReLU, as torchvision's BasicConv2d."""

    def __init__(self, in_features: int, out_features: int, kernel_size, *, stride=1, padding=0,
                 precision: str | None = "highest", key: jax.Array):
        self.conv = Conv2d(in_features, out_features, kernel_size, stride=stride, padding=padding,
                           precision=precision, key=key)
        self.bn = BatchNormInference(out_features, epsilon=1e-3)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.bn(self.conv(x)))


def _conv_factory(precision, rngs: nnx.Rngs, count: int):
    """A BasicConv2d constructor that hands each of `count` layers its own key from one RNG draw."""
    keys = iter(jax.random.split(rngs.params(), count))
    return lambda i, o, k, **kw: BasicConv2d(i, o, k, precision=precision, key=next(keys), **kw)


def max_pool(x: jax.Array, size: int = 3, stride: int = 2, padding: int = 0) -> jax.Array:
    """(N, H, W, C) max pool; padding counts as -inf (torch's MaxPool2d)."""
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, size, size, 1), (1, stride, stride, 1), pad)


def avg_pool_exclude_pad(x: jax.Array) -> jax.Array:
    """3x3, stride 1, padding 1 average that divides by the number of real pixels (count_include_pad=False)."""
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    window, strides = (1, 3, 3, 1), (1, 1, 1, 1)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pad)
    count = jax.lax.reduce_window(jnp.ones((1, *x.shape[1:3], 1), x.dtype), 0.0, jax.lax.add, window, strides, pad)
    return total / count


# ----- Inception blocks (FID flavour) -----


class InceptionA(nnx.Module):
    """Mixed_5b/c/d: 1x1, 5x5, double 3x3 and pooled branches -> 224 + pool_features channels."""

    def __init__(self, cin: int, pool_features: int, *, precision, rngs: nnx.Rngs):
        conv = _conv_factory(precision, rngs, 10)
        self.branch1x1 = conv(cin, 64, 1)
        self.branch5x5_1 = conv(cin, 48, 1)
        self.branch5x5_2 = conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = conv(cin, 64, 1)
        self.branch3x3dbl_2 = conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = conv(96, 96, 3, padding=1)
        self.branch_pool = conv(cin, pool_features, 1)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.concatenate([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(avg_pool_exclude_pad(x))], axis=-1)


class InceptionB(nnx.Module):
    """Mixed_6a: grid reduction by stride-2 3x3 convolutions and a max pool -> 384 + 96 + cin channels."""

    def __init__(self, cin: int, *, precision, rngs: nnx.Rngs):
        conv = _conv_factory(precision, rngs, 10)
        self.branch3x3 = conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = conv(cin, 64, 1)
        self.branch3x3dbl_2 = conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = conv(96, 96, 3, stride=2)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.concatenate([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            max_pool(x)], axis=-1)


class InceptionC(nnx.Module):
    """Mixed_6b-e: factorised 7x7 branches (1x7 / 7x1) of width c7 -> 768 channels."""

    def __init__(self, cin: int, c7: int, *, precision, rngs: nnx.Rngs):
        conv = _conv_factory(precision, rngs, 10)
        self.branch1x1 = conv(cin, 192, 1)
        self.branch7x7_1 = conv(cin, c7, 1)
        self.branch7x7_2 = conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = conv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = conv(cin, c7, 1)
        self.branch7x7dbl_2 = conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = conv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = conv(cin, 192, 1)

    def __call__(self, x: jax.Array) -> jax.Array:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d7 = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d7 = layer(d7)
        return jnp.concatenate([self.branch1x1(x), b7, d7, self.branch_pool(avg_pool_exclude_pad(x))], axis=-1)


class InceptionD(nnx.Module):
    """Mixed_7a: grid reduction -> 320 + 192 + cin channels."""

    def __init__(self, cin: int, *, precision, rngs: nnx.Rngs):
        conv = _conv_factory(precision, rngs, 10)
        self.branch3x3_1 = conv(cin, 192, 1)
        self.branch3x3_2 = conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = conv(cin, 192, 1)
        self.branch7x7x3_2 = conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = conv(192, 192, 3, stride=2)

    def __call__(self, x: jax.Array) -> jax.Array:
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return jnp.concatenate([self.branch3x3_2(self.branch3x3_1(x)), b7, max_pool(x)], axis=-1)


class InceptionE(nnx.Module):
    """Mixed_7b/c: expanded 1x3 / 3x1 branches -> 2048 channels. `max_pool_branch`: FIDInceptionE_2 (Mixed_7c)."""

    def __init__(self, cin: int, *, max_pool_branch: bool, precision, rngs: nnx.Rngs):
        conv = _conv_factory(precision, rngs, 10)
        self.max_pool_branch = max_pool_branch
        self.branch1x1 = conv(cin, 320, 1)
        self.branch3x3_1 = conv(cin, 384, 1)
        self.branch3x3_2a = conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = conv(cin, 448, 1)
        self.branch3x3dbl_2 = conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = conv(cin, 192, 1)

    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.branch3x3_1(x)
        d3 = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = max_pool(x, 3, 1, 1) if self.max_pool_branch else avg_pool_exclude_pad(x)
        return jnp.concatenate([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                                self.branch3x3dbl_3a(d3), self.branch3x3dbl_3b(d3), self.branch_pool(pooled)],
                               axis=-1)


# ----- The network -----


def resize_bilinear(images: jax.Array, size: int) -> jax.Array:
    """(N, H, W, C) -> (N, size, size, C) as torch's F.interpolate(mode='bilinear', align_corners=False).

    Half-pixel centres, source coordinates below 0 clamped to 0, and no antialiasing when shrinking (unlike
    jax.image.resize's default), so large frames are sampled exactly as pytorch-fid samples them.

    Source positions use torch's float32 arithmetic: scale = float32(n_in) / size, src = scale * (i + 0.5) - 0.5
    rounded once (torch's kernels compile it to a fused multiply-add, on CPU and CUDA). Positions computed in
    float64 instead land up to ~1e-4 pixel away on large inputs, a 6e-5 difference in the resized image
    (1000 -> 299); with torch's rounding the resized image matches F.interpolate to float32 rounding (~1e-7).
    """
    def axis_weights(n_in: int) -> jax.Array:
        if n_in == size:  # torch copies (scale 1)
            return jnp.eye(size, dtype=images.dtype)
        scale = np.float32(n_in) / np.float32(size)
        # the product of two float32 is exact in float64, and so is subtracting 0.5: one rounding, as an FMA
        src = (np.float64(scale) * (np.arange(size, dtype=np.float32) + np.float32(0.5)) - 0.5).astype(np.float32)
        src = np.maximum(src, np.float32(0.0))
        lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = np.clip(src - lo.astype(np.float32), np.float32(0.0), np.float32(1.0))  # float32, as torch's lambda
        m = np.zeros((size, n_in))
        np.add.at(m, (np.arange(size), lo), 1.0 - frac)
        np.add.at(m, (np.arange(size), hi), frac)
        return jnp.asarray(m, images.dtype)
    rows, cols = axis_weights(images.shape[1]), axis_weights(images.shape[2])
    hp = jax.lax.Precision.HIGHEST
    out = jnp.einsum("oh,nhwc->nowc", rows, images, precision=hp)
    return jnp.einsum("pw,nowc->nopc", cols, out, precision=hp)


class InceptionV3(nnx.Module):
    """pytorch-fid's FID InceptionV3 up to pool3: (N, H, W, 3) images in [0, 1] -> (N, 2048) features.

    Attribute names follow torchvision (Conv2d_1a_3x3 ... Mixed_7c, branch*, conv, bn) so the weight name map
    is a renaming of separators only. BatchNorm always uses its running statistics (inference only).

    Args:
      resize_input: resize to 299x299 first (pytorch-fid's default; False needs inputs of at least 75x75).
      normalize_input: map [0, 1] to [-1, 1] (pytorch-fid's default).
      precision: matmul precision of the convolutions ("highest": float32 on every backend, no TF32).
    """

    def __init__(self, *, resize_input: bool = True, normalize_input: bool = True,
                 precision: str | None = "highest", rngs: nnx.Rngs):
        self.resize_input, self.normalize_input = resize_input, normalize_input
        conv = _conv_factory(precision, rngs, 10)
        self.Conv2d_1a_3x3 = conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = conv(32, 32, 3)
        self.Conv2d_2b_3x3 = conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = conv(64, 80, 1)
        self.Conv2d_4a_3x3 = conv(80, 192, 3)
        kw = {"precision": precision, "rngs": rngs}
        self.Mixed_5b = InceptionA(192, 32, **kw)
        self.Mixed_5c = InceptionA(256, 64, **kw)
        self.Mixed_5d = InceptionA(288, 64, **kw)
        self.Mixed_6a = InceptionB(288, **kw)
        self.Mixed_6b = InceptionC(768, 128, **kw)
        self.Mixed_6c = InceptionC(768, 160, **kw)
        self.Mixed_6d = InceptionC(768, 160, **kw)
        self.Mixed_6e = InceptionC(768, 192, **kw)
        self.Mixed_7a = InceptionD(768, **kw)
        self.Mixed_7b = InceptionE(1280, max_pool_branch=False, **kw)
        self.Mixed_7c = InceptionE(2048, max_pool_branch=True, **kw)

    def preprocess(self, images: jax.Array) -> jax.Array:
        """(N, H, W, 3) in [0, 1] -> the network's input: resized to 299x299 and mapped to [-1, 1]."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected RGB images (N, H, W, 3), got {images.shape}")
        x = images.astype(jnp.float32)
        if self.resize_input:
            x = resize_bilinear(x, INPUT_SIZE)
        elif min(x.shape[1:3]) < MIN_SIZE:
            raise ValueError(f"InceptionV3 needs at least {MIN_SIZE}x{MIN_SIZE} inputs, got {x.shape[1:3]}")
        return 2.0 * x - 1.0 if self.normalize_input else x

    def output_blocks(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """Preprocessed (N, H, W, 3) input -> pytorch-fid's four output blocks (its `output_blocks` 0..3), NHWC:
        the first max pool (64 channels), the second max pool (192), Mixed_6e (768) and pool3 (N, 2048)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        block0 = max_pool(x)
        block1 = max_pool(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(block0)))
        x = block1
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e):
            x = block(x)
        block2 = x
        for block in (self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return block0, block1, block2, jnp.mean(x, axis=(1, 2))  # adaptive average pool to 1x1

    def pool3(self, x: jax.Array) -> jax.Array:
        """Preprocessed (N, H, W, 3) input -> (N, 2048) pool3 features."""
        return self.output_blocks(x)[3]

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.pool3(self.preprocess(images))


class InceptionFeatures:
    """`fid.FeatureExtractor` around an InceptionV3: (N, H, W, 3) in [0, 1] -> (N, 2048).

    Preprocessing and the network are jitted separately, so frames of every size share one compiled network
    (at 299x299 when resizing); a new batch size still compiles once.
    """

    feature_dim = FEATURE_DIM

    def __init__(self, model: InceptionV3):
        graphdef, state = nnx.split(model)
        self._state = state
        self._preprocess = jax.jit(lambda state, images: nnx.merge(graphdef, state).preprocess(images))
        self._pool3 = jax.jit(lambda state, x: nnx.merge(graphdef, state).pool3(x))

    def __call__(self, images) -> jax.Array:
        x = self._preprocess(self._state, jnp.asarray(images, jnp.float32))
        return self._pool3(self._state, x)


# ----- Weights: pytorch-fid state dict -> variables -----


def _check_fc(weight: np.ndarray) -> None:
    if weight.shape != (FC_CLASSES, FEATURE_DIM):
        raise foreign.ConversionError(
            f"fc.weight has shape {weight.shape}, pytorch-fid's FID Inception has ({FC_CLASSES}, {FEATURE_DIM}); "
            "torchvision's ImageNet Inception (1000 classes) gives different, non-comparable FID numbers")


# pytorch-fid key -> NNX path, e.g. Mixed_5b.branch1x1.bn.running_var -> Mixed_5b/branch1x1/bn/var.
# A layer name holds at most one dot (block.branch); the rules split it with two groups.
RULES: tuple[Rule, ...] = tuple(
    Rule(source, target, hook)
    for prefix, dest in ((r"(Conv2d_\w+)", r"\1"), (r"(Mixed_\w+)\.(branch\w+)", r"\1/\2"))
    for source, target, hook in (
        (prefix + r"\.conv\.weight", dest + "/conv/kernel", hooks.conv),
        (prefix + r"\.bn\.weight", dest + "/bn/scale", None),
        (prefix + r"\.bn\.bias", dest + "/bn/bias", None),
        (prefix + r"\.bn\.running_mean", dest + "/bn/mean", None),
        (prefix + r"\.bn\.running_var", dest + "/bn/var", None),
        (prefix + r"\.bn\.num_batches_tracked", None, None),  # a training counter: consumed, not stored
    )
) + (
    Rule(r"fc\.weight", None, _check_fc),  # the logits layer: pool3 features do not use it
    Rule(r"fc\.bias", None),
)


def _builder(**kwargs):
    return lambda: InceptionV3(**kwargs, rngs=nnx.Rngs(0))


def abstract_variables(**kwargs) -> nnx.State:
    """Shapes of every variable (params and batch statistics), built with nnx.eval_shape (nothing allocated)."""
    return abstract.abstract_variables(_builder(**kwargs))


def from_variables(variables: nnx.State, **kwargs) -> InceptionV3:
    """An InceptionV3 holding `variables` (converted or restored), built abstractly; keyword arguments as
    InceptionV3."""
    return abstract.merge(_builder(**kwargs), variables)


def random_inception(seed: int = 0, **kwargs) -> InceptionV3:
    """An InceptionV3 with random He-normal kernels and identity BatchNorms, for tests and shape checks.

    The values are drawn with numpy into the eval_shape tree: initialising through nnx would compile one random
    draw per distinct kernel shape (about half a minute on a small CPU). Keyword arguments as InceptionV3.
    """
    rng = np.random.default_rng(seed)

    def fill(path, var):
        name, shape = path[-1], var.shape
        if name == "kernel":
            value = rng.standard_normal(shape, np.float32) * np.float32(math.sqrt(2.0 / math.prod(shape[:-1])))
        else:
            value = np.ones(shape, np.float32) if name in ("scale", "var") else np.zeros(shape, np.float32)
        return path, var.replace(value)

    shapes = abstract_variables(**kwargs)
    variables = nnx.from_flat_state([fill(path, var) for path, var in nnx.to_flat_state(shapes)])
    return from_variables(variables, **kwargs)


def convert_variables(tensors: Mapping[str, np.ndarray], *, source: str = "checkpoint") -> nnx.State:
    """pytorch-fid's state dict (numpy arrays) as InceptionV3 variables, validated by RULES against eval_shape.

    Raises ConversionError listing every unused, missing or mis-shaped tensor. A `module.` prefix
    (DataParallel) is stripped; `num_batches_tracked` and the 1008-class `fc` are consumed and dropped.
    """
    tensors = dict(tensors)
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = foreign.strip_prefix(tensors, "module.", source=source)
    return name_map.convert(tensors, RULES, abstract_variables(), source=source)


def convert_state_dict(tensors: Mapping[str, np.ndarray], *, source: str = "checkpoint", **kwargs) -> InceptionV3:
    """An InceptionV3 holding pytorch-fid's weights (keyword arguments as InceptionV3: resize, precision...)."""
    return from_variables(convert_variables(tensors, source=source), **kwargs)


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Tensors of `pt_inception-2015-12-05-6726825d.pth` (torch, weights_only=True; needs the `torch` extra) or
    of a safetensors file holding the same keys. Nothing is ever downloaded."""
    return foreign.read_tensors(path)


def convert_checkpoint(path: str | os.PathLike, out_dir: str | os.PathLike) -> os.PathLike:
    """Converts pytorch-fid's weight file into a converted checkpoint folder that `load_inception` reads."""
    variables = convert_variables(read_checkpoint(path), source=str(path))
    return converted.save(out_dir, variables, model_config={"name": NAME}, source=os.path.basename(path))


def load_inception(directory: str | os.PathLike, **kwargs) -> InceptionV3:
    """The InceptionV3 written by `convert_checkpoint` (tools/convert_inception.py); kwargs as InceptionV3."""
    name = converted.model_config(directory).get("name")
    if name != NAME:
        raise foreign.ConversionError(f"{directory} holds a converted {name!r}, not {NAME!r}")
    variables = converted.restore(directory, abstract_variables(**kwargs))
    return from_variables(variables, **kwargs)
