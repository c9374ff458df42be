"""The real-face motion space: head pose and pose-normalised expression from MediaPipe's 478-point mesh.

Channels, by group (the groups every region-wise model and metric reads):

    lower  lower_pc0..K-1: PCA of the aligned mesh below the nose tip (lips, jaw, chin); mouth_open: inner-lip
           gap / mouth width (explicit, as lip-sync experts and metrics like it)
    upper  upper_pc0..J-1: PCA of the aligned mesh above the nose tip, eyes excluded (brows, forehead, cheeks)
    eyes   eye_open_right, eye_open_left: lid gap / eye width; gaze_x, gaze_y: iris offset in eye widths
    pose   pitch, yaw, roll (radians), tx, ty, tz (face widths of 15 cm), MediaPipe's rigid fit of its canonical
           face (the pose matrix)

Expression is pose-normalised by a similarity alignment (Umeyama, on skull-fixed vertices) of each frame's mesh
to the reference face, the mean aligned mesh of the training split. The basis (reference, region vertex sets,
principal components and their scales) is fitted on the training split only and travels with the dataset in
`metadata.json` (`MeshBasis.to_json`), so the same motion can be turned back into a mesh (`MeshBasis.mesh`).
PCA coefficients are divided by their training standard deviation, so every channel is of unit scale.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from mirrortalk_jax.data.faces import layout
from mirrortalk_jax.data.motion_spec import MotionSpec

FACE_WIDTH_CM = 15.0
POSE_CHANNELS = ("pitch", "yaw", "roll", "tx", "ty", "tz")
EYE_CHANNELS = ("eye_open_right", "eye_open_left", "gaze_x", "gaze_y")
# Frames from the training split used to fit the basis (evenly subsampled beyond this).
MAX_FIT_FRAMES = 20000


def similarity_align(points: np.ndarray, target: np.ndarray, on: Sequence[int]) -> np.ndarray:
    """(T, V, 3) -> (T, V, 3): each frame moved by the similarity transform (Umeyama) that best maps its
    vertices `on` onto `target`'s (V, 3)."""
    src = points[:, list(on)]
    dst = target[list(on)]
    mu_s, mu_d = src.mean(1, keepdims=True), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = np.einsum("vi,tvj->tij", xd, xs) / len(on)
    u, sig, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.ones((len(src), 3))
    fix[:, 2] = d
    rot = u @ (fix[:, :, None] * vt)
    var = (xs ** 2).sum((1, 2)) / len(on)
    scale = (sig * fix).sum(1) / np.maximum(var, 1e-12)
    return scale[:, None, None] * np.einsum("tij,tvj->tvi", rot, points - mu_s) + mu_d


def pose_from_matrix(matrix: np.ndarray) -> np.ndarray:
    """(T, 4, 4) MediaPipe pose matrices -> (T, 6) pitch, yaw, roll (radians), tx, ty, tz (face widths)."""
    rot = matrix[:, :3, :3].astype(np.float64)
    scale = np.cbrt(np.abs(np.linalg.det(rot)))[:, None, None]
    angles = Rotation.from_matrix(rot / np.maximum(scale, 1e-9)).as_euler("xyz")
    return np.concatenate([angles, matrix[:, :3, 3] / FACE_WIDTH_CM], axis=1).astype(np.float32)


def motion_spec(name: str, lower_components: int, upper_components: int) -> MotionSpec:
    """The motion space of a basis with that many components per region (known before it is fitted)."""
    lower = tuple(f"lower_pc{i}" for i in range(lower_components)) + ("mouth_open",)
    upper = tuple(f"upper_pc{i}" for i in range(upper_components))
    return MotionSpec(name=name, channels=lower + upper + EYE_CHANNELS + POSE_CHANNELS,
                      groups={"lower": lower, "upper": upper, "eyes": EYE_CHANNELS, "pose": POSE_CHANNELS})


