"""Renderer quality on held-out clips by self-reenactment: each clip's first frame is the portrait, the clip's own
motion drives it, and the rendered frames are scored against the real ones.

    scores = renderer_quality.evaluate(renderer, ClipSource(dataset, "heldout_speakers"), Settings(),
                                       perceptual=vgg_distance, detector=MeshLandmarkDetector())

Metrics per clip, then averaged over clips (as papers average per video):
  ssim, psnr     scikit-image's definitions on uint8 frames (evaluate/image_quality.py); a frame rendered
                 exactly counts as 100 dB (scikit-image's +inf would make the mean infinite)
  perceptual     an LPIPS-style distance (unit-normalised VGG19 features, models/vgg) when a perceptual
                 network is given; None otherwise
  m_lmd, f_lmd   mouth / face landmark distance in pixels between landmarks re-tracked on the rendered and on the
                 real frames by one detector (the prepare pipeline's MediaPipe mesh in the dlib-68 layout, or
                 dlib's), over frames where both have a face; `landmark_frames` is the share of such frames
Any renderer with the renderer interface (models/renderer: `driving` + `render_frames`) is scored the same way;
`PortraitCopy` (every frame is the portrait, motion ignored) is the floor a renderer must beat.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mirrortalk_jax.data import schema
from mirrortalk_jax.data.sources import ClipSource
from mirrortalk_jax.evaluate import image_quality, landmark_detectors
from mirrortalk_jax.sample import frames as frames_lib

PerceptualDistance = Callable[[jax.Array, jax.Array], jax.Array]  # (B, H, W, 3) x2 in [-1, 1] -> (B,)


@dataclasses.dataclass(frozen=True)
class Settings:
    max_clips: int = 8  # 0: every clip of the split
    max_frames: int = 50  # frames rendered per clip after the portrait; 0: all
    batch_size: int = 16  # frames per renderer call (the last batch is padded, so one program serves all)

    def __post_init__(self):
        if self.max_clips < 0 or self.max_frames < 0 or self.batch_size <= 0:
            raise ValueError(f"max_clips and max_frames must be >= 0 and batch_size > 0, got {self}")


class PortraitCopy:
    """The no-motion baseline with the renderer interface: every rendered frame is the portrait itself."""

    def driving(self, motion, start: int = 0, stop: int | None = None) -> jax.Array:
        return jnp.asarray(motion)[start:stop]

    def render_frames(self, source_image: jax.Array, source_motion: jax.Array, driving: jax.Array) -> jax.Array:
        return source_image


def evaluate(renderer, source: ClipSource, settings: Settings = Settings(), *,
             perceptual: PerceptualDistance | None = None,
             detector: landmark_detectors.LandmarkDetector | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, float | None]:
    """Mean metrics over the first `settings.max_clips` clips of `source` (see the module docstring)."""
    per_clip: dict[str, list[float]] = {k: [] for k in ("ssim", "psnr", "perceptual", "m_lmd", "f_lmd",
                                                         "landmark_frames")}
    count = len(source) if settings.max_clips == 0 else min(settings.max_clips, len(source))
    frames_scored = 0
    for index in range(count):
        record = source[index]
        if record is None:  # a bad record in skip mode
            continue
        if "frames" not in record:
            raise schema.RecordError(f"clip {record['clip_id']!r} of {source} has no frames to score a renderer on")
        motion = np.asarray(record["motion"], np.float32)
        stop = len(motion) if settings.max_frames == 0 else min(len(motion), 1 + settings.max_frames)
        if stop < 2:
            continue
        real = schema.decode_frames(record["frames"][:stop])
        fake = frames_lib.render_clip(renderer, real[0], motion[0], motion, start=1, stop=stop,
                                      batch_size=settings.batch_size)
        real = real[1:]
        per_clip["ssim"].append(image_quality.mean_ssim(fake, real, data_range=255, channel_axis=-1))
        per_clip["psnr"].append(float(np.mean(np.minimum(np.asarray(image_quality.psnr(real, fake, 255)), 100.0))))
        if perceptual is not None:
            to_unit = lambda x: jnp.asarray(x, jnp.float32) / 127.5 - 1.0  # noqa: E731
            per_clip["perceptual"].append(float(jnp.mean(perceptual(to_unit(fake), to_unit(real)))))
        if detector is not None:
            try:
                lmd = landmark_detectors.frame_lmd(fake, real, detector)
            except ValueError:  # no frame with a face in both: the clip has no landmark score
                per_clip["landmark_frames"].append(0.0)
            else:
                per_clip["m_lmd"].append(lmd["m_lmd"])
                per_clip["f_lmd"].append(lmd["f_lmd"])
                per_clip["landmark_frames"].append(lmd["valid_frames"] / lmd["frames"])
        frames_scored += len(fake)
        if progress is not None:
            progress(f"clip {index + 1}/{count}: SSIM {per_clip['ssim'][-1]:.3f}, PSNR {per_clip['psnr'][-1]:.2f}")
    if not per_clip["ssim"]:
        raise ValueError(f"{source} has no clip of two or more frames to score")
    out: dict[str, float | None] = {k: (float(np.mean(v)) if v else None) for k, v in per_clip.items()}
    out.update(clips=len(per_clip["ssim"]), frames=frames_scored)
    return out
