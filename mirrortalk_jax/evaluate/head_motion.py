"""Head pose and blinks of generated motion next to a reference's, on a real-face motion space (prepare's mesh
space: `pitch`, `yaw`, `roll` in radians, `eye_open_right` / `eye_open_left` lid gap over eye width).

    stats = head_motion.summary(motion, spec, fps=25)   # {"pose_std_deg", "blinks_per_min", ...}

pose_std_deg    the standard deviation of pitch, yaw and roll over the clip, in degrees, averaged over the three
                (how much the head moves; a copied still pose scores 0)
blinks_per_min  closures of the mean eye openness below `closed_fraction` of the clip's median openness
                (a fall below the threshold counts once until the eyes reopen above the median's midpoint)
APD between a generated and a reference clip of different lengths has no frame pairing; what the literature's
pose diversity measures is compared here as these two statistics side by side.
"""

from __future__ import annotations

import numpy as np

from mirrortalk_jax.data.motion_spec import MotionSpec

ANGLES = ("pitch", "yaw", "roll")
EYES = ("eye_open_right", "eye_open_left")


def _channels(motion: np.ndarray, spec: MotionSpec, names: tuple[str, ...]) -> np.ndarray:
    missing = [n for n in names if n not in spec.channels]
    if missing:
        raise ValueError(f"motion space {spec.name!r} has no channel(s) {missing}: head pose and blinks are "
                         "measured on a real-face space (mirrortalk data prepare)")
    return np.asarray(motion, np.float64)[:, [spec.index(n) for n in names]]


def blinks(openness: np.ndarray, closed_fraction: float = 0.6) -> int:
    """Number of closures in a (T,) eye-openness series (see the module docstring)."""
    median = float(np.median(openness))
    if median <= 0:
        return 0
    closed, reopen = closed_fraction * median, 0.5 * (1 + closed_fraction) * median
    count, is_closed = 0, False
    for value in openness:
        if not is_closed and value < closed:
            count, is_closed = count + 1, True
        elif is_closed and value > reopen:
            is_closed = False
    return count


def summary(motion: np.ndarray, spec: MotionSpec, fps: float = 25.0) -> dict[str, float]:
    """Head-motion statistics of a (T, D) clip (see the module docstring)."""
    angles = _channels(motion, spec, ANGLES)
    eyes = _channels(motion, spec, EYES).mean(1)
    minutes = len(motion) / fps / 60.0
    return {"pose_std_deg": float(np.degrees(angles.std(0)).mean()), "blinks": blinks(eyes),
            "blinks_per_min": blinks(eyes) / minutes if minutes > 0 else 0.0, "seconds": len(motion) / fps}