@dataclasses.dataclass(frozen=True)
class MeshBasis:
    """The fitted basis of a real-face motion space (see the module docstring)."""

    reference: np.ndarray  # (478, 3) mean aligned mesh, crop pixels
    lower: np.ndarray  # vertex indices of the lower region
    upper: np.ndarray  # vertex indices of the upper region
    lower_components: np.ndarray  # (K, 3 * len(lower))
    upper_components: np.ndarray  # (J, 3 * len(upper))
    lower_scale: np.ndarray  # (K,) training std of each coefficient
    upper_scale: np.ndarray  # (J,)
    name: str = "mediapipe_mesh_v1"

    @property
    def spec(self) -> MotionSpec:
        return motion_spec(self.name, len(self.lower_scale), len(self.upper_scale))

    def motion(self, mesh: np.ndarray, pose_matrix: np.ndarray) -> np.ndarray:
        """(T, 478, 3) mesh (any pixel frame) and (T, 4, 4) pose matrices -> (T, D) float32 motion."""
        aligned = similarity_align(mesh.astype(np.float64), self.reference, layout.RIGID)
        residual = aligned - self.reference
        lower = residual[:, self.lower].reshape(len(mesh), -1) @ self.lower_components.T / self.lower_scale
        upper = residual[:, self.upper].reshape(len(mesh), -1) @ self.upper_components.T / self.upper_scale
        return np.concatenate([lower, layout.mouth_openness(mesh)[:, None], upper, layout.eye_openness(mesh),
                               layout.gaze(mesh), pose_from_matrix(pose_matrix)], axis=1).astype(np.float32)

    def mesh(self, motion: np.ndarray) -> np.ndarray:
        """(T, D) motion -> (T, 478, 3) aligned mesh (reference frame) from the PCA channels; vertices of
        neither region (the eyes) stay at the reference."""
        k, j = len(self.lower_scale), len(self.upper_scale)
        out = np.repeat(self.reference[None], len(motion), 0).astype(np.float64)
        out[:, self.lower] += ((motion[:, :k] * self.lower_scale) @ self.lower_components).reshape(len(motion), -1, 3)
        upper = motion[:, k + 1:k + 1 + j] * self.upper_scale
        out[:, self.upper] += (upper @ self.upper_components).reshape(len(motion), -1, 3)
        return out.astype(np.float32)

    def to_json(self) -> str:
        return json.dumps({f.name: (getattr(self, f.name).tolist() if isinstance(getattr(self, f.name), np.ndarray)
                                    else getattr(self, f.name)) for f in dataclasses.fields(self)})

    @classmethod
    def from_json(cls, text: str) -> MeshBasis:
        d = json.loads(text)
        ints = ("lower", "upper")
        return cls(**{k: (np.asarray(v, np.int64 if k in ints else np.float64) if isinstance(v, list) else v)
                      for k, v in d.items()})


def _regions(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertex sets of the lower and upper regions of an aligned reference face (image axes: y down)."""
    face = np.arange(468)  # irises excluded
    eye_width = np.linalg.norm(reference[layout.RIGHT_EYE[0]] - reference[layout.RIGHT_EYE[1]])
    near_eye = np.zeros(468, bool)
    for outer, inner, *_ in (layout.RIGHT_EYE, layout.LEFT_EYE):
        centre = (reference[outer] + reference[inner]) / 2
        near_eye |= np.linalg.norm(reference[:468, :2] - centre[:2], axis=1) < 0.7 * eye_width
    below = reference[:468, 1] > reference[layout.NOSE_TIP, 1]
    return face[below], face[~below & ~near_eye]


def fit(meshes: Sequence[np.ndarray], *, lower_components: int = 12, upper_components: int = 6,
        name: str = "mediapipe_mesh_v1") -> MeshBasis:
    """Fits the basis on the training split's meshes (a list of (T_i, 478, 3)).

    The reference is the generalised Procrustes mean (three rounds of aligning every frame to the current mean).
    """
    frames = np.concatenate([np.asarray(m, np.float64) for m in meshes])
    if len(frames) < 2:
        raise ValueError(f"fitting a motion space needs at least 2 training frames, got {len(frames)}")
    if len(frames) > MAX_FIT_FRAMES:
        frames = frames[np.linspace(0, len(frames) - 1, MAX_FIT_FRAMES).astype(int)]
    reference = frames[0]
    for _ in range(3):
        aligned = similarity_align(frames, reference, layout.RIGID)
        reference = aligned.mean(0)
    residual = aligned - reference
    lower, upper = _regions(reference)

    def pca(vertices: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        x = residual[:, vertices].reshape(len(frames), -1)
        _, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
        # Fewer frames than components: the missing ones are zero (the channel count stays the configured one).
        comps = np.zeros((k, x.shape[1]))
        scale = np.ones(k)
        n = min(k, len(s))
        comps[:n], scale[:n] = vt[:n], np.maximum(s[:n] / np.sqrt(max(len(x) - 1, 1)), 1e-6)
        return comps, scale

    lc, ls = pca(lower, lower_components)
    uc, us = pca(upper, upper_components)
    return MeshBasis(reference, lower, upper, lc, uc, ls, us, name)
