"""SynthTalk's parametric face: 68 dlib-layout 3D landmarks driven by the 18 SynthTalk motion channels.

Coordinate conventions
  Face frame (3D, before projection): x towards the image right (the subject's left), y up, z towards the
  camera. Unit = neutral face width (jaw point 0 to jaw point 16). The origin is the centre of the
  neutral head (x: jaw 0-16; y: chin 8 to the forehead top of `forehead_top`), so the neutral head projects to
  the image centre; its landmark bounding box centre lies ~0.07 S below it.
  Image (2D, after `project`): continuous pixel coordinates, x right, y down, origin at the top-left corner of
  the image (pixel k covers [k, k + 1)), so the image centre is (S/2, S/2).

Landmark order follows dlib-68 exactly: 0-16 jaw (subject's right ear -> left ear, i.e. image left -> right),
17-21 right brow, 22-26 left brow, 27-30 nose bridge (30 = tip), 31-35 nostrils, 36-41 right eye, 42-47 left
eye, 48-59 outer lip from the right corner (48) over the upper lip (51 top) to the left corner (54) and back
along the lower lip (57 bottom), 60-67 inner lip (62 upper centre, 66 lower centre).

Pipeline of `landmarks_3d`: template -> per-speaker `FaceShape` -> linear expression basis -> non-linear
closures (lip press, eye close, no lip/lid crossing) -> head pose.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC

N_POINTS = 68
N_CHANNELS = SYNTHTALK_SPEC.dim

# Camera: pinhole at z = CAMERA_DISTANCE looking down -z; focal length in image widths, chosen so the
# neutral jaw width (0-16) spans ~62% of the frame.
CAMERA_DISTANCE = 5.0
DEFAULT_FOCAL = 3.3
# Head rotations pivot about a point behind the face (roughly the head's centre), not about the nose.
POSE_PIVOT = np.array([0.0, 0.0, -0.5])

_CH = {name: i for i, name in enumerate(SYNTHTALK_SPEC.channels)}

# Template geometry (before re-centring), face-width units.
_HINGE_Y = 0.12          # jaw ends (ears) height
_JAW_B = 0.70            # jaw vertical semi-axis: chin at _HINGE_Y - _JAW_B
_EYE_Y, _EYE_CX, _EYE_HW = 0.17, 0.21, 0.10
_MOUTH_Y, _MOUTH_HW = -0.29, 0.19

# Lip index groups. Inner pairs are column-aligned: 61<->67, 62<->66, 63<->65.
INNER_UPPER = np.array([61, 62, 63])
INNER_LOWER = np.array([67, 66, 65])
OUTER_UPPER = np.array([49, 50, 51, 52, 53])
OUTER_LOWER = np.array([59, 58, 57, 56, 55])
# Which inner pair column drives each outer point (same order as OUTER_UPPER / OUTER_LOWER).
_OUTER_DRIVER = np.array([0, 0, 1, 2, 2])
# Eyelid pairs: upper lid point i closes onto lower lid point i.
UPPER_LIDS = np.array([37, 38, 43, 44])
LOWER_LIDS = np.array([41, 40, 47, 46])

# The renderer closes the face polygon with an arc through `forehead_top`.
FOREHEAD_RATIO = 0.3

_SHAPE_FIELDS = ("face_width", "jaw_length", "eye_spacing", "eye_size",
                 "mouth_width", "lip_thickness", "nose_length", "brow_height")


def forehead_top(points: np.ndarray) -> np.ndarray:
    """Top of the forehead (the hairline) implied by landmarks: above the mid-brow by FOREHEAD_RATIO of the
    chin-to-nose-bridge vector. Works in 2D or 3D: (..., 68, D) -> (..., D)."""
    brow_mid = (points[..., 19, :] + points[..., 24, :]) / 2
    return brow_mid + FOREHEAD_RATIO * (points[..., 27, :] - points[..., 8, :])


def _build_template() -> np.ndarray:
    """Neutral frontal face, (68, 3) float64, in the face frame (re-centred on the landmark bbox)."""
    p = np.zeros((N_POINTS, 3))
    # Jaw: lower half of a superellipse (exponent 2.5 squares the jaw a little) from right ear to left ear.
    t = np.linspace(np.pi, 2 * np.pi, 17)
    c, s = np.cos(t), np.sin(t)
    e = 2.0 / 2.5
    p[0:17, 0] = 0.5 * np.sign(c) * np.abs(c) ** e
    p[0:17, 1] = _HINGE_Y + _JAW_B * np.sign(s) * np.abs(s) ** e
    p[0:17, 2] = 0.02 - 0.40 * np.abs(c) ** 1.5

    # Brows: image left -> right for both (dlib: 17 = right brow outer end, 22 = left brow inner end).
    u = np.linspace(0.0, 1.0, 5)  # 0 = outer end, 1 = inner end
    brow_x = 0.37 - 0.30 * u
    brow_y = 0.27 + 0.02 * u + 0.045 * np.sin(np.pi * u ** 0.8)
    brow_z = -0.06 + 0.08 * u
    p[17:22] = np.stack([-brow_x, brow_y, brow_z], 1)
    p[22:27] = np.stack([brow_x[::-1], brow_y[::-1], brow_z[::-1]], 1)

    # Nose bridge (27 top .. 30 tip) and nostrils (31 right wing .. 33 centre .. 35 left wing).
    p[27:31] = np.stack([np.zeros(4), np.linspace(0.17, -0.045, 4), np.linspace(0.06, 0.19, 4)], 1)
    nx = np.array([-0.075, -0.04, 0.0, 0.04, 0.075])
    p[31:36] = np.stack([nx, -0.105 - 0.025 * (1 - (nx / 0.075) ** 2), 0.12 - 7.0 * nx ** 2], 1)

    # Eyes: corner, two upper-lid points, corner, two lower-lid points (image left -> right on top).
    s_eye = np.array([0.0, 1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3])
    upper = np.array([0, 1, 1, 0, 0, 0], bool)
    for start, cx in ((36, -_EYE_CX), (42, _EYE_CX)):
        x = cx - _EYE_HW + 2 * _EYE_HW * s_eye
        lid = np.where(upper, 0.052, -0.04) * np.sin(np.pi * s_eye)
        y = _EYE_Y + lid + 0.04 * (np.abs(x) - _EYE_CX)  # outer canthus slightly higher
        z = -0.45 * x ** 2
        p[start:start + 6] = np.stack([x, y, z], 1)

    # Mouth (lips closed at neutral: inner upper and lower lips coincide on the mouth line).
    def lip(uu, h):
        uu = np.asarray(uu, float)
        return np.stack([_MOUTH_HW * uu, _MOUTH_Y + np.asarray(h), 0.12 - 0.09 * uu ** 2], 1)

    uo = np.array([-2, -1, 0, 1, 2]) / 3
    p[48] = lip([-1.0], [0.0])[0]
    p[49:54] = lip(uo, 0.055 * np.array([0.75, 1.0, 0.85, 1.0, 0.75]))  # cupid's bow dip at 51
    p[54] = lip([1.0], [0.0])[0]
    p[55:60] = lip(uo[::-1], -0.065 * np.array([0.7, 0.95, 1.0, 0.95, 0.7]))
    ui = np.array([-0.8, -0.35, 0.0, 0.35, 0.8, 0.35, 0.0, -0.35])
    p[60:68] = lip(ui, np.zeros(8))

    # Centre on the drawn head (chin to forehead top) rather than the landmark box, so the hair fits the frame.
    p[:, 0] -= (p[:, 0].min() + p[:, 0].max()) / 2
    p[:, 1] -= (p[8, 1] + forehead_top(p)[1]) / 2
    return p


TEMPLATE = _build_template()
TEMPLATE.setflags(write=False)
# Template mouth coordinate: -1 at the right corner (48), +1 at the left corner (54).
_U = TEMPLATE[:, 0] / _MOUTH_HW
_MOUTH_CENTRE_Y = TEMPLATE[48, 1]
_CHIN_Y = TEMPLATE[8, 1]
_EAR_Y = TEMPLATE[0, 1]


def _build_expression_basis() -> np.ndarray:
    """Linear displacement per unit activation of each channel, (18, 68, 3) float64.

    Channels handled non-linearly (lip_press, eye_close) or not at all by landmarks (gaze, pose) have zero rows.
    """
    b = np.zeros((N_CHANNELS, N_POINTS, 3))
    u = _U
    mouth = np.arange(48, 68)
    corners, inner_corners = np.array([48, 54]), np.array([60, 64])
    lower_lip = np.concatenate([OUTER_LOWER, INNER_LOWER])

    j = b[_CH["jaw_open"]]
    w = np.clip((_EAR_Y - TEMPLATE[0:17, 1]) / (_EAR_Y - _CHIN_Y), 0.0, 1.0)  # jaw rotates about the ears
    j[0:17, 1] = -0.20 * w
    j[0:17, 2] = -0.03 * w
    j[OUTER_LOWER, 1] = -0.17 * (1 - 0.45 * u[OUTER_LOWER] ** 2)
    j[INNER_LOWER, 1] = -0.16 * (1 - 0.45 * u[INNER_LOWER] ** 2)
    j[lower_lip, 2] = -0.03
    j[np.r_[corners, inner_corners], 1] = -0.07
    j[np.r_[corners, inner_corners], 0] = -0.02 * u[np.r_[corners, inner_corners]]  # open mouth narrows
    j[INNER_UPPER, 1] = 0.008  # upper lip lifts a little off the teeth

    m = b[_CH["mouth_width"]]
    m[mouth, 0] = 0.06 * u[mouth]
    m[mouth, 2] = -0.02 * np.abs(u[mouth])

    r = b[_CH["lip_round"]]
    r[mouth, 0] = -0.08 * u[mouth]
    r[mouth, 2] = 0.06 * (1 - 0.5 * u[mouth] ** 2)
    r[OUTER_UPPER, 1] = 0.01
    r[OUTER_LOWER, 1] = -0.01
    r[INNER_UPPER, 1] = 0.012 * (1 - u[INNER_UPPER] ** 2)  # small "o" opening
    r[INNER_LOWER, 1] = -0.012 * (1 - u[INNER_LOWER] ** 2)

    t = b[_CH["lower_lip_tuck"]]
    t[OUTER_LOWER, 1] = 0.05 * (1 - 0.5 * u[OUTER_LOWER] ** 2)
    t[INNER_LOWER, 1] = 0.04
    t[lower_lip, 2] = -0.05

    c = b[_CH["corner_pull"]]
    c[corners, 1], c[corners, 0], c[corners, 2] = 0.05, 0.025 * u[corners], -0.02
    c[inner_corners, 1], c[inner_corners, 0] = 0.045, 0.02 * u[inner_corners]
    c[[49, 53, 59, 55], 1] = 0.02
    c[[61, 63, 67, 65], 1] = 0.015

    brows = np.arange(17, 27)
    inner_w = 1.0 - (np.abs(TEMPLATE[brows, 0]) - np.abs(TEMPLATE[21, 0])) / (
        np.abs(TEMPLATE[17, 0]) - np.abs(TEMPLATE[21, 0]))  # 1 at the inner brow end, 0 at the outer
    br = b[_CH["brow_raise"]]
    br[brows, 1] = 0.045 + 0.01 * inner_w
    br[UPPER_LIDS, 1] = 0.006
    bf = b[_CH["brow_furrow"]]
    bf[brows, 1] = -0.005 - 0.035 * inner_w
    bf[brows, 0] = -np.sign(TEMPLATE[brows, 0]) * 0.03 * inner_w

    k = b[_CH["cheek_raise"]]
    k[LOWER_LIDS, 1] = 0.012
    k[corners, 1], k[corners, 0] = 0.01, 0.005 * u[corners]
    return b


EXPRESSION_BASIS = _build_expression_basis()
EXPRESSION_BASIS.setflags(write=False)


@dataclasses.dataclass(frozen=True)
class FaceShape:
    """Per-speaker shape coefficients; every field 0 gives the template.

    Multiplicative (relative) deviations: face_width (jaw x-scale), jaw_length (lower-face stretch below the
    nostrils), eye_size, mouth_width, lip_thickness, nose_length. Additive (face-width units): eye_spacing (each
    eye moves outward by this much), brow_height (brows move up).
    """

    face_width: float = 0.0
    jaw_length: float = 0.0
    eye_spacing: float = 0.0
    eye_size: float = 0.0
    mouth_width: float = 0.0
    lip_thickness: float = 0.0
    nose_length: float = 0.0
    brow_height: float = 0.0

    # Standard deviation per field for `sample` (draws are clipped at +-2 std), in field order.
    _SAMPLE_STD = (0.05, 0.05, 0.01, 0.06, 0.06, 0.12, 0.06, 0.012)

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return _SHAPE_FIELDS

    @classmethod
    def sample(cls, rng: np.random.Generator) -> FaceShape:
        """A plausible random speaker: each field ~ N(0, std) clipped to +-2 std."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"FaceShape.sample: rng must be a numpy.random.Generator, got {type(rng).__name__}")
        std = np.array(cls._SAMPLE_STD)
        return cls.from_array(np.clip(rng.normal(0.0, std), -2 * std, 2 * std))

    def to_array(self) -> np.ndarray:
        """(8,) float32 in `FaceShape.fields()` order."""
        return np.array([getattr(self, f) for f in _SHAPE_FIELDS], np.float32)

    @classmethod
    def from_array(cls, values: np.ndarray) -> FaceShape:
        values = np.asarray(values, np.float64)
        if values.shape != (len(_SHAPE_FIELDS),):
            raise ValueError(f"FaceShape.from_array: values must have shape ({len(_SHAPE_FIELDS)},) "
                             f"ordered as {_SHAPE_FIELDS}, got {values.shape}")
        return cls(**{f: float(v) for f, v in zip(_SHAPE_FIELDS, values)})


