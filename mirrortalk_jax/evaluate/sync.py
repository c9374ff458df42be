"""The SyncNet audio-visual offset / confidence procedure, on embeddings (model-agnostic).

This is the procedure of syncnet_python (`SyncNetInstance.evaluate` / `calc_pdist`), which defines the
literature's LSE-D (`min_dist`) and LSE-C (`confidence`) metrics. It takes per-window embeddings of the two
streams, so the same code serves a SyncNet port (video windows of mouth crops), the motion expert (windows of
lower-face motion) and any other audio-visual embedding pair:

    1. pad the audio embeddings with `vshift` zero rows at both ends: (T + 2*vshift, E);
    2. for every frame i, the L2 distances between video_emb[i] and padded audio rows i .. i + 2*vshift
       (2*vshift + 1 candidate offsets; like torch's `pairwise_distance`, eps=1e-6 is added to the difference);
    3. mean over frames per offset: mean_dists (2*vshift + 1,);
    4. confidence = median(mean_dists) - min(mean_dists); offset = vshift - argmin(mean_dists);
    5. frame-wise confidence: median(mean_dists) - dists[:, argmin], median-filtered over 9 frames (zero padded,
       as scipy.signal.medfilt).

Embeddings come from any `Embedder`: a callable (video, audio) -> (video_emb, audio_emb), both (n, E) with row i
of each embedding the same frame span. `clip_sync` runs one on a clip. The SyncNet one (literature-comparable
LSE-C / LSE-D on face crops + MFCC, with syncnet_python's exact windowing) is evaluate.lse.SyncNetEmbedder; a
motion expert (motion windows + audio features) runs through `expert_sync`.

The zero padding is part of the procedure: near the ends, offsets that fall outside the audio compare the video
embedding with a zero vector (distance = its norm). We keep it so the numbers match syncnet_python.

Sign convention. Padded row i + k holds audio row i + k - vshift, so the best offset index k* says that video
window i matches audio window i + (k* - vshift) = i - offset:

    video_emb[i] ~ audio_emb[i - offset]

* The audio is delayed by d frames relative to the video (the sound of video frame t is at audio frame t + d;
  audio_emb[t] = video_emb[t - d]) -> offset = -d.
* The audio is ahead by d frames (audio_emb[t] = video_emb[t + d]) -> offset = +d.

So a positive offset means the audio comes early: delaying the audio by `offset` frames (or advancing the video)
re-synchronises the streams. Synchronised streams give offset 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirrortalk_jax.data.windows import sliding_windows
from mirrortalk_jax.models.mirrortalk.motion_expert import MotionExpert

# torch.nn.functional.pairwise_distance adds eps to the difference before taking the norm; syncnet_python uses it.
_PAIRWISE_EPS = 1e-6
# syncnet_python smooths the frame-wise confidence with scipy.signal.medfilt(kernel_size=9).
FRAMEWISE_MEDFILT = 9


class Embedder(Protocol):
    """Per-window embeddings of one clip's two streams: (video, audio) -> ((n, E) video_emb, (n, E) audio_emb).

    Row i of both must embed the same frame span (window i); what `video` and `audio` are (face crops and
    waveform, motion and audio features) is the embedder's business.
    """

    def __call__(self, video: Any, audio: Any) -> tuple[np.ndarray, np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class SyncResult:
    """Outcome of the offset search.

    Attributes:
      offset: best audio-visual offset in frames (see the module docstring for the sign).
      confidence: median(mean_dists) - min(mean_dists), the LSE-C of this clip (higher: more clearly in sync).
      min_dist: min(mean_dists), the LSE-D of this clip (lower: closer).
      mean_dists: (2*vshift + 1,) float64, mean distance per candidate offset; index k is offset vshift - k.
      dists: (T, 2*vshift + 1) float64 per-frame distances (`offset_distances`), or None.
      framewise_confidence: (T,) median(mean_dists) - dists[:, argmin], median-filtered over 9 frames, or None.
    """

    offset: int
    confidence: float
    min_dist: float
    mean_dists: np.ndarray
    dists: np.ndarray | None = None
    framewise_confidence: np.ndarray | None = None


def offset_distances(video_emb: Any, audio_emb: Any, vshift: int = 15) -> np.ndarray:
    """Distance of every video embedding to the audio embeddings at each candidate offset.

    Args:
      video_emb: (T, E) embeddings of the video (or motion) windows.
      audio_emb: (T, E) embeddings of the aligned audio windows.
      vshift: largest offset searched, in frames.
    Returns:
      (T, 2*vshift + 1) float64: [i, k] = ||video_emb[i] - padded_audio[i + k] + eps||, where padded_audio has
      `vshift` zero rows before and after audio_emb. Column k is offset vshift - k.
    """
    video = np.asarray(video_emb, np.float64)
    audio = np.asarray(audio_emb, np.float64)
    if video.ndim != 2 or audio.ndim != 2:
        raise ValueError(f"expected (T, E) embeddings, got video {video.shape} and audio {audio.shape}")
    if video.shape != audio.shape:
        raise ValueError(f"video and audio embeddings must have the same (T, E), got {video.shape} and {audio.shape}")
    if video.shape[0] == 0:
        raise ValueError("need at least one frame of embeddings, got T=0")
    if vshift < 0:
        raise ValueError(f"vshift must be >= 0, got {vshift}")
    padded = np.pad(audio, ((vshift, vshift), (0, 0)))
    candidates = sliding_windows(padded, 2 * vshift + 1)  # (T, 2*vshift + 1, E): rows i .. i + 2*vshift
    return np.linalg.norm(video[:, None, :] - candidates + _PAIRWISE_EPS, axis=-1)


def sync_offset_confidence(video_emb: Any, audio_emb: Any, vshift: int = 15) -> SyncResult:
    """syncnet_python's offset / confidence / min-distance of one clip from (T, E) window embeddings.

    `video_emb[i]` and `audio_emb[i]` must embed the same frame span (e.g. frames i .. i+4). The embeddings are
    compared as given (SyncNet's are not normalised; ours usually are). See the module docstring for the sign
    of `offset`: video_emb[i] best matches audio_emb[i - offset].
    """
    dists = offset_distances(video_emb, audio_emb, vshift)
    mean_dists = dists.mean(axis=0)
    best = int(np.argmin(mean_dists))  # first minimum on ties, like torch.min
    min_dist = float(mean_dists[best])
    median = float(np.median(mean_dists))  # 2*vshift + 1 values: the middle one, as torch.median
    return SyncResult(offset=vshift - best, confidence=median - min_dist, min_dist=min_dist, mean_dists=mean_dists,
                      dists=dists, framewise_confidence=median_filter(median - dists[:, best], FRAMEWISE_MEDFILT))


def median_filter(x: Any, kernel: int) -> np.ndarray:
    """scipy.signal.medfilt of a 1-D signal: odd `kernel`, zero padding at both ends, same length."""
    x = np.asarray(x, np.float64)
    if kernel % 2 == 0 or kernel <= 0 or x.ndim != 1:
        raise ValueError(f"median_filter needs a 1-D signal and an odd positive kernel, got {x.shape}, {kernel}")
    padded = np.pad(x, kernel // 2)
    return np.median(sliding_windows(padded, kernel), axis=1)


def clip_sync(embedder: Embedder, video: Any, audio: Any, vshift: int = 15) -> SyncResult:
    """The offset procedure on one clip, with the per-window embeddings `embedder(video, audio)` gives."""
    video_emb, audio_emb = embedder(video, audio)
    return sync_offset_confidence(video_emb, audio_emb, vshift)


def batch_offsets(video_embs: Sequence[Any], audio_embs: Sequence[Any], vshift: int = 15) -> list[SyncResult]:
    """`sync_offset_confidence` for several clips of possibly different lengths (lists of (T_i, E) arrays)."""
    if len(video_embs) != len(audio_embs):
        raise ValueError(f"got {len(video_embs)} video and {len(audio_embs)} audio embedding sequences")
    return [sync_offset_confidence(v, a, vshift) for v, a in zip(video_embs, audio_embs)]


def summarize(results: Sequence[SyncResult]) -> dict[str, float]:
    """Dataset-level numbers as papers report them: mean LSE-D, mean LSE-C, mean |offset|, fraction at 0."""
    if not results:
        raise ValueError("summarize needs at least one SyncResult")
    offsets = np.array([r.offset for r in results])
    return {"lse_d": float(np.mean([r.min_dist for r in results])),
            "lse_c": float(np.mean([r.confidence for r in results])),
            "mean_abs_offset": float(np.mean(np.abs(offsets))),
            "offset_zero_fraction": float(np.mean(offsets == 0))}


def expert_sync(expert: MotionExpert, motion: jax.Array, audio_features: jax.Array, vshift: int = 15) -> SyncResult:
    """SyncNet's offset / confidence of one clip with a motion expert: (T, D) motion, (T, F) audio, T >= window.

    Every K-frame window of both streams is embedded (window i = frames i .. i+K-1) and the embeddings go
    through `sync_offset_confidence`; motion plays the video's part, so the sign convention is the one
    documented there (audio delayed by d frames -> offset -d).
    """
    motion, audio_features = jnp.asarray(motion), jnp.asarray(audio_features)
    if motion.ndim != 2 or audio_features.ndim != 2 or motion.shape[0] != audio_features.shape[0]:
        raise ValueError(f"expected (T, D) motion and (T, F) audio features with the same T, got "
                         f"{motion.shape} and {audio_features.shape}")
    video_emb, audio_emb = _embed_windows(expert, motion, audio_features)
    return sync_offset_confidence(np.asarray(video_emb), np.asarray(audio_emb), vshift)


@nnx.jit
def _embed_windows(expert: MotionExpert, motion: jax.Array, audio_features: jax.Array):
    """(T, D), (T, F) -> embeddings of every window of both, (T - K + 1, E) each (jitted: eager is slow)."""
    return (expert.embed_motion(sliding_windows(motion, expert.window)),
            expert.embed_audio(sliding_windows(audio_features, expert.window)))
