"""Anti-aliased cartoon rasterizer for SynthTalk faces, drawn from 68 dlib-layout 2D landmarks.

Frames are drawn with PIL at `supersample` x the output resolution and box-downsampled (`Image.reduce`),
which anti-aliases every edge. Input landmarks are continuous pixel coordinates as returned by
`face.project`: x right, y down, origin at the image's top-left corner (pixel k covers [k, k + 1)).
"""

from __future__ import annotations

import colorsys
import dataclasses

import numpy as np
from PIL import Image, ImageDraw

from mirrortalk_jax.data.synthtalk.face import forehead_top

RGB = tuple[int, int, int]

_COLOUR_FIELDS = ("background", "skin", "hair", "lips", "mouth", "teeth", "brows", "eye_white", "iris")

# Forehead/hair arcs: angle 0 at jaw point 0, pi/2 over the forehead, pi at jaw point 16.
_PHI = np.linspace(0.0, np.pi, 15)
_HAIR_PHI = np.linspace(-0.25, np.pi + 0.25, 19)
# Far-off-screen coordinates are clamped so PIL never sees huge integers; shapes that far out are invisible.
_COORD_LIMIT = 4.0


def _check_rgb(name: str, value) -> RGB:
    arr = np.asarray(value)
    if arr.shape != (3,) or not np.all((arr >= 0) & (arr <= 255)) or not np.all(arr == np.round(arr)):
        raise ValueError(f"Appearance.{name} must be 3 integers in [0, 255], got {value!r}")
    return tuple(int(v) for v in arr)


def _hsv(h: float, s: float, v: float) -> RGB:
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _dist(a: RGB, b: RGB) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


@dataclasses.dataclass(frozen=True)
class Appearance:
    """Per-speaker colours, each an RGB tuple of uint8 values."""

    background: RGB
    skin: RGB
    hair: RGB
    lips: RGB
    mouth: RGB
    teeth: RGB
    brows: RGB
    eye_white: RGB
    iris: RGB

    def __post_init__(self):
        for name in _COLOUR_FIELDS:
            object.__setattr__(self, name, _check_rgb(name, getattr(self, name)))

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return _COLOUR_FIELDS

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Appearance:
        """Plausible random colours; background and hair are kept clearly distinct from the skin."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"Appearance.sample: rng must be a numpy.random.Generator, got {type(rng).__name__}")
        skin = _hsv(rng.uniform(0.03, 0.10), rng.uniform(0.25, 0.6), rng.uniform(0.4, 0.95))
        # Rejection with a bounded number of tries keeps sampling deterministic given rng; the last draw
        # falls back to a value far from any skin tone.
        background = hair = None
        for _ in range(20):
            background = _hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.7), rng.uniform(0.2, 0.95))
            if _dist(background, skin) > 90:
                break
        else:
            background = (40, 60, 160) if sum(skin) > 300 else (200, 220, 255)
        for _ in range(20):
            hair = _hsv(rng.uniform(0.02, 0.12), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.75))
            if _dist(hair, skin) > 80 and _dist(hair, background) > 50:
                break
        else:
            hair = (20, 15, 10) if sum(background) > 150 else (230, 200, 120)
        lips = _hsv(rng.uniform(-0.03, 0.02), rng.uniform(0.35, 0.7), 0.72 * max(skin) / 255 + 0.1)
        mouth = _hsv(rng.uniform(-0.02, 0.03), rng.uniform(0.5, 0.8), rng.uniform(0.12, 0.25))
        teeth = _hsv(rng.uniform(0.1, 0.15), rng.uniform(0.02, 0.12), rng.uniform(0.85, 0.97))
        brows = tuple(int(c * rng.uniform(0.4, 0.7)) for c in hair)
        eye_white = _hsv(rng.uniform(0.0, 0.2), rng.uniform(0.0, 0.06), rng.uniform(0.9, 1.0))
        iris = _hsv(rng.choice([0.07, 0.1, 0.3, 0.55, 0.6]), rng.uniform(0.4, 0.8), rng.uniform(0.25, 0.6))
        return cls(background, skin, hair, lips, mouth, teeth, brows, eye_white, iris)

    def to_array(self) -> np.ndarray:
        """(9, 3) uint8 in `Appearance.fields()` order."""
        return np.array([getattr(self, f) for f in _COLOUR_FIELDS], np.uint8)

    @classmethod
    def from_array(cls, values: np.ndarray) -> Appearance:
        values = np.asarray(values)
        if values.shape != (len(_COLOUR_FIELDS), 3):
            raise ValueError(f"Appearance.from_array: values must have shape ({len(_COLOUR_FIELDS)}, 3) "
                             f"ordered as {_COLOUR_FIELDS}, got {values.shape}")
        return cls(*(tuple(int(c) for c in row) for row in values))


def _shade(colour: RGB, factor: float) -> RGB:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)


def _flat(points: np.ndarray) -> list[float]:
    return points.ravel().tolist()


def _arc(p0: np.ndarray, p16: np.ndarray, top: np.ndarray, phi: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Half-ellipse from p0 (phi=0) over `top` (phi=pi/2) to p16 (phi=pi), scaled about the chord centre."""
    c = (p0 + p16) / 2
    return c + np.cos(phi)[:, None] * sx * (p0 - c) + np.sin(phi)[:, None] * sy * (top - c)


