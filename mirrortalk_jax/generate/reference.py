"""A talking-style reference from a short video: the same per-video preparation as `mirrortalk data prepare`
(decoding, face tracking, smoothing, QC), then the run's motion basis.

    clip = reference_clip("how_she_talks.mp4", basis)     # ReferenceClip: motion (T, D), audio (N,) 16 kHz

The longest face segment of the video is the reference (cuts and lost faces split a video, as in prepare).
A video prepare would reject (no face, no audio, too dark, too short ...) is refused with prepare's reason.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np

from mirrortalk_jax.data.prepare import clips
from mirrortalk_jax.data.prepare.motion_space import MeshBasis


@dataclasses.dataclass(frozen=True)
class ReferenceClip:
    motion: np.ndarray  # (T, D) float32, the basis' motion space
    audio: np.ndarray  # (N,) float32, 16 kHz mono, aligned with the motion (sample_rate / fps per frame)
    note: str  # prepare's report reason ("ok", or what it cut)


def reference_clip(path: str | os.PathLike, basis: MeshBasis, *, what: str = "reference video",
                   options: clips.Options = clips.Options(image_size=128, min_seconds=0.5)) -> ReferenceClip:
    """The motion and audio of the longest usable face segment of the video at `path` (see the module
    docstring); ValueError naming the file and prepare's reason when there is none."""
    with tempfile.TemporaryDirectory(prefix="reference_") as work:
        entry = clips.process_video(path, Path(work), options)
        if entry["status"] == "rejected":
            raise ValueError(f"{what} {path}: {entry['reason']}")
        longest = max((clips.ClipFile.load(p) for p in sorted(Path(work).glob("*.npz"))), key=lambda c: len(c.mesh))
    return ReferenceClip(basis.motion(longest.mesh, longest.pose_matrix), longest.audio.astype(np.float32),
                         entry["reason"])