def shaped_template(shape: FaceShape) -> np.ndarray:
    """Neutral landmarks of a speaker: the template deformed by `shape`. (68, 3) float64, face frame."""
    if not isinstance(shape, FaceShape):
        raise TypeError(f"shape must be a FaceShape, got {type(shape).__name__}")
    p = TEMPLATE.copy()
    x, y, z = p[:, 0], p[:, 1], p[:, 2]  # views: edits below write into p
    # Lower face stretches about the nostril line; points above it (incl. jaw ends) stay.
    ref = TEMPLATE[33, 1]
    below = y < ref
    y[below] = ref + (y[below] - ref) * (1 + shape.jaw_length)
    x[0:17] *= 1 + shape.face_width
    for eye, brow, side in ((np.arange(36, 42), np.arange(17, 22), -1.0), (np.arange(42, 48), np.arange(22, 27), 1.0)):
        centre = p[eye, :2].mean(0)
        p[eye, :2] = centre + (p[eye, :2] - centre) * (1 + shape.eye_size)
        x[eye] += side * shape.eye_spacing
        x[brow] += side * 0.6 * shape.eye_spacing  # brows follow the eyes part-way
    mouth = np.arange(48, 68)
    mouth_y = p[48, 1]
    x[mouth] *= 1 + shape.mouth_width
    outer = np.r_[OUTER_UPPER, OUTER_LOWER]
    y[outer] = mouth_y + (y[outer] - mouth_y) * (1 + shape.lip_thickness)
    nose = np.arange(28, 36)
    y[nose] = y[27] + (y[nose] - y[27]) * (1 + shape.nose_length)
    z[28:31] = z[27] + (z[28:31] - z[27]) * (1 + shape.nose_length)
    y[17:27] += shape.brow_height
    return p


