"""Windows over sequences: the one place that cuts them, for numpy (data preparation) and jax (inside jit).

Two kinds:
  sliding_windows(x, K)         window i = frames i .. i+K-1, T - K + 1 windows, no padding: what sync experts
                                and SyncNet-style offsets compare (motion window i against audio window i).
  centred_windows(x, r, stride) window i centred on row stride * i: rows stride*i - r .. stride*i + r, outside the
                                sequence zero rows (DreamTalk's `get_wav2vec_audio_window`: the first and last
                                frames see silence-like padding) or copies of the edge rows (`edge="replicate"`).
                                With wav2vec2 rows at 50 Hz and video at 25 fps, stride 2 and r 5 give DreamTalk's
                                11-row (~220 ms) windows and N // 2 frames; per-frame features use stride 1.

Both work on numpy and jax arrays (integer gathers); `centred_windows` takes a traced `start` under jit (frames
start .. start + num_frames - 1, num_frames static), so long audio never needs all windows in memory at once.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

EDGES = ("zero", "replicate")


def sliding_windows(x: Any, window: int, axis: int = 0) -> Any:
    """(..., T, ...) -> (..., T - window + 1, window, ...) along `axis`: window i holds frames i .. i+window-1."""
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    if x.ndim <= axis or x.shape[axis] < window:
        raise ValueError(f"need at least window={window} frames along axis {axis}, got shape {tuple(x.shape)}")
    idx = np.arange(x.shape[axis] - window + 1)[:, None] + np.arange(window)[None, :]
    return x[(slice(None),) * axis + (idx,)]


def num_centred_windows(num_rows: int, stride: int = 1) -> int:
    """Frames a sequence of `num_rows` rows yields: N // stride (DreamTalk: len(w2v) // 2)."""
    return num_rows // stride


def centred_windows(x: Any, radius: int, *, stride: int = 1, start: Any = 0, num_frames: int | None = None,
                    axis: int = 0, edge: str = "zero") -> Any:
    """(..., N, ...) rows -> (..., num_frames, 2 * radius + 1, ...) windows of frames start .. start + num - 1.

    num_frames defaults to N // stride - start (start must then be a Python int). Frame i takes rows
    stride * i - radius .. stride * i + radius; rows outside [0, N) are zeros (`edge="zero"`, also for frames past
    the end) or the nearest edge row (`edge="replicate"`, which needs N >= 1). numpy in, numpy out, unless
    `start` is traced.
    """
    if radius < 0 or stride < 1:
        raise ValueError(f"expected radius >= 0 and stride >= 1, got radius={radius}, stride={stride}")
    if edge not in EDGES:
        raise ValueError(f"edge must be one of {EDGES}, got {edge!r}")
    if x.ndim <= axis:
        raise ValueError(f"expected rows along axis {axis}, got shape {tuple(x.shape)}")
    xp = jnp if isinstance(x, jax.Array) or isinstance(start, jax.Array) else np
    n = x.shape[axis]
    if num_frames is None:
        num_frames = num_centred_windows(n, stride) - int(start)
    idx = stride * (start + xp.arange(num_frames))[:, None] + xp.arange(-radius, radius + 1)[None, :]
    rest = x.shape[axis + 1:]
    if n == 0:
        if edge == "replicate":
            raise ValueError(f"cannot replicate the edge rows of an empty sequence (shape {tuple(x.shape)})")
        return xp.zeros(x.shape[:axis] + idx.shape + rest, np.float32)
    gathered = xp.take(x, xp.clip(idx, 0, n - 1), axis=axis)
    if edge == "replicate":
        return gathered
    valid = ((idx >= 0) & (idx < n)).reshape((1,) * axis + idx.shape + (1,) * len(rest))
    return xp.where(valid, gathered, 0).astype(x.dtype)
