"""Landmark distances as the talking-face literature computes them (M-LMD, F-LMD), and SynthTalk landmarks.

Definition (EAT's `test_lmd.py`, ER-NeRF's `LMDMeter`; see docs/research notes on metrics):

    for every frame t, with P the selected points (all K when `points` is None):
        a_t = pred[t, P] - mean_P(pred[t, P])       (centring over the selected points only)
        b_t = gt[t, P]   - mean_P(gt[t, P])
        d_t = mean over p in P of ||a_t[p] - b_t[p]||_2
    LMD = mean over frames of d_t

i.e. sum of point-wise Euclidean distances / (frames x |P|). Translation is normalised per frame and per set
(each set by its own mean); there is no scale or rotation normalisation. `center=False` skips the centring.

* M-LMD: mouth = points 48-67 of the dlib-68 layout (20 points: outer lip 48-59, inner lip 60-67).
* F-LMD: all 68 points.
* Units: those of the inputs. For SynthTalk (`synthtalk_landmarks`, or a record's `landmarks_2d`) that is
  pixels of the dataset's square image of side `image_size` (64 for `tiny`, 128 for `default`). The
  literature measures on 256x256 aligned crops; multiply by 256 / image_size to put numbers on that scale
  (`to_256`). Numbers from another landmark backend (dlib vs FAN vs MediaPipe) are not comparable.
* Frames: pred and gt must have the same number of frames (the literature index-matches with `linspace` when
  lengths differ; `match_frames` does that). Frames can be excluded with `mask` (e.g. no detection), as the
  literature skips frames without a detection in either video.

Everything is numpy and vectorised over frames (and any further leading axes): (..., K, C) with C = 2 or 3.
"""

from __future__ import annotations

import numpy as np

from mirrortalk_jax.data.synthtalk import face

NUM_LANDMARKS = 68
# dlib-68 mouth: outer lip 48-59 and inner lip 60-67.
MOUTH_POINTS = np.arange(48, 68)
FACE_POINTS = np.arange(NUM_LANDMARKS)
MOUTH_POINTS.setflags(write=False)
FACE_POINTS.setflags(write=False)
# The literature's crop size for landmark distances (EAT, PC-AVS): 256x256 aligned faces.
LITERATURE_CROP = 256


def _check(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt landmarks must have the same shape (..., K, 2|3), got {pred.shape} and "
                         f"{gt.shape}; index-match frames first (match_frames) if the lengths differ")
    if pred.ndim < 2 or pred.shape[-1] not in (2, 3):
        raise ValueError(f"expected landmarks of shape (..., K, 2) or (..., K, 3), got {pred.shape}")
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(gt))):
        raise ValueError("landmarks contain NaN or inf")
    return pred, gt


def _select(x: np.ndarray, points) -> np.ndarray:
    if points is None:
        return x
    points = np.asarray(points)
    if points.ndim != 1 or points.size == 0 or not np.issubdtype(points.dtype, np.integer):
        raise ValueError(f"points must be a non-empty 1-D array of landmark indices, got {points!r}")
    if points.min() < 0 or points.max() >= x.shape[-2]:
        raise ValueError(f"points {points.min()}..{points.max()} out of range for K={x.shape[-2]} landmarks")
    return x[..., points, :]


def per_frame_lmd(pred: np.ndarray, gt: np.ndarray, points=None, center: bool = True) -> np.ndarray:
    """Per-frame landmark distance d_t (see the module docstring). (..., K, C) x2 -> (...,) float64."""
    pred, gt = _check(pred, gt)
    a, b = _select(pred, points), _select(gt, points)
    if center:
        a = a - a.mean(axis=-2, keepdims=True)
        b = b - b.mean(axis=-2, keepdims=True)
    return np.linalg.norm(a - b, axis=-1).mean(axis=-1)


def lmd(pred: np.ndarray, gt: np.ndarray, points=None, center: bool = True, mask: np.ndarray | None = None) -> float:
    """Landmark distance: per frame, mean L2 distance over `points` after centring each set on its own mean
    (over those points); averaged over frames (and any leading batch axes).

    Args:
      pred, gt: (T, K, 2|3) (or (..., T, K, C)) landmarks, same shape, same units (pixels for 2D).
      points: landmark indices to use (None = all K); centring uses the same points.
      center: subtract each set's per-frame mean before comparing (translation-normalised, the literature's
        default); False compares raw positions.
      mask: optional boolean (...,) over frames; only True frames count (at least one must be True).
    Returns:
      the mean distance, in the units of the inputs.
    """
    d = per_frame_lmd(pred, gt, points, center)
    if mask is None:
        return float(d.mean())
    mask = np.asarray(mask, bool)
    if mask.shape != d.shape:
        raise ValueError(f"mask must have the frame shape {d.shape}, got {mask.shape}")
    if not mask.any():
        raise ValueError("mask selects no frame")
    return float(d[mask].mean())


def m_lmd(pred: np.ndarray, gt: np.ndarray, center: bool = True, mask: np.ndarray | None = None) -> float:
    """Mouth landmark distance: `lmd` over dlib points 48-67 (20 points), centred on the mouth's own mean."""
    _require_68(pred)
    return lmd(pred, gt, MOUTH_POINTS, center, mask)


def f_lmd(pred: np.ndarray, gt: np.ndarray, center: bool = True, mask: np.ndarray | None = None) -> float:
    """Face landmark distance: `lmd` over all 68 dlib points, centred on the face's mean."""
    _require_68(pred)
    return lmd(pred, gt, FACE_POINTS, center, mask)


def _require_68(x) -> None:
    shape = np.shape(x)
    if len(shape) < 2 or shape[-2] != NUM_LANDMARKS:
        raise ValueError(f"M-LMD / F-LMD need dlib-68 landmarks (..., 68, C), got shape {shape}")


def to_256(distance: float, image_size: int) -> float:
    """A pixel distance measured at `image_size` expressed at the literature's 256x256 crop scale."""
    return float(distance) * LITERATURE_CROP / float(image_size)


def match_frames(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index-matches two sequences of different lengths as EAT does: the longer one is sampled at
    `linspace(0, T_long - 1, T_short)` (rounded down), so both come back with T_short frames."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if len(pred) == len(gt):
        return pred, gt
    short = min(len(pred), len(gt))
    if short == 0:
        raise ValueError("cannot match an empty sequence")
    def pick(x):
        return x[np.linspace(0, len(x) - 1, short).astype(int)] if len(x) != short else x
    return pick(pred), pick(gt)


def synthtalk_landmarks(motion: np.ndarray, face_shape, image_size: int) -> np.ndarray:
    """Pixel landmarks of SynthTalk motion: the speaker's parametric face driven by `motion`, posed and projected.

    Exactly the geometry the SynthTalk builder uses for a record's `landmarks_2d` (`face.landmarks_3d` then
    `face.project` with the default camera), so generated motion is scored like real landmarks would be.

    Args:
      motion: (T, 18) SynthTalk motion (SYNTHTALK_SPEC channel order).
      face_shape: the speaker's shape, (8,) floats in `FaceShape.fields()` order (a SynthTalk record's
        metadata["face_shape"]) or a `face.FaceShape`.
      image_size: side of the square image in pixels (the dataset metadata's `image_size`).
    Returns:
      (T, 68, 2) float32 pixel coordinates (x right, y down, origin at the top-left corner).
    """
    shape = face_shape if isinstance(face_shape, face.FaceShape) else face.FaceShape.from_array(
        np.asarray(face_shape, np.float64))
    return face.project(face.landmarks_3d(np.asarray(motion), shape), image_size)