def _draw_eye(img: Image.Image, draw: ImageDraw.ImageDraw, eye: np.ndarray, app: Appearance,
              gaze: tuple[float, float], lid_width: int) -> None:
    """Eye white polygon, iris/pupil clipped to it, and an upper-lid line. `eye`: (6, 2) supersampled px."""
    draw.polygon(_flat(eye), fill=app.eye_white)
    corner_axis = eye[3] - eye[0]
    width = float(np.hypot(*corner_axis))
    if width > 1.0:
        e = corner_axis / width
        up = np.array([e[1], -e[0]])  # image y points down, so "up" is the axis turned by -90 degrees
        centre = eye.mean(0) + gaze[0] * 0.28 * width * e + gaze[1] * 0.12 * width * up
        lo = np.floor(eye.min(0)).astype(int) - 1
        hi = np.ceil(eye.max(0)).astype(int) + 2
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, img.size)
        if np.all(hi > lo):
            # Clip the iris to the eye by drawing it on a crop and pasting back through the eye-polygon mask.
            box = (int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))
            patch = img.crop(box)
            pd = ImageDraw.Draw(patch)
            c = centre - lo
            for radius, colour in ((0.2 * width, app.iris), (0.09 * width, _shade(app.iris, 0.3))):
                pd.ellipse([c[0] - radius, c[1] - radius, c[0] + radius, c[1] + radius], fill=colour)
            mask = Image.new("L", patch.size, 0)
            ImageDraw.Draw(mask).polygon(_flat(eye - lo), fill=255)
            img.paste(patch, box, mask)
    draw.line(_flat(eye[0:4]), fill=app.brows, width=lid_width, joint="curve")


