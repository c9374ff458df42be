"""Tests of SynthTalk's parametric face (face.py) and its rasterizer (raster.py)."""

import dataclasses
import time

import numpy as np
import pytest

from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from mirrortalk_jax.data.synthtalk.face import (
    TEMPLATE, FaceShape, forehead_top, landmarks_3d, project, shaped_template)
from mirrortalk_jax.data.synthtalk.raster import Appearance, render_frame, render_frames

S = 128
APP = Appearance(background=(70, 110, 160), skin=(220, 170, 140), hair=(60, 40, 20), lips=(190, 80, 90),
                 mouth=(60, 10, 20), teeth=(240, 240, 225), brows=(50, 35, 20), eye_white=(250, 250, 250),
                 iris=(60, 120, 60))


def motion(n: int = 1, **channels: float) -> np.ndarray:
    """(n, 18) motion with the named channels set."""
    m = np.zeros((n, SYNTHTALK_SPEC.dim))
    for name, value in channels.items():
        m[:, SYNTHTALK_SPEC.index(name)] = value
    return m


def pixels(shape: FaceShape | None = None, **channels: float) -> np.ndarray:
    """(68, 2) projected landmarks of one frame."""
    return project(landmarks_3d(motion(1, **channels), shape), S)[0]


def near_colour(img: np.ndarray, colour, tol: float) -> np.ndarray:
    return np.linalg.norm(img.astype(np.float64) - np.asarray(colour, np.float64), axis=-1) < tol


def box_mask(points: np.ndarray, pad: float) -> np.ndarray:
    """Boolean (S, S) mask of pixel centres inside the padded bounding box of `points` (K, 2)."""
    lo, hi = points.min(0) - pad, points.max(0) + pad
    ys, xs = np.mgrid[0:S, 0:S] + 0.5
    return (xs >= lo[0]) & (xs <= hi[0]) & (ys >= lo[1]) & (ys <= hi[1])


# ---------------------------------------------------------------- face geometry


def test_zero_motion_gives_template_with_dtypes():
    out = landmarks_3d(motion(4), FaceShape())
    assert out.shape == (4, 68, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.broadcast_to(TEMPLATE, (4, 68, 3)), atol=1e-6)
    np.testing.assert_allclose(landmarks_3d(motion(1))[0], TEMPLATE, atol=1e-6)
    px = project(out, S)
    assert px.shape == (4, 68, 2) and px.dtype == np.float32


def test_vectorised_equals_per_frame():
    rng = np.random.default_rng(0)
    m = rng.uniform(-0.5, 1.0, (7, SYNTHTALK_SPEC.dim))
    shape = FaceShape.sample(rng)
    batch = landmarks_3d(m, shape)
    single = np.stack([landmarks_3d(m[t:t + 1], shape)[0] for t in range(len(m))])
    np.testing.assert_allclose(batch, single, atol=1e-6)
    np.testing.assert_allclose(project(batch, S), np.stack([project(b, S) for b in batch]), atol=1e-4)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="motion"):
        landmarks_3d(np.zeros((3, 17)))
    with pytest.raises(ValueError, match="image_size"):
        project(TEMPLATE[None], 0)
    with pytest.raises(ValueError, match="values"):
        FaceShape.from_array(np.zeros(3))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("channels", [{}, {"jaw_open": 1.0}, {"corner_pull": 1.0}, {"lip_round": 1.0},
                                      {"mouth_width": -1.0, "corner_pull": -1.0}])
def test_dlib_layout(seed, channels):
    shape = FaceShape() if seed == 0 else FaceShape.sample(np.random.default_rng(seed))
    p = pixels(shape, **channels)
    mouth_x = p[48:68, 0]
    assert p[48, 0] == mouth_x.min() and p[54, 0] == mouth_x.max()
    assert np.argmax(p[0:17, 1]) == 8 and p[8, 1] == p[:, 1].max()  # chin is the lowest point (y down)
    right_eye, left_eye = p[36:42].mean(0), p[42:48].mean(0)
    assert right_eye[0] < S / 2 < left_eye[0]  # subject's right eye on the image's left
    assert right_eye[0] < p[30, 0] < left_eye[0]
    assert p[0, 0] < p[8, 0] < p[16, 0] and p[17, 0] < p[21, 0] < p[22, 0] < p[26, 0]
    assert p[36, 0] < p[39, 0] < p[42, 0] < p[45, 0]
    assert p[51, 1] < p[62, 1] <= p[66, 1] < p[57, 1]  # lip order top to bottom
    assert p[27, 1] < p[30, 1] < p[33, 1] < p[51, 1]
    assert p[19, 1] < p[37, 1] and p[24, 1] < p[44, 1]  # brows above the eyes


