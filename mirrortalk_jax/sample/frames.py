"""Motion -> frames with any renderer of the renderer interface (models/renderer: `driving` + `render_frames`),
batch by batch: what generation, evaluation and the streaming API render with.

    for frames in render_batches(renderer, portrait, portrait_motion, motion):   # (<= batch, H, W, 3) uint8
    frames = render_clip(renderer, portrait, portrait_motion, motion)            # (T, H, W, 3) uint8

One fixed batch shape (the last batch padded), so one program is compiled per renderer structure whatever the
clip length, and device and host memory hold one batch of frames at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirrortalk_jax.sample import compiled


def to_uint8(images: jax.Array | np.ndarray) -> np.ndarray:
    """Renderer output in [-1, 1] -> uint8 (clipped, rounded)."""
    return np.asarray(jnp.round((jnp.clip(images, -1.0, 1.0) + 1.0) * 127.5)).astype(np.uint8)


def _render_interface(renderer, source_image, source_motion, driving):
    return renderer.render_frames(source_image, source_motion, driving)


def render_batches(renderer, portrait: np.ndarray, portrait_motion: np.ndarray, motion: np.ndarray, *,
                   start: int = 0, stop: int | None = None, batch_size: int = 16) -> Iterator[np.ndarray]:
    """Frames start..stop-1 of a clip rendered from one portrait, yielded in order as (<= batch_size, H, W, 3) uint8.

    portrait (H, W, 3) uint8, portrait_motion (D,), motion (T, D). A renderer module is compiled once per
    structure and batch shape; a plain object (evaluate/renderer_quality.PortraitCopy) runs eagerly.
    """
    stop = len(motion) if stop is None else stop
    image = jnp.asarray(portrait, jnp.float32) / 127.5 - 1.0
    sources = jnp.broadcast_to(image, (batch_size, *image.shape))
    source_motion = jnp.broadcast_to(jnp.asarray(portrait_motion, jnp.float32), (batch_size, motion.shape[1]))
    run = (compiled.bind(_render_interface, renderer) if isinstance(renderer, nnx.Module)
           else renderer.render_frames)
    for first in range(start, stop, batch_size):
        last = min(first + batch_size, stop)
        driving = renderer.driving(motion, first, last)
        pad = batch_size - (last - first)
        if pad:
            driving = jnp.concatenate([driving, jnp.repeat(driving[-1:], pad, axis=0)])
        yield to_uint8(run(sources, source_motion, driving)[:last - first])


def render_clip(renderer, portrait: np.ndarray, portrait_motion: np.ndarray, motion: np.ndarray, *,
                start: int = 0, stop: int | None = None, batch_size: int = 16) -> np.ndarray:
    """All frames of `render_batches` as one (n, H, W, 3) uint8 array."""
    return np.concatenate(list(render_batches(renderer, portrait, portrait_motion, motion, start=start, stop=stop,
                                              batch_size=batch_size)))
