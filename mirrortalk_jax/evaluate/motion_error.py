"""Errors between generated and ground-truth motion, overall and per facial region of the MotionSpec.

AED / APD as the literature reports them: mean absolute error on expression channels (every group but
`pose`) and on pose channels, over valid frames.
"""

from __future__ import annotations

import numpy as np

from mirrortalk_jax.data.motion_spec import MotionSpec


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    """Mean of (B, L, C) values over frames where mask (B, L) is True and over channels."""
    weight = mask[..., None].astype(np.float64) * np.ones(values.shape[-1])
    return float((values * weight).sum() / max(weight.sum(), 1.0))


def region_errors(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, spec: MotionSpec) -> dict[str, float]:
    """{"mse", "l1", "aed", "apd", "mse/<group>"...} for (B, L, D) motion and a (B, L) validity mask."""
    pred, target, mask = np.asarray(pred, np.float64), np.asarray(target, np.float64), np.asarray(mask, bool)
    if pred.shape != target.shape or pred.shape[-1] != spec.dim or mask.shape != pred.shape[:-1]:
        raise ValueError(f"expected pred and target (B, L, {spec.dim}) and mask (B, L); got {pred.shape}, "
                         f"{target.shape}, {mask.shape}")
    sq, ab = np.square(pred - target), np.abs(pred - target)
    out = {"mse": _masked_mean(sq, mask), "l1": _masked_mean(ab, mask)}
    pose = spec.group_mask("pose")
    out["aed"] = _masked_mean(ab[..., ~pose], mask)
    out["apd"] = _masked_mean(ab[..., pose], mask)
    for group in spec.group_names:
        out[f"mse/{group}"] = _masked_mean(sq[..., spec.group_indices(group)], mask)
    return out