def test_jaw_open_opens_and_lip_press_closes():
    gaps = [abs(pixels(jaw_open=j)[66, 1] - pixels(jaw_open=j)[62, 1]) for j in np.linspace(0, 1, 6)]
    assert np.all(np.diff(gaps) > 0.5), gaps
    chin = [pixels(jaw_open=j)[8, 1] for j in (0.0, 1.0)]
    assert chin[1] > chin[0] + 5  # the jaw drops, not just the lip
    for jaw in (0.0, 0.8):
        p3 = landmarks_3d(motion(1, jaw_open=jaw, lip_press=1.0))[0]
        width = np.linalg.norm(p3[16] - p3[0])
        assert np.linalg.norm(p3[66] - p3[62]) < 0.01 * width
    half = landmarks_3d(motion(1, jaw_open=0.8, lip_press=0.5))[0]
    open_ = landmarks_3d(motion(1, jaw_open=0.8))[0]
    assert 0.05 < np.linalg.norm(half[66] - half[62]) < np.linalg.norm(open_[66] - open_[62])


def test_eye_close_meets_lids():
    closed = landmarks_3d(motion(1, eye_close=1.0, brow_raise=1.0, cheek_raise=1.0))[0]
    opened = landmarks_3d(motion(1))[0]
    for up, lo in ((37, 41), (38, 40), (43, 47), (44, 46)):
        assert np.linalg.norm(closed[up] - closed[lo]) < 1e-4
        assert opened[up, 1] - opened[lo, 1] > 0.05


def test_pose_and_expression_directions():
    neutral = pixels()
    assert pixels(yaw=0.3)[30, 0] > neutral[30, 0] + 3 and pixels(yaw=-0.3)[30, 0] < neutral[30, 0] - 3
    assert pixels(pitch=0.3)[30, 1] > neutral[30, 1] + 3  # positive pitch nods down
    assert pixels(tx=0.2)[30, 0] > neutral[30, 0] + 10 and pixels(ty=0.2)[30, 1] < neutral[30, 1] - 10
    assert pixels(brow_raise=1.0)[19, 1] < neutral[19, 1] - 2
    smile, frown = pixels(corner_pull=1.0), pixels(corner_pull=-1.0)
    assert smile[48, 1] < neutral[48, 1] < frown[48, 1]
    assert pixels(lip_round=1.0)[54, 0] - pixels(lip_round=1.0)[48, 0] < neutral[54, 0] - neutral[48, 0] - 5
    assert pixels(mouth_width=1.0)[54, 0] - pixels(mouth_width=1.0)[48, 0] > neutral[54, 0] - neutral[48, 0] + 5


def test_face_shape():
    wide, narrow = FaceShape(mouth_width=0.15), FaceShape(mouth_width=-0.15)
    width = [abs(pixels(s)[54, 0] - pixels(s)[48, 0]) for s in (narrow, FaceShape(), wide)]
    assert width[0] < width[1] < width[2]
    assert abs(pixels(FaceShape(face_width=0.1))[16, 0] - pixels()[16, 0]) > 2
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    a, b = FaceShape.sample(rng_a), FaceShape.sample(rng_b)
    assert a == b and a != FaceShape()
    arr = a.to_array()
    assert arr.shape == (len(FaceShape.fields()),) and arr.dtype == np.float32
    assert FaceShape.from_array(arr).to_array().tolist() == arr.tolist()
    assert not np.allclose(shaped_template(a), TEMPLATE)


def test_project_centres_neutral_head_in_image():
    p = pixels()
    assert np.all((p >= 0) & (p <= S))
    assert abs((p[0, 0] + p[16, 0]) / 2 - S / 2) < 0.5
    head_centre_y = (project(TEMPLATE[8], S)[1] + project(forehead_top(TEMPLATE), S)[1]) / 2
    assert abs(head_centre_y - S / 2) < 0.5
    assert abs((p[:, 1].min() + p[:, 1].max()) / 2 - S / 2) < 0.12 * S  # landmark box roughly centred too
    assert 0.55 * S < p[16, 0] - p[0, 0] < 0.72 * S


# ---------------------------------------------------------------- rasterizer


def test_render_shape_dtype_determinism():
    img = render_frame(pixels(), APP, S)
    assert img.shape == (S, S, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, render_frame(pixels(), APP, S))
    lm = project(landmarks_3d(motion(3, jaw_open=0.5)), S)
    frames = render_frames(lm, APP, S, gaze=np.zeros((3, 2)))
    assert frames.shape == (3, S, S, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[1], render_frame(lm[1], APP, S))
    assert render_frame(pixels(), APP, 64).shape == (64, 64, 3)


