"""Losses of image reconstruction, for training renderers by self-reenactment.

    l1(fake, real)                     mean absolute error
    ms_ssim_loss(fake, real, scales)   1 - MS-SSIM (Wang, Simoncelli & Bovik 2003), Gaussian 11-tap window
    feature_l1(fake_feats, real_feats) perceptual / feature-matching distance between feature pyramids
    gan_generator / gan_discriminator  non-saturating GAN losses on logits (StyleGAN's, softplus form)

Images are (B, H, W, C) in [-1, 1] (renderers' tanh range). Every loss is per image, (B,), differentiable, so
padded frames can be weighted out (`weighted_mean`); the weights and which terms run come from the model's
`loss` config (models/renderer/losses.py).

MS-SSIM here is a training loss, not the metric: it uses valid (unpadded) Gaussian filtering by convolution and
clamps each scale's term at a small positive floor before the power (negative contrast-structure terms, common
early in training, would make the fractional powers NaN). The metric SSIM that papers report is
evaluate/image_quality.py (scikit-image's definition).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Wang et al.'s scale weights (5 scales); fewer scales take the first ones, renormalised.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WINDOW, _SIGMA = 11, 1.5
_C1, _C2 = 0.01 ** 2, 0.03 ** 2  # for unit range
_FLOOR = 1e-6


def _per_image(x: jax.Array) -> jax.Array:
    return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def weighted_mean(values: jax.Array, weight: jax.Array) -> jax.Array:
    """sum(w * v) / sum(w) over images; (B,), (B,) -> scalar (0 when every weight is 0)."""
    weight = weight.astype(jnp.float32)
    return jnp.sum(values * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def l1(fake: jax.Array, real: jax.Array) -> jax.Array:
    """Mean absolute error per image: (B, ...) x2 -> (B,)."""
    return _per_image(jnp.abs(fake.astype(jnp.float32) - real.astype(jnp.float32)))


def _gaussian_window(window: int) -> np.ndarray:
    x = np.arange(window, dtype=np.float64) - (window - 1) / 2
    g = np.exp(-0.5 * (x / _SIGMA) ** 2)
    return (g / g.sum()).astype(np.float32)


def _blur(x: jax.Array, taps: np.ndarray) -> jax.Array:
    """Valid separable Gaussian filter of (B, H, W, C) per channel (depthwise)."""
    c = x.shape[-1]
    k = len(taps)
    rows = jnp.broadcast_to(jnp.asarray(taps).reshape(k, 1, 1, 1), (k, 1, 1, c))
    cols = rows.reshape(1, k, 1, c)
    dims = ("NHWC", "HWIO", "NHWC")
    x = jax.lax.conv_general_dilated(x, rows, (1, 1), "VALID", dimension_numbers=dims, feature_group_count=c)
    return jax.lax.conv_general_dilated(x, cols, (1, 1), "VALID", dimension_numbers=dims, feature_group_count=c)


def _ssim_terms(x: jax.Array, y: jax.Array, window: int) -> tuple[jax.Array, jax.Array]:
    """Mean luminance*contrast*structure (SSIM) and contrast*structure (cs) per image, (B,) each."""
    taps = _gaussian_window(window)
    ux, uy = _blur(x, taps), _blur(y, taps)
    vx = _blur(x * x, taps) - ux * ux
    vy = _blur(y * y, taps) - uy * uy
    vxy = _blur(x * y, taps) - ux * uy
    cs = (2 * vxy + _C2) / (vx + vy + _C2)
    luminance = (2 * ux * uy + _C1) / (ux * ux + uy * uy + _C1)
    return jnp.mean(luminance * cs, axis=(1, 2, 3)), jnp.mean(cs, axis=(1, 2, 3))


def min_size(scales: int, window: int = _WINDOW) -> int:
    """The smallest image side that `scales` scales of MS-SSIM can filter (the coarsest must hold a window)."""
    return window * 2 ** (scales - 1)


def ms_ssim_loss(fake: jax.Array, real: jax.Array, scales: int = 5, window: int = _WINDOW) -> jax.Array:
    """1 - MS-SSIM over `scales` dyadic scales (1..5), images (B, H, W, C) in [-1, 1] -> (B,)."""
    if not 1 <= scales <= len(MS_SSIM_WEIGHTS):
        raise ValueError(f"ms_ssim scales must be 1..{len(MS_SSIM_WEIGHTS)}, got {scales}")
    side = min(fake.shape[1:3])
    if side < min_size(scales, window):
        raise ValueError(f"ms_ssim with {scales} scales and an {window}-tap window needs images of at least "
                         f"{min_size(scales, window)} px, got {fake.shape[1]}x{fake.shape[2]}; use fewer scales")
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales], np.float32)
    weights = weights / weights.sum()
    x = (fake.astype(jnp.float32) + 1.0) / 2.0
    y = (real.astype(jnp.float32) + 1.0) / 2.0
    value = jnp.ones(x.shape[0], jnp.float32)
    for s in range(scales):
        ssim, cs = _ssim_terms(x, y, window)
        term = ssim if s == scales - 1 else cs
        value = value * jnp.maximum(term, _FLOOR) ** weights[s]
        if s < scales - 1:
            b, h, w, c = x.shape  # 2x2 average pooling (odd sides drop their last row / column)
            x = x[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
            y = y[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    return 1.0 - value


def feature_l1(fake_features: list[jax.Array], real_features: list[jax.Array],
               weights: tuple[float, ...] | None = None) -> jax.Array:
    """Weighted sum over layers of the mean |fake - real| feature distance per image (perceptual loss, feature
    matching): lists of (B, ...) -> (B,)."""
    if len(fake_features) != len(real_features):
        raise ValueError(f"feature pyramids differ in depth: {len(fake_features)} vs {len(real_features)}")
    weights = weights or (1.0,) * len(fake_features)
    return sum(w * l1(f, r) for w, f, r in zip(weights, fake_features, real_features))


def gan_generator(fake_logits: jax.Array) -> jax.Array:
    """Non-saturating generator loss softplus(-D(fake)) = -log sigmoid(D(fake)), per image: (B, ...) -> (B,)."""
    return _per_image(jax.nn.softplus(-fake_logits.astype(jnp.float32)))


def gan_discriminator(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """softplus(-D(real)) + softplus(D(fake)): the discriminator's logistic loss per image, (B, ...) -> (B,)."""
    return (_per_image(jax.nn.softplus(-real_logits.astype(jnp.float32)))
            + _per_image(jax.nn.softplus(fake_logits.astype(jnp.float32))))
