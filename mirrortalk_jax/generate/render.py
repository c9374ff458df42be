"""DreamTalk's demo path: frames from a portrait and per-frame coefficients with its PIRenderer, batch by batch
(any renderer of the renderer interface: sample/frames.py).

    frames = iter_frames(pirenderer, image, coefficients)      # DreamTalk's demo, exactly

It keeps one fixed batch shape (the last batch padded), so one program is compiled whatever the clip length,
and device and host memory hold one batch of frames at a time. It is the original demo (generators/utils.py render_video): the portrait goes to [-1, 1] as torchvision's
ToTensor + Normalize(0.5, 0.5), every frame reads the 27-frame window of coefficients around it (clamped at the
clip ends), and outputs become uint8 as clamp(-1, 1), then (x + 1) / 2 * 255 truncated. Batches have one fixed
size (the last is padded), so one program is compiled whatever the clip length, and device memory holds one
batch of frames at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from mirrortalk_jax.models.pirenderer import renderer as pirenderer
from mirrortalk_jax.sample import compiled


def image_to_model(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> float32 in [-1, 1], in the original's operation order (x / 255 - 0.5) / 0.5."""
    return (image.astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)


def _render_uint8(renderer: pirenderer.PIRenderer, image: jax.Array, windows: jax.Array) -> jax.Array:
    """The renderer's forward pass for one source image and a batch of windows, as uint8 (converted on the
    device)."""
    source = jnp.broadcast_to(image, (windows.shape[0], *image.shape[1:]))
    out = renderer.render(source, windows)
    return ((jnp.clip(out, -1.0, 1.0) + 1.0) / 2.0 * 255.0).astype(jnp.uint8)


def iter_frames(renderer: pirenderer.PIRenderer, image: np.ndarray, coefficients: np.ndarray,
                batch_size: int = 16) -> Iterator[np.ndarray]:
    """Renders one frame per row of coefficients, yielding (<= batch_size, H, W, 3) uint8 batches in order, so
    a caller can encode a long clip as it is rendered (host memory: one batch).

    renderer: a `pirenderer` model. image: (H, W, 3) uint8 RGB portrait (H, W multiples of the renderer's
    `multiple`). coefficients: (T, coeff_nc) per frame (DreamTalk: 64 expression + 3 angles + 3 translation +
    3 crop). batch_size: frames per renderer call. Inputs are checked before the first batch is rendered.
    """
    image, coefficients = np.asarray(image), np.asarray(coefficients, np.float32)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    width = renderer.mapping_net.first.in_features
    if coefficients.ndim != 2 or coefficients.shape[1] != width or not len(coefficients):
        raise ValueError(f"the renderer reads {width} coefficients per frame, got an array of shape "
                         f"{coefficients.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    render = compiled.bind(_render_uint8, renderer)  # compiled once per renderer structure
    return _batches(render, jnp.asarray(image_to_model(image))[None], coefficients, batch_size)


def _batches(render, source: jax.Array, coefficients: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    num_frames = len(coefficients)
    for start in range(0, num_frames, batch_size):
        stop = min(start + batch_size, num_frames)
        windows = pirenderer.motion_windows(coefficients, start=start, stop=stop)
        if stop - start < batch_size:  # the last batch: repeat its last window, drop those frames
            windows = jnp.concatenate([windows, jnp.repeat(windows[-1:], batch_size - (stop - start), axis=0)])
        yield np.asarray(render(source, windows))[:stop - start]


def render_frames(renderer: pirenderer.PIRenderer, image: np.ndarray, coefficients: np.ndarray,
                  batch_size: int = 16) -> np.ndarray:
    """All frames of `iter_frames` as one (T, H, W, 3) uint8 array."""
    return np.concatenate(list(iter_frames(renderer, image, coefficients, batch_size)))
