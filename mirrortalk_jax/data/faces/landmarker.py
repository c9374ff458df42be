"""MediaPipe's FaceLandmarker: 478 3-D landmarks, 52 blendshapes and a head-pose matrix per face.

    with FaceLandmarker(num_faces=2) as marker:            # video mode: timestamps must increase
        faces = marker.detect(frame, time_ms=40 * index)    # [FaceObservation, ...], largest first

Video mode tracks faces between frames (cheaper and steadier than detecting each frame); with several faces
in view it may still swap which face is first, so callers choose the face track themselves (prepare/tracking).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mirrortalk_jax.data.faces import backend

NUM_MESH_POINTS = 478


@dataclasses.dataclass(frozen=True)
class FaceObservation:
    """One face in one frame.

    mesh: (478, 3) float32: x, y in pixels of the frame (x right, y down), z in the same pixel scale (depth
      relative to the face's centre, smaller = closer to the camera).
    blendshapes: (52,) float32 in [0, 1] (names in `FaceLandmarker.blendshape_names`).
    pose_matrix: (4, 4) float32, MediaPipe's rigid transform of its canonical face into camera space (cm).
    """

    mesh: np.ndarray
    blendshapes: np.ndarray
    pose_matrix: np.ndarray

    @property
    def box(self) -> np.ndarray:
        """(x0, y0, x1, y1) of the mesh in pixels."""
        return np.concatenate([self.mesh[:, :2].min(0), self.mesh[:, :2].max(0)])

    @property
    def size(self) -> float:
        """The face's size in pixels: the longer side of its box."""
        x0, y0, x1, y1 = self.box
        return float(max(x1 - x0, y1 - y0))


class FaceLandmarker:
    """A MediaPipe FaceLandmarker, as a context manager (closing it releases the graph cleanly)."""

    def __init__(self, num_faces: int = 2, *, video: bool = True, min_confidence: float = 0.5):
        vision = backend.require("mediapipe.tasks.python.vision")
        tasks = backend.require("mediapipe.tasks.python")
        self._mp = backend.require("mediapipe")
        options = vision.FaceLandmarkerOptions(
            base_options=tasks.BaseOptions(model_asset_path=str(backend.landmarker_task())),
            running_mode=vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE,
            num_faces=num_faces, min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence, min_tracking_confidence=min_confidence,
            output_face_blendshapes=True, output_facial_transformation_matrixes=True)
        self._marker = vision.FaceLandmarker.create_from_options(options)
        self.video = video
        self.blendshape_names: tuple[str, ...] = ()

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._marker is not None:
            self._marker.close()
            self._marker = None

    def detect(self, frame: np.ndarray, time_ms: int = 0) -> list[FaceObservation]:
        """The faces in `frame` ((H, W, 3) uint8 RGB), largest first. `time_ms`: the frame's time (video mode,
        strictly increasing)."""
        h, w = frame.shape[:2]
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
        result = (self._marker.detect_for_video(image, int(time_ms)) if self.video
                  else self._marker.detect(image))
        faces = []
        for i, points in enumerate(result.face_landmarks):
            mesh = np.array([[p.x * w, p.y * h, p.z * w] for p in points], np.float32)
            shapes = result.face_blendshapes[i] if result.face_blendshapes else []
            if shapes and not self.blendshape_names:
                self.blendshape_names = tuple(c.category_name for c in shapes)
            blend = np.array([c.score for c in shapes], np.float32)
            matrix = (np.asarray(result.facial_transformation_matrixes[i], np.float32)
                      if result.facial_transformation_matrixes else np.eye(4, dtype=np.float32))
            faces.append(FaceObservation(mesh, blend, matrix))
        return sorted(faces, key=lambda f: -f.size)
