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
  csim           with an `identity` embedder (dlib's, data/faces/identity.py): cosine similarity of the
                 identity embeddings of rendered and real frames (every `identity_stride`-th frame with a face in both)
  aed, apd       with a fitted `basis` and the mesh detector: mean absolute difference between the motion re-tracked
                 from rendered and from real frames, over the expression channels (every group but pose) and the
                 pose channels (the motion space's units: PCA coefficients in training std, radians, face widths)
  fid            with a `fid_features` extractor: FID over all scored frames (evaluate/fid.py: Inception when
                 given its weights, else the weights-free pixel projection, not comparable with published FID)
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
from mirrortalk_jax.evaluate import fid, image_quality, landmark_detectors, landmarks
from mirrortalk_jax.sample import frames as frames_lib

PerceptualDistance = Callable[[jax.Array, jax.Array], jax.Array]  # (B, H, W, 3) x2 in [-1, 1] -> (B,)


@dataclasses.dataclass(frozen=True)
class Settings:
    max_clips: int = 8  # 0: every clip of the split
    max_frames: int = 50  # frames rendered per clip after the portrait; 0: all
    batch_size: int = 16  # frames per renderer call (the last batch is padded, so one program serves all)
    identity_stride: int = 5  # CSIM on every n-th frame (dlib's embedding costs ~80 ms a face on a CPU)

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
             identity: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None, basis=None,
             fid_features: fid.FeatureExtractor | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, float | None]:
    """Mean metrics over the first `settings.max_clips` clips of `source` (see the module docstring).

    identity and basis need a detector (basis: one with `track`, the mesh detector)."""
    if (identity is not None or basis is not None) and detector is None:
        raise ValueError("CSIM and AED/APD need a landmark detector (the faces' points and re-tracked motion)")
    if basis is not None and not hasattr(detector, "track"):
        raise ValueError(f"AED/APD re-track motion with the mesh detector; {type(detector).__name__} gives points only")
    keys = ("ssim", "psnr", "perceptual", "m_lmd", "f_lmd", "landmark_frames", "csim", "aed", "apd")
    per_clip: dict[str, list[float]] = {k: [] for k in keys}
    stats = None if fid_features is None else (fid.FeatureStats(int(fid_features.feature_dim)),
                                               fid.FeatureStats(int(fid_features.feature_dim)))
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
        if stats is not None:
            stats[0].update(np.asarray(fid_features(fid.unit_range(real))))
            stats[1].update(np.asarray(fid_features(fid.unit_range(fake))))
        if detector is not None:
            for key, value in _face_scores(fake, real, detector, identity, basis, settings.identity_stride).items():
                per_clip[key].append(value)
        frames_scored += len(fake)
        if progress is not None:
            progress(f"clip {index + 1}/{count}: SSIM {per_clip['ssim'][-1]:.3f}, PSNR {per_clip['psnr'][-1]:.2f}")
    if not per_clip["ssim"]:
        raise ValueError(f"{source} has no clip of two or more frames to score")
    out: dict[str, float | None] = {k: (float(np.mean(v)) if v else None) for k, v in per_clip.items()}
    out["fid"] = fid.fid(*stats) if stats is not None and stats[0].count > 1 else None
    out.update(clips=len(per_clip["ssim"]), frames=frames_scored)
    return out


def _face_scores(fake: np.ndarray, real: np.ndarray, detector, identity, basis, stride: int) -> dict[str, float]:
    """Landmark distances, CSIM and AED/APD of one clip from one detection per frame (see the module docstring)."""
    if basis is not None:
        (fake_points, fake_motion), (real_points, real_motion) = detector.track(fake, basis), detector.track(real, basis)
    else:
        fake_points, real_points = np.asarray(detector(fake), np.float64), np.asarray(detector(real), np.float64)
    valid = np.all(np.isfinite(fake_points), axis=(1, 2)) & np.all(np.isfinite(real_points), axis=(1, 2))
    out = {"landmark_frames": float(valid.mean())}
    if not valid.any():
        return out
    a, b = np.where(valid[:, None, None], fake_points, 0.0), np.where(valid[:, None, None], real_points, 0.0)
    out.update(m_lmd=landmarks.m_lmd(a, b, mask=valid), f_lmd=landmarks.f_lmd(a, b, mask=valid))
    if identity is not None:
        sims = []
        for t in np.flatnonzero(valid)[::stride]:
            e1, e2 = identity(fake[t], fake_points[t]), identity(real[t], real_points[t])
            sims.append(float(np.dot(e1, e2) / (np.linalg.norm(e1) * np.linalg.norm(e2) + 1e-12)))
        out["csim"] = float(np.mean(sims))
    if basis is not None:
        both = valid & np.all(np.isfinite(fake_motion), axis=1) & np.all(np.isfinite(real_motion), axis=1)
        if both.any():
            pose = basis.spec.group_mask("pose")
            diff = np.abs(fake_motion[both] - real_motion[both])
            out.update(aed=float(diff[:, ~pose].mean()), apd=float(diff[:, pose].mean()))
    return out