def _rotation(pitch: np.ndarray, yaw: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """R = Rz(roll) @ Ry(yaw) @ Rx(pitch), (T, 3, 3).

    In the face frame (y up, z to camera): positive pitch nods the face down, positive yaw turns the nose
    towards the image right (the subject's left), positive roll turns the face counter-clockwise on screen.
    """
    one, zero = np.ones_like(pitch), np.zeros_like(pitch)
    cp, sp, cy, sy, cr, sr = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    rx = np.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(-1, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
    rz = np.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return rz @ ry @ rx


def landmarks_3d(motion: np.ndarray, shape: FaceShape | None = None) -> np.ndarray:
    """3D landmarks of a talking face.

    Args:
      motion: (T, 18) float, SYNTHTALK_SPEC channels.
      shape: the speaker's FaceShape (None = template).
    Returns:
      (T, 68, 3) float32 in the face frame after head pose (x right, y up, z to camera; face-width units).
    """
    motion = np.asarray(motion, np.float64)
    if motion.ndim != 2 or motion.shape[1] != N_CHANNELS:
        raise ValueError(f"motion must have shape (T, {N_CHANNELS}) in SYNTHTALK_SPEC channel order, "
                         f"got {motion.shape}")
    if not np.all(np.isfinite(motion)):
        raise ValueError("motion contains NaN or inf")
    base = shaped_template(shape if shape is not None else FaceShape())
    p = base[None] + np.einsum("tc,cpk->tpk", motion, EXPRESSION_BASIS)

    # Bilabial closure: inner lips meet exactly at lip_press = 1 whatever the jaw does; the lower lip travels
    # further than the upper. Outer lip points ride with their inner column and thin a little (pressing).
    press = np.clip(motion[:, _CH["lip_press"]], 0.0, 1.0)[:, None, None]
    gap = p[:, INNER_LOWER] - p[:, INNER_UPPER]  # (T, 3, 3)
    d_up, d_lo = press * 0.4 * gap, -press * 0.6 * gap
    p[:, INNER_UPPER] += d_up
    p[:, INNER_LOWER] += d_lo
    p[:, OUTER_UPPER] += d_up[:, _OUTER_DRIVER]
    p[:, OUTER_LOWER] += d_lo[:, _OUTER_DRIVER]
    for outer, inner in ((OUTER_UPPER, INNER_UPPER), (OUTER_LOWER, INNER_LOWER)):
        drv_y = p[:, inner[_OUTER_DRIVER], 1]
        p[:, outer, 1] += 0.25 * press[:, :, 0] * (drv_y - p[:, outer, 1])

    # Lips never cross: lower inner lip at or below the upper one, outer lips outside their inner column.
    p[:, INNER_LOWER, 1] = np.minimum(p[:, INNER_LOWER, 1], p[:, INNER_UPPER, 1])
    p[:, OUTER_UPPER, 1] = np.maximum(p[:, OUTER_UPPER, 1], p[:, INNER_UPPER[_OUTER_DRIVER], 1])
    p[:, OUTER_LOWER, 1] = np.minimum(p[:, OUTER_LOWER, 1], p[:, INNER_LOWER[_OUTER_DRIVER], 1])

    # Eye closure: upper lids travel 3/4 of the way, lower lids 1/4; they meet exactly at eye_close = 1.
    close = np.clip(motion[:, _CH["eye_close"]], 0.0, 1.0)[:, None, None]
    lid_gap = p[:, LOWER_LIDS] - p[:, UPPER_LIDS]
    p[:, UPPER_LIDS] += close * 0.75 * lid_gap
    p[:, LOWER_LIDS] -= close * 0.25 * lid_gap
    p[:, LOWER_LIDS, 1] = np.minimum(p[:, LOWER_LIDS, 1], p[:, UPPER_LIDS, 1])

    rot = _rotation(motion[:, _CH["pitch"]], motion[:, _CH["yaw"]], motion[:, _CH["roll"]])
    trans = motion[:, [_CH["tx"], _CH["ty"], _CH["tz"]]]
    p = np.einsum("tij,tpj->tpi", rot, p - POSE_PIVOT) + POSE_PIVOT + trans[:, None, :]
    return p.astype(np.float32)


def project(points3d: np.ndarray, image_size: int, focal: float = DEFAULT_FOCAL,
            distance: float = CAMERA_DISTANCE) -> np.ndarray:
    """Pinhole projection of face-frame points to pixel coordinates of a square image.

    The camera sits at z = `distance` (face widths) on the z axis looking at the origin; `focal` is the focal
    length in image widths. With the defaults the neutral face is centred and its jaw spans ~62% of the width.

    Args:
      points3d: (T, 68, 3) (or any (..., 3)) float, face frame.
      image_size: side S of the square image, pixels.
    Returns:
      (T, 68, 2) float32 pixel coordinates: x right, y down, origin at the image's top-left corner.
    """
    points3d = np.asarray(points3d, np.float64)
    if points3d.shape[-1] != 3:
        raise ValueError(f"points3d must have a last axis of size 3, got shape {points3d.shape}")
    if int(image_size) != image_size or image_size <= 0:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if focal <= 0 or distance <= 0:
        raise ValueError(f"focal and distance must be positive, got focal={focal}, distance={distance}")
    depth = distance - points3d[..., 2]
    if np.any(depth <= 1e-6):
        raise ValueError(f"points3d must lie in front of the camera (z < distance={distance})")
    f = focal * image_size
    half = image_size / 2.0
    u = half + f * points3d[..., 0] / depth
    v = half - f * points3d[..., 1] / depth
    return np.stack([u, v], -1).astype(np.float32)
