"""How the evaluation suite turns predicted motion into faces it can score: frames, landmark distances, identity.

    faces = SynthTalkFaces()                                   # SynthTalk: the dataset's own parametric face
    faces = RenderedFaces(renderer, MeshLandmarkDetector(),    # any motion space: a renderer trained on it
                          identity=IdentityEmbedder(), syncnet=SyncNetEmbedder(model))

SynthTalkFaces draws the prediction with the clip's face shape and colours and reads its landmarks off the
parametric face (no detector: SynthTalk knows its geometry). RenderedFaces animates each clip's first real frame
with the prediction (self-reenactment, as renderer_quality.py), re-tracks dlib-68 landmarks on the rendered and
on the real frames with one detector (the literature's LMD: both sides through the same detector), and, when given:
  CSIM    cosine between dlib's identity embeddings of the portrait (the clip's first frame) and of generated
          frames (every `identity_stride`-th), as the talking-head literature computes it with ArcFace;
  LSE     SyncNet's LSE-C / LSE-D on the generated frames and the clip's audio (converted syncnet_v2 weights;
          `syncnet_lse_c` / `syncnet_lse_d`, beside the motion expert's Sync_conf).
Ground truth through RenderedFaces is the renderer's own reconstruction: its scores are the ceiling the renderer
allows, not 1.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from mirrortalk_jax.data.synthtalk import face, raster
from mirrortalk_jax.evaluate import landmarks, preview, sync
from mirrortalk_jax.sample import frames as frames_lib


class Faces(Protocol):
    def frames(self, motion: np.ndarray, clip: Any, image_size: int) -> np.ndarray:
        """(T, D) predicted motion of `clip` -> (T, S, S, 3) uint8 frames."""

    def scores(self, motion: np.ndarray, clip: Any, image_size: int, frames: np.ndarray | None) -> dict[str, float]:
        """Face metrics of one clip ({"m_lmd", "f_lmd"} and what else the scorer measures); frames as made by
        `frames`, or None when image metrics are off."""


class SynthTalkFaces:
    """SynthTalk's parametric face (see the module docstring)."""

    def frames(self, motion, clip, image_size):
        if clip.face_shape is None:
            raise ValueError(f"clip {clip.clip_id} carries no SynthTalk face: score a prepared real-face dataset "
                             "with a renderer (`mirrortalk evaluate --renderer RUN`)")
        return preview.render_motion(motion, image_size, face.FaceShape.from_array(clip.face_shape),
                                     raster.Appearance.from_array(clip.appearance))

    def scores(self, motion, clip, image_size, frames):
        if clip.face_shape is None:
            raise ValueError(f"clip {clip.clip_id} carries no SynthTalk face: score a prepared real-face dataset "
                             "with a renderer (`mirrortalk evaluate --renderer RUN`)")
        lm = landmarks.synthtalk_landmarks(motion, clip.face_shape, image_size)
        return {"m_lmd": landmarks.m_lmd(lm, clip.landmarks_2d), "f_lmd": landmarks.f_lmd(lm, clip.landmarks_2d)}


class RenderedFaces:
    """A renderer of the dataset's motion space and a landmark detector (see the module docstring)."""

    def __init__(self, renderer, detector, *, identity=None, syncnet=None, identity_stride: int = 5,
                 batch_size: int = 16, vshift: int = 10):
        self.renderer, self.detector, self.identity, self.syncnet = renderer, detector, identity, syncnet
        self.identity_stride, self.batch_size, self.vshift = int(identity_stride), int(batch_size), int(vshift)
        self._real: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}  # clip id -> real landmarks, portrait id

    def frames(self, motion, clip, image_size):
        if clip.frames is None:
            raise ValueError(f"clip {clip.clip_id} has no frames: a renderer needs the clip's first frame")
        return frames_lib.render_clip(self.renderer, clip.frames[0], clip.motion[0], motion, batch_size=self.batch_size)

    def _real_side(self, clip) -> tuple[np.ndarray, np.ndarray | None]:
        if clip.clip_id not in self._real:
            real = np.asarray(self.detector(clip.frames), np.float64)
            portrait = None
            if self.identity is not None and np.all(np.isfinite(real[0])):
                portrait = self.identity(clip.frames[0], real[0])
            self._real[clip.clip_id] = (real, portrait)
        return self._real[clip.clip_id]

    def scores(self, motion, clip, image_size, frames):
        if frames is None:
            return {}
        real, portrait = self._real_side(clip)
        fake = np.asarray(self.detector(frames), np.float64)
        n = min(len(fake), len(real))
        fake, real = fake[:n], real[:n]
        valid = np.all(np.isfinite(fake), axis=(1, 2)) & np.all(np.isfinite(real), axis=(1, 2))
        out: dict[str, float] = {"landmark_frames": float(valid.mean())}
        if valid.any():
            fake, real = np.where(valid[:, None, None], fake, 0.0), np.where(valid[:, None, None], real, 0.0)
            out.update(m_lmd=landmarks.m_lmd(fake, real, mask=valid), f_lmd=landmarks.f_lmd(fake, real, mask=valid))
        if portrait is not None:
            sims = [float(np.dot(portrait, e) / (np.linalg.norm(portrait) * np.linalg.norm(e) + 1e-12))
                    for e in (self.identity(frames[t], fake[t]) for t in range(0, n, self.identity_stride)
                              if valid[t])]
            if sims:
                out["csim"] = float(np.mean(sims))
        if self.syncnet is not None:
            result = sync.clip_sync(self.syncnet, frames, clip.waveform, self.vshift)
            out.update(syncnet_lse_c=float(result.confidence), syncnet_lse_d=float(result.min_dist))
        return out