def render_frame(landmarks2d: np.ndarray, appearance: Appearance, image_size: int,
                 gaze: tuple[float, float] | np.ndarray | None = None, supersample: int = 3) -> np.ndarray:
    """Draws one cartoon face.

    Args:
      landmarks2d: (68, 2) float pixel coordinates (x right, y down, origin top-left), dlib-68 order.
      appearance: the speaker's colours.
      image_size: side S of the square output image.
      gaze: (gaze_x, gaze_y) in [-1, 1]; +x moves the irises to the image right, +y moves them up. None = (0, 0).
      supersample: drawing resolution factor; 1 disables anti-aliasing.
    Returns:
      (S, S, 3) uint8 RGB image.
    """
    pts = np.asarray(landmarks2d, np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"landmarks2d must have shape (68, 2), got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("landmarks2d contains NaN or inf")
    if not isinstance(appearance, Appearance):
        raise TypeError(f"appearance must be an Appearance, got {type(appearance).__name__}")
    if int(image_size) != image_size or image_size <= 0:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if int(supersample) != supersample or supersample < 1:
        raise ValueError(f"supersample must be a positive integer, got {supersample!r}")
    g = (0.0, 0.0) if gaze is None else tuple(float(v) for v in np.asarray(gaze, np.float64).reshape(-1))
    if len(g) != 2:
        raise ValueError(f"gaze must be (gaze_x, gaze_y), got {gaze!r}")
    size, k = int(image_size), int(supersample)
    a = appearance

    # Pixel k covers [k, k+1) while PIL puts pixel centres on integers, hence the half-pixel shift.
    p = np.clip(pts, -_COORD_LIMIT * size, (1 + _COORD_LIMIT) * size) * k - 0.5
    # Face scale that survives yaw (ear-to-ear shrinks) and pitch (bridge-to-chin shrinks).
    scale = max(np.hypot(*(p[16] - p[0])), 1.33 * np.hypot(*(p[8] - p[27])), 1.0)

    img = Image.new("RGB", (size * k, size * k), a.background)
    draw = ImageDraw.Draw(img)
    up_vec = p[27] - p[8]
    top = forehead_top(p)
    hair_top = top + 0.1 * up_vec

    # Neck: a band below jaw points 5 and 11, extended away from the face.
    down = -up_vec / max(np.hypot(*up_vec), 1e-6) * 2 * size * k
    draw.polygon(_flat(np.stack([p[5], p[5] + down, p[11] + down, p[11]])), fill=_shade(a.skin, 0.82))
    draw.polygon(_flat(_arc(p[0], p[16], hair_top, _HAIR_PHI, 1.1, 1.0)), fill=a.hair)
    face = np.concatenate([p[0:17], _arc(p[0], p[16], top, _PHI[::-1], 1.0, 1.0)[1:-1]])
    draw.polygon(_flat(face), fill=a.skin)

    nose_colour = _shade(a.skin, 0.72)
    thin = max(1, int(round(0.012 * scale)))
    draw.line(_flat(p[28:31]), fill=nose_colour, width=thin, joint="curve")
    draw.line(_flat(p[31:36]), fill=nose_colour, width=thin, joint="curve")

    _draw_eye(img, draw, p[36:42], a, g, thin + 1)
    _draw_eye(img, draw, p[42:48], a, g, thin + 1)

    brow_width = max(1, int(round(0.035 * scale)))
    draw.line(_flat(p[17:22]), fill=a.brows, width=brow_width, joint="curve")
    draw.line(_flat(p[22:27]), fill=a.brows, width=brow_width, joint="curve")

    draw.polygon(_flat(p[48:60]), fill=a.lips)
    draw.polygon(_flat(p[60:68]), fill=a.mouth)
    # Upper teeth: a band under the inner upper lip, at most half the local opening so it stays in the mouth.
    upper = p[[60, 61, 62, 63, 64]]
    lower = p[[60, 67, 66, 65, 64]]
    gap = lower - upper
    gap_len = np.hypot(gap[:, 0], gap[:, 1])
    if gap_len.max() > k:
        depth = np.minimum(0.035 * scale, 0.5 * gap_len) / np.maximum(gap_len, 1e-6)
        teeth_edge = upper + depth[:, None] * gap
        draw.polygon(_flat(np.concatenate([upper, teeth_edge[-2:0:-1]])), fill=a.teeth)

    if k > 1:
        img = img.reduce(k)
    return np.asarray(img, dtype=np.uint8)


def render_frames(landmarks2d: np.ndarray, appearance: Appearance, image_size: int,
                  gaze: np.ndarray | None = None, supersample: int = 3) -> np.ndarray:
    """Draws a clip frame by frame.

    Args:
      landmarks2d: (T, 68, 2) float pixel coordinates.
      gaze: (T, 2) float (gaze_x, gaze_y) per frame, or None for straight ahead.
    Returns:
      (T, S, S, 3) uint8 RGB frames.
    """
    pts = np.asarray(landmarks2d, np.float64)
    if pts.ndim != 3 or pts.shape[1:] != (68, 2):
        raise ValueError(f"landmarks2d must have shape (T, 68, 2), got {pts.shape}")
    if gaze is not None:
        gaze = np.asarray(gaze, np.float64)
        if gaze.shape != (pts.shape[0], 2):
            raise ValueError(f"gaze must have shape (T, 2) = ({pts.shape[0]}, 2) or be None, got {gaze.shape}")
    size = int(image_size)
    out = np.empty((pts.shape[0], size, size, 3), np.uint8)
    for t in range(pts.shape[0]):
        out[t] = render_frame(pts[t], appearance, size, None if gaze is None else gaze[t], supersample)
    return out
