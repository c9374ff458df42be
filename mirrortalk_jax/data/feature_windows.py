"""Per-video-frame windows over a sequence of audio features (DreamTalk's `get_wav2vec_audio_window`).

Video frame i is centred on feature row `stride * i` and takes rows stride*i - win .. stride*i + win; rows
outside [0, N) are zero vectors (not edge copies: this is what the original feeds its content encoder, so the
first and last frames of a clip see silence-like padding). With wav2vec2 features at 50 Hz and video at 25 fps,
stride = 2 and win = 5 give DreamTalk's 11-row (~220 ms) windows and N // 2 frames. Per-frame features (our
log-mel frontend gives one 4x80 row per video frame) use stride = 1.

The numpy version is for data preparation; the jax version builds the windows of a block of frames inside a
jitted sampler (start may be traced), so long audio never needs all windows in memory at once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _check(win_size: int, stride: int) -> None:
    if win_size < 0 or stride < 1:
        raise ValueError(f"expected win_size >= 0 and stride >= 1, got win_size={win_size}, stride={stride}")


def num_windows(num_rows: int, stride: int = 2) -> int:
    """Frames a feature sequence of `num_rows` rows yields: N // stride (DreamTalk: len(w2v) // 2)."""
    return num_rows // stride


def audio_windows(features: np.ndarray, win_size: int = 5, stride: int = 2, start: int = 0,
                  num_frames: int | None = None) -> np.ndarray:
    """(N, F) features -> (num_frames, 2 * win_size + 1, F) windows of frames start .. start + num_frames - 1.

    num_frames defaults to N // stride - start. Same values as the original's per-frame Python loop.
    """
    _check(win_size, stride)
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features: expected (N, F), got shape {features.shape}")
    n = features.shape[0]
    num_frames = num_windows(n, stride) - start if num_frames is None else num_frames
    idx = stride * (start + np.arange(num_frames))[:, None] + np.arange(-win_size, win_size + 1)[None, :]
    valid = (idx >= 0) & (idx < n)
    gathered = features[np.clip(idx, 0, max(n - 1, 0))] if n else np.zeros(idx.shape + features.shape[1:])
    return np.where(valid[..., None], gathered, 0).astype(features.dtype if n else np.float32)


def audio_windows_jax(features: jax.Array, win_size: int, stride: int, start: jax.Array | int,
                      num_frames: int) -> jax.Array:
    """Batched, jittable: (B, N, F) -> (B, num_frames, 2 * win_size + 1, F) for frames start .. start + num - 1.

    `start` may be traced; `num_frames` is static. Frames past the end get all-zero windows.
    """
    _check(win_size, stride)
    n = features.shape[1]
    idx = stride * (start + jnp.arange(num_frames))[:, None] + jnp.arange(-win_size, win_size + 1)[None, :]
    valid = (idx >= 0) & (idx < n)
    gathered = jnp.take(features, jnp.clip(idx, 0, n - 1), axis=1)  # (B, num, W, F)
    return jnp.where(valid[None, :, :, None], gathered, 0.0).astype(features.dtype)