def _jaw_side_band(p: np.ndarray) -> np.ndarray:
    """Pixels whose centre is within 1 px of the jaw polyline 2-3-4, where only background meets skin."""
    ys, xs = np.mgrid[0:S, 0:S] + 0.5
    q = np.stack([xs, ys], -1)
    dist = np.full((S, S), np.inf)
    for a, b in ((p[2], p[3]), (p[3], p[4])):
        t = np.clip(((q - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
        dist = np.minimum(dist, np.linalg.norm(q - (a + t[..., None] * (b - a)), axis=-1))
    return dist < 1.0


def test_anti_aliased_face_boundary():
    p = pixels()
    band = _jaw_side_band(p)
    for supersample, expect_blend in ((3, True), (1, False)):
        img = render_frame(p, APP, S, supersample=supersample)[band]
        pure = near_colour(img, APP.background, 0.5) | near_colour(img, APP.skin, 0.5)
        assert (np.count_nonzero(~pure) > 0) == expect_blend
    # Blended pixels lie between background and skin.
    img = render_frame(p, APP, S)[band].astype(np.float64)
    lo = np.minimum(APP.background, APP.skin) - 1
    hi = np.maximum(APP.background, APP.skin) + 1
    assert np.all((img >= lo) & (img <= hi))


def test_mouth_interior_grows_with_jaw_and_vanishes_with_lip_press():
    def dark(**channels):
        p = pixels(**channels)
        img = render_frame(p, APP, S)
        return np.count_nonzero(near_colour(img, APP.mouth, 40) & box_mask(p[48:68], 2))

    counts = [dark(jaw_open=j) for j in (0.0, 0.3, 0.6, 0.9)]
    assert counts[0] <= 2 and np.all(np.diff(counts) > 5), counts
    assert dark(jaw_open=0.8, lip_press=1.0) <= 2


def test_closed_eyes_show_no_white():
    def count(colour, tol, **channels):
        p = pixels(**channels)
        img = render_frame(p, APP, S)
        return np.count_nonzero(near_colour(img, colour, tol) & box_mask(p[36:48], 2))

    assert count(APP.eye_white, 25) > 15
    assert count(APP.eye_white, 25, eye_close=1.0) <= 1
    assert count(APP.eye_white, 25, eye_close=0.5) < count(APP.eye_white, 25)
    # The iris is clipped to the eye opening, so a closed eye hides it too.
    assert count(APP.iris, 30) > 4
    assert count(APP.iris, 30, eye_close=1.0) <= 1


def test_gaze_moves_iris():
    p = pixels()
    eye = box_mask(p[36:42], 1)

    def iris_x(gx):
        img = render_frame(p, APP, S, gaze=(gx, 0.0))
        ys, xs = np.nonzero(near_colour(img, APP.iris, 40) & eye)
        return xs.mean()

    assert iris_x(1.0) > iris_x(0.0) + 0.5 > iris_x(-1.0) + 1.0


def test_appearance_changes_image_and_roundtrips():
    rng = np.random.default_rng(1)
    other = Appearance.sample(rng)
    assert not np.array_equal(render_frame(pixels(), APP, S), render_frame(pixels(), other, S))
    arr = other.to_array()
    assert arr.shape == (9, 3) and arr.dtype == np.uint8
    assert Appearance.from_array(arr) == other
    samples = [Appearance.sample(np.random.default_rng(s)) for s in range(20)]
    assert all(np.linalg.norm(np.subtract(a.background, a.skin)) > 50 for a in samples)
    assert Appearance.sample(np.random.default_rng(3)) == Appearance.sample(np.random.default_rng(3))
    with pytest.raises(ValueError, match="skin"):
        dataclasses.replace(APP, skin=(300, 0, 0))


def test_out_of_frame_landmarks_do_not_crash():
    p = pixels()
    far = render_frame(p + 1e7, APP, S)
    assert np.all(far == np.array(APP.background, np.uint8))
    partial = render_frame(p + np.array([70.0, -40.0]), APP, S)
    assert partial.shape == (S, S, 3) and not np.all(partial == np.array(APP.background, np.uint8))
    with pytest.raises(ValueError, match="landmarks2d"):
        render_frame(np.full((68, 2), np.nan), APP, S)


def test_render_speed_report():
    """Prints (does not assert) render time per 128x128 frame; run with -s to see it."""
    rng = np.random.default_rng(0)
    m = rng.uniform(0, 0.6, (200, SYNTHTALK_SPEC.dim)) * 0.5
    lm = project(landmarks_3d(m, FaceShape.sample(rng)), S)
    t0 = time.perf_counter()
    render_frames(lm, APP, S)
    print(f"\nrender_frames: {1e3 * (time.perf_counter() - t0) / len(m):.3f} ms per {S}x{S} frame")
