"""Renderers: the project's own (motion_renderer.py) and what every trainable renderer shares (losses,
discriminator).

Every renderer (ours, the PIRenderer port) offers one interface, so evaluation, generation and personalization
never ask which one they hold:

    driving = renderer.driving(motion, start, stop)     # per-frame inputs of frames start..stop-1 of (T, D)
    frames = renderer.render_frames(source_images, source_motion, driving)   # (n, H, W, 3) in [-1, 1]
    loss, metrics = renderer.loss(batch, rng, train)    # self-reenactment training (the shared trainer)

and the portrait's appearance apart from any motion (encoded once; personalization optimises it, personalized.py):

    appearance = renderer.encode(source_images)         # a dict of arrays, batch first
    frames = renderer.render_appearance(appearance, source_motion, driving)
"""

from __future__ import annotations

from typing import Protocol

import jax
import numpy as np


class Renderer(Protocol):
    image_size: tuple[int, int]

    def driving(self, motion: jax.Array | np.ndarray, start: int = 0, stop: int | None = None) -> jax.Array:
        """Per-frame driving inputs of frames start..stop-1 of a clip's motion (T, D)."""

    def render_frames(self, source_image: jax.Array, source_motion: jax.Array, driving: jax.Array) -> jax.Array:
        """(n, H, W, 3) portraits in [-1, 1] and (n, D) their motion, per-frame driving -> (n, H, W, 3) in [-1, 1]."""

    def encode(self, source_image: jax.Array) -> dict:
        """(n, H, W, 3) portraits in [-1, 1] -> their appearance (a dict of (n, ...) arrays)."""

    def render_appearance(self, appearance: dict, source_motion: jax.Array, driving: jax.Array) -> jax.Array:
        """`render_frames` from an appearance instead of portraits."""
