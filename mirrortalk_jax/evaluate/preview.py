"""Preview videos of generated motion: ground truth | generated, drawn by SynthTalk's face, with the audio.

Any motion space that has a face drawer can be previewed; today that is SynthTalk's (`synthtalk_v1`), drawn
with the neutral face shape and fixed colours so that only the motion differs between the panels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mirrortalk_jax.data import video
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC, MotionSpec
from mirrortalk_jax.data.synthtalk import face, raster

PREVIEW_APPEARANCE = raster.Appearance(
    background=(40, 52, 64), skin=(224, 178, 150), hair=(70, 45, 30), lips=(176, 84, 84), mouth=(50, 20, 24),
    teeth=(240, 236, 225), brows=(60, 40, 28), eye_white=(245, 245, 240), iris=(60, 90, 120))


def can_preview(spec: MotionSpec) -> bool:
    return spec.name == SYNTHTALK_SPEC.name


def render_motion(motion: np.ndarray, image_size: int = 128, face_shape: face.FaceShape | None = None,
                  appearance: raster.Appearance | None = None) -> np.ndarray:
    """(T, 18) SynthTalk motion -> (T, S, S, 3) uint8 frames.

    With a record's face shape and appearance (its metadata) this redraws the record's own frames exactly, so
    image metrics of generated motion compare like with like.
    """
    motion = np.asarray(motion, np.float32)
    points = face.project(face.landmarks_3d(motion, face_shape or face.FaceShape()), image_size)
    gaze = motion[:, [SYNTHTALK_SPEC.index("gaze_x"), SYNTHTALK_SPEC.index("gaze_y")]]
    return raster.render_frames(points, appearance or PREVIEW_APPEARANCE, image_size, gaze=gaze)


def side_by_side(panels: list[np.ndarray], image_size: int = 128) -> np.ndarray:
    """Each (T, 18) motion in `panels` rendered, left to right: (T, S, len(panels) * S, 3) uint8."""
    return np.concatenate([render_motion(m, image_size) for m in panels], axis=2)


def write_side_by_side(path: str | os.PathLike, panels: list[np.ndarray], fps: float,
                       audio: np.ndarray | None = None, sample_rate: int = 16000, image_size: int = 128) -> Path:
    """Renders each (T, 18) motion in `panels` and writes them left to right into one mp4 with `audio`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    video.write_mp4(path, side_by_side(panels, image_size), fps=fps, audio=audio, sample_rate=sample_rate)
    return path
