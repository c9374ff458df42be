"""One speaker's face through a video: track choice, cuts into segments, zero-lag smoothing, stabilised crops.

Works on what the landmarker found per frame (no pixels), so a whole video's tracks fit in memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from mirrortalk_jax.data.faces import layout
from mirrortalk_jax.data.faces.landmarker import FaceObservation


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclasses.dataclass
class Segment:
    """Frames [start, stop) of one continuous face track."""

    start: int
    stop: int
    faces: list[FaceObservation]

    def __len__(self) -> int:
        return self.stop - self.start


@dataclasses.dataclass
class TrackResult:
    segments: list[Segment]
    max_faces: int  # most faces seen in one frame
    frames_with_face: int
    scene_cuts: int


def follow(per_frame: Sequence[list[FaceObservation]], cuts: Sequence[int] = (), *,
           min_iou: float = 0.3) -> TrackResult:
    """Segments of one face followed through the frames.

    A segment starts on the largest face; each next frame continues it with the face that overlaps it most
    (box IoU >= `min_iou`), so a second, larger face entering the view does not take over. A segment ends where
    the face is lost and at scene cuts (`cuts`: frame indices that start a new shot).
    """
    cut_set = set(cuts)
    segments: list[Segment] = []
    current: Segment | None = None
    for i, faces in enumerate(per_frame):
        choice = None
        if current is not None and i not in cut_set and faces:
            last = current.faces[-1].box
            overlaps = [box_iou(last, f.box) for f in faces]
            best = int(np.argmax(overlaps))
            if overlaps[best] >= min_iou:
                choice = faces[best]
        if choice is None:
            if current is not None:
                segments.append(current)
                current = None
            if faces:
                current = Segment(i, i, [])
                choice = faces[0]
        if current is not None and choice is not None:
            current.faces.append(choice)
            current.stop = i + 1
    if current is not None:
        segments.append(current)
    return TrackResult(segments, max((len(f) for f in per_frame), default=0),
                       sum(1 for f in per_frame if f), len(cut_set))


def split_segments(segments: Sequence[Segment], fps: float, min_seconds: float,
                   max_seconds: float) -> tuple[list[Segment], float]:
    """Segments shorter than `min_seconds` dropped, longer than `max_seconds` cut into near-equal parts.
    Returns the kept segments and the seconds dropped."""
    kept, dropped = [], 0.0
    min_len, max_len = max(1, round(min_seconds * fps)), max(1, round(max_seconds * fps))
    for seg in segments:
        if len(seg) < min_len:
            dropped += len(seg) / fps
            continue
        parts = -(-len(seg) // max_len)
        bounds = np.linspace(0, len(seg), parts + 1).round().astype(int)
        for a, b in zip(bounds[:-1], bounds[1:]):
            kept.append(Segment(seg.start + int(a), seg.start + int(b), seg.faces[a:b]))
    return kept, dropped


class SceneCuts:
    """Scene-cut detector: a frame starts a new shot when its 32x32 grey thumbnail differs from the previous
    one by more than `threshold` (mean absolute difference, 0-1 scale)."""

    def __init__(self, threshold: float = 0.18):
        self.threshold = threshold
        self.previous: np.ndarray | None = None
        self.cuts: list[int] = []
        self.index = 0

    def __call__(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        ys, xs = np.linspace(0, h - 1, 32).astype(int), np.linspace(0, w - 1, 32).astype(int)
        thumb = frame[ys][:, xs].mean(-1) / 255.0
        if self.previous is not None and np.abs(thumb - self.previous).mean() > self.threshold:
            self.cuts.append(self.index)
        self.previous, self.index = thumb, self.index + 1


def one_euro(x: np.ndarray, fps: float, min_cutoff: float = 1.0, beta: float = 0.05,
             d_cutoff: float = 1.0) -> np.ndarray:
    """One-Euro filter (Casiez et al. 2012) along axis 0 of (T, ...): smooths slow jitter, follows fast motion.

    Run forward then backward (zero phase), so a fast mouth movement is not delayed, as a causal filter would.
    """
    def alpha(cutoff):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau * fps)

    def causal(seq):
        out = np.empty_like(seq)
        out[0], dx = seq[0], np.zeros_like(seq[0])
        for t in range(1, len(seq)):
            a_d = alpha(d_cutoff)
            dx = a_d * (seq[t] - out[t - 1]) * fps + (1 - a_d) * dx
            a = alpha(min_cutoff + beta * np.abs(dx))
            out[t] = a * seq[t] + (1 - a) * out[t - 1]
        return out

    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return x
    return causal(causal(x)[::-1])[::-1]


def crop_transforms(mesh: np.ndarray, fps: float, *, image_size: int, scale: float = 1.6,
                    smooth_seconds: float = 0.4) -> np.ndarray:
    """(T, 478, 3) pixel meshes -> (T, 3) crop transforms [a, bx, by]: crop = a * frame + (bx, by).

    A square of `scale` times the face's size around the skull-fixed vertices' centre, both smoothed with a
    centred moving average of `smooth_seconds` (a stabilised crop: the head moves inside it, the crop does not
    shake with landmark jitter), mapped onto `image_size` pixels.
    """
    centre = mesh[:, list(layout.RIGID), :2].mean(1)
    extent = np.ptp(mesh[:, :468, :2], axis=1).max(1)
    width = max(1, round(smooth_seconds * fps)) | 1
    kernel = np.ones(width) / width

    def smooth(v):
        padded = np.pad(v, (width // 2, width // 2), mode="edge")
        return np.convolve(padded, kernel, mode="valid")

    cx, cy, side = smooth(centre[:, 0]), smooth(centre[:, 1]), smooth(extent) * scale
    a = image_size / np.maximum(side, 1e-6)
    return np.stack([a, image_size / 2 - a * cx, image_size / 2 - a * cy], axis=1).astype(np.float32)


def to_crop(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """(T, V, C) frame pixels (z scaled alike) -> crop pixels, by per-frame (T, 3) transforms."""
    out = points * transform[:, None, :1]
    out[..., :2] += transform[:, None, 1:]
    return out
