"""Generated face crops back into the full photo, blended with a soft mask.

    paste = PasteBack(photo, transform, crop_size=256)    # once per photo
    full = paste(crop)                                    # (H, W, 3) uint8 per generated (S, S, 3) crop

The crop was cut as crop = a * photo + (bx, by) (prepare/tracking.py); the generated crop goes back by the inverse
map, resampled into the photo's box under it only (a 12-megapixel photo costs no more than its face), and blended
with a mask that is 1 over the face and falls to 0 before the crop's border, so the renderer's background never
shows a seam against the still photo.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def soft_mask(size: int, inner: float = 0.36, outer: float = 0.48) -> np.ndarray:
    """(size, size) float32: 1 inside a centred disc of radius `inner` * size, a smooth (cosine) fall to 0 at
    `outer` * size."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32) + 0.5
    r = np.hypot(xx - size / 2, yy - size / 2) / size
    t = np.clip((r - inner) / (outer - inner), 0.0, 1.0)
    return (0.5 + 0.5 * np.cos(np.pi * t)).astype(np.float32)


class PasteBack:
    """Pastes (S, S, 3) crops of one photo back into it (see the module docstring)."""

    def __init__(self, photo: np.ndarray, transform: np.ndarray, crop_size: int):
        self.photo = np.asarray(photo, np.uint8)
        a, bx, by = (float(v) for v in transform)
        self.a, self.bx, self.by, self.size = a, bx, by, int(crop_size)
        h, w = self.photo.shape[:2]
        # The photo's pixels the crop covers: [(0 - b) / a, (S - b) / a), clipped to the photo.
        x0, y0 = max(int(np.floor(-bx / a)), 0), max(int(np.floor(-by / a)), 0)
        x1, y1 = min(int(np.ceil((crop_size - bx) / a)), w), min(int(np.ceil((crop_size - by) / a)), h)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"the crop transform {tuple(transform)} maps outside the {w}x{h} photo")
        self.box = (x0, y0, x1, y1)
        mask = self._warp(Image.fromarray((soft_mask(crop_size) * 255).astype(np.uint8)))
        self.mask = (np.asarray(mask, np.float32) / 255.0)[..., None]
        self.background = self.photo[y0:y1, x0:x1].astype(np.float32)

    def _warp(self, image: Image.Image) -> Image.Image:
        """A crop-space image resampled onto the photo's box: box pixel (u, v) reads crop pixel
        a * (u + x0) + bx, a * (v + y0) + by."""
        x0, y0, x1, y1 = self.box
        coefficients = (self.a, 0.0, self.a * x0 + self.bx, 0.0, self.a, self.a * y0 + self.by)
        return image.transform((x1 - x0, y1 - y0), Image.Transform.AFFINE, coefficients,
                               resample=Image.Resampling.BILINEAR)

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        crop = np.asarray(crop, np.uint8)
        if crop.shape != (self.size, self.size, 3):
            raise ValueError(f"expected a ({self.size}, {self.size}, 3) generated crop, got {crop.shape}")
        face = np.asarray(self._warp(Image.fromarray(crop)), np.float32)
        out = self.photo.copy()
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = np.round(self.background + self.mask * (face - self.background)).astype(np.uint8)
        return out
