"""Image warping with PyTorch's sampling conventions: bilinear resize, `grid_sample`, flow -> sampling grid.

Flow-based renderers (PIRenderer, FOMM-style warpers) predict a flow at low resolution, turn it into a sampling
grid in [-1, 1] coordinates, resize the grid to the image size and sample the source image there. Ports must match
torch's conventions exactly, which differ per function and are mixed on purpose in those models:

- `grid_sample(..., align_corners=False)` (torch's default): -1 and +1 are the outer *edges* of the corner pixels,
  pixel centres sit at (2i + 1) / size - 1; samples outside the image read zeros (padding_mode="zeros").
- `F.interpolate(mode="bilinear", align_corners=False)`: half-pixel centres, source index clamped at 0.
- PIRenderer's flow grid uses the corner-aligned convention (x_j = 2 j / (w - 1) - 1), so a zero flow is *not* an
  exact identity warp; `flow_to_deformation` keeps that.

All functions are NHWC, batch first, jit-able; shapes are static (index tables are built with numpy).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torch's align_corners=False linear interpolation along one axis: (i0, i1, w0, w1) per output index."""
    scale = np.float32(in_size / out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.floor(src).astype(np.int32)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, np.float32(1.0) - w1, w1


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """`F.interpolate(x, size, mode="bilinear", align_corners=False)` on (B, h, w, C) -> (B, H, W, C).

    Width first, then height: out = wh0 * (row h0 interpolated) + wh1 * (row h1 interpolated), as torch's kernel.
    """
    (_, h, w, _), (out_h, out_w) = x.shape, size
    if (h, w) == (out_h, out_w):
        return x
    c0, c1, cw0, cw1 = _linear_taps(w, out_w)
    x = x[:, :, c0] * cw0[None, None, :, None] + x[:, :, c1] * cw1[None, None, :, None]
    r0, r1, rw0, rw1 = _linear_taps(h, out_h)
    return x[:, r0] * rw0[None, :, None, None] + x[:, r1] * rw1[None, :, None, None]


def grid_sample(image: jax.Array, grid: jax.Array) -> jax.Array:
    """`F.grid_sample(image, grid)` with torch's defaults: bilinear, padding_mode="zeros", align_corners=False.

    image (B, H, W, C); grid (B, Ho, Wo, 2) holding (x, y) in [-1, 1] (x along the width) -> (B, Ho, Wo, C).
    """
    b, h, w, c = image.shape
    gx, gy = grid[..., 0], grid[..., 1]
    # Unnormalise (align_corners=False) and weigh the four neighbours as torch's CPU kernel does.
    ix = (gx + 1.0) * (w / 2.0) - 0.5
    iy = (gy + 1.0) * (h / 2.0) - 0.5
    ix0, iy0 = jnp.floor(ix), jnp.floor(iy)
    ix1, iy1 = ix0 + 1.0, iy0 + 1.0
    west, north = ix - ix0, iy - iy0  # distances to the west / north neighbours
    east, south = 1.0 - west, 1.0 - north
    corners = ((ix0, iy0, south * east), (ix1, iy0, south * west), (ix0, iy1, north * east), (ix1, iy1, north * west))
    flat = image.reshape(b, h * w, c)
    out = jnp.zeros((b, *grid.shape[1:3], c), image.dtype)
    for cx, cy, weight in corners:
        inside = (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)
        index = (jnp.clip(cy, 0, h - 1) * w + jnp.clip(cx, 0, w - 1)).astype(jnp.int32)
        values = jnp.take_along_axis(flat, index.reshape(b, -1, 1), axis=1).reshape(out.shape)
        out = out + values * jnp.where(inside, weight, 0.0)[..., None].astype(image.dtype)
    return out


def flow_to_deformation(flow: jax.Array) -> jax.Array:
    """PIRenderer's `convert_flow_to_deformation`: flow (B, h, w, 2) in pixels (x, y) -> grid (B, h, w, 2).

    Corner-aligned base grid x_j = 2 * (j / (w - 1)) - 1 plus the flow scaled by 2 / (w - 1) (x) and 2 / (h - 1) (y).
    """
    _, h, w, _ = flow.shape
    # The base grid is a constant: built in numpy, whose float32 division is correctly rounded as torch's (XLA's
    # CPU division may be 1 ulp off, which moves samples by ~1e-6 pixel).
    x = np.float32(2) * (np.arange(w, dtype=np.float32) / np.float32(w - 1)) - np.float32(1)
    y = np.float32(2) * (np.arange(h, dtype=np.float32) / np.float32(h - 1)) - np.float32(1)
    base = np.stack(np.broadcast_arrays(x[None, :], y[:, None]), axis=-1).astype(flow.dtype)  # (h, w, 2) as (x, y)
    scaled = 2.0 * jnp.stack([flow[..., 0] / (w - 1), flow[..., 1] / (h - 1)], axis=-1)
    return base + scaled


def warp_image(image: jax.Array, deformation: jax.Array) -> jax.Array:
    """PIRenderer's `warp_image`: resize the grid to the image size if needed (bilinear), then grid_sample.

    image (B, H, W, C), deformation (B, h, w, 2) -> (B, H, W, C).
    """
    grid = resize_bilinear(deformation, image.shape[1:3])
    return grid_sample(image, grid)
