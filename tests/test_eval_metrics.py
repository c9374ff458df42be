"""Landmark distances (M-LMD / F-LMD), SynthTalk landmarks from motion, StyleSim and style retrieval."""

import json

import ml_collections
import numpy as np
import pytest
from flax import nnx

from mirrortalk_jax.data import schema
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from mirrortalk_jax.data.sources import ClipSource
from mirrortalk_jax.data.synthtalk import corpus, face
from mirrortalk_jax.evaluate import landmarks, style_similarity


def _slow_lmd(pred, gt, points, center):
    """The literature's definition written out frame by frame and point by point."""
    total, count = 0.0, 0
    for t in range(pred.shape[0]):
        a = [np.array(pred[t, p], np.float64) for p in points]
        b = [np.array(gt[t, p], np.float64) for p in points]
        if center:
            ma, mb = sum(a) / len(a), sum(b) / len(b)
            a, b = [x - ma for x in a], [x - mb for x in b]
        for x, y in zip(a, b):
            total += float(np.sqrt(np.sum((x - y) ** 2)))
            count += 1
    return total / count


def _neutral_2d(frames=3, size=64):
    return np.repeat(landmarks.synthtalk_landmarks(np.zeros((1, 18)), np.zeros(8), size), frames, 0).astype(
        np.float64)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("center", [True, False])
def test_lmd_matches_a_slow_reference(dims, center):
    rng = np.random.default_rng(dims)
    pred = rng.normal(size=(6, 68, dims)) * 10
    gt = pred + rng.normal(size=pred.shape)
    assert landmarks.lmd(pred, gt, center=center) == pytest.approx(_slow_lmd(pred, gt, range(68), center), 1e-12)
    assert landmarks.f_lmd(pred, gt, center=center) == pytest.approx(_slow_lmd(pred, gt, range(68), center), 1e-12)
    assert landmarks.m_lmd(pred, gt, center=center) == pytest.approx(
        _slow_lmd(pred, gt, range(48, 68), center), 1e-12)
    some = [3, 10, 50]
    assert landmarks.lmd(pred, gt, points=some, center=center) == pytest.approx(
        _slow_lmd(pred, gt, some, center), 1e-12)
    # Per-frame values average to the whole; a mask keeps only the chosen frames.
    per_frame = landmarks.per_frame_lmd(pred, gt, landmarks.MOUTH_POINTS, center)
    assert per_frame.shape == (6,)
    mask = np.array([1, 0, 1, 0, 0, 1], bool)
    assert landmarks.m_lmd(pred, gt, center=center, mask=mask) == pytest.approx(per_frame[mask].mean(), 1e-12)
    # Batched: leading axes are frames too.
    assert landmarks.lmd(pred.reshape(2, 3, 68, dims), gt.reshape(2, 3, 68, dims), center=center) == pytest.approx(
        landmarks.lmd(pred, gt, center=center), 1e-12)


def test_identical_and_translated_landmarks():
    gt = _neutral_2d()
    assert landmarks.m_lmd(gt, gt) == 0.0 and landmarks.f_lmd(gt, gt) == 0.0
    shift = np.array([[3.0, -4.0], [1.0, 0.0], [0.0, 2.0]])[:, None, :]  # a different translation per frame
    moved = gt + shift
    assert landmarks.m_lmd(moved, gt) == pytest.approx(0.0, abs=1e-9)
    assert landmarks.f_lmd(moved, gt) == pytest.approx(0.0, abs=1e-9)
    # Without centring every point is off by the frame's translation: mean of |shift| = (5 + 1 + 2) / 3.
    assert landmarks.m_lmd(moved, gt, center=False) == pytest.approx(8 / 3)
    assert landmarks.f_lmd(moved, gt, center=False) == pytest.approx(8 / 3)


def test_a_known_mouth_displacement():
    gt = _neutral_2d(frames=1)
    d = 2.0
    pred = gt.copy()
    pred[:, 57, 1] += d  # lower-lip bottom drops by 2 px
    # Centred over the 20 mouth points, the mouth mean moves d/20: point 57 is off by d(1 - 1/20), the other 19
    # by d/20 each, so M-LMD = (0.95 d + 19 * 0.05 d) / 20 = 0.095 d.
    assert landmarks.m_lmd(pred, gt) == pytest.approx(0.095 * d)
    assert landmarks.m_lmd(pred, gt, center=False) == pytest.approx(d / 20)
    # Over all 68: (d (1 - 1/68) + 67 d / 68) / 68.
    assert landmarks.f_lmd(pred, gt) == pytest.approx(2 * d * 67 / 68 ** 2)
    assert landmarks.f_lmd(pred, gt, center=False) == pytest.approx(d / 68)


def test_m_lmd_uses_exactly_points_48_to_67():
    np.testing.assert_array_equal(landmarks.MOUTH_POINTS, np.arange(48, 68))
    gt = _neutral_2d(frames=1)
    touched = []
    for k in range(68):
        pred = gt.copy()
        pred[0, k] += [1.5, -0.5]
        assert landmarks.f_lmd(pred, gt) > 0
        if landmarks.m_lmd(pred, gt) > 1e-9:
            touched.append(k)
    assert touched == list(range(48, 68))


def test_input_errors():
    gt = _neutral_2d(frames=2)
    with pytest.raises(ValueError, match="same shape"):
        landmarks.lmd(gt[:1], gt)
    with pytest.raises(ValueError, match="dlib-68"):
        landmarks.m_lmd(gt[:, :40], gt[:, :40])
    with pytest.raises(ValueError, match="NaN"):
        landmarks.lmd(np.full_like(gt, np.nan), gt)
    with pytest.raises(ValueError, match="no frame"):
        landmarks.lmd(gt, gt, mask=np.zeros(2, bool))
    a, b = landmarks.match_frames(np.arange(10)[:, None, None], np.arange(4)[:, None, None])
    assert a.shape[0] == b.shape[0] == 4 and a[0, 0, 0] == 0 and a[-1, 0, 0] == 9


def test_synthtalk_landmarks_reproduce_the_records(micro_dataset):
    for split in corpus.SPLITS:
        source = ClipSource(micro_dataset, split)
        image_size = int(source.info.metadata["image_size"])
        for i in range(min(len(source), 2)):
            record = source[i]
            frame = schema.decode_frames(record["frames"][:1])[0]
            assert frame.shape[:2] == (image_size, image_size)
            shape = json.loads(record["metadata"])["face_shape"]
            lm = landmarks.synthtalk_landmarks(record["motion"], shape, image_size)
            assert lm.shape == record["landmarks_2d"].shape == (record["motion"].shape[0], 68, 2)
            np.testing.assert_allclose(lm, record["landmarks_2d"], atol=1e-3)
            assert landmarks.m_lmd(lm, record["landmarks_2d"]) < 1e-4
            assert landmarks.f_lmd(lm, record["landmarks_2d"]) < 1e-4
            # The speaker's shape matters: the template face is measurably off.
            template = landmarks.synthtalk_landmarks(record["motion"], face.FaceShape(), image_size)
            assert landmarks.f_lmd(template, record["landmarks_2d"]) > 1e-2


# ----- StyleSim and retrieval -----


def test_style_similarity():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(5, 8))
    assert style_similarity.style_similarity(e, e) == pytest.approx(1.0)
    assert style_similarity.style_similarity(e, 3.0 * e) == pytest.approx(1.0)  # scale-free
    assert style_similarity.style_similarity(e, -e) == pytest.approx(-1.0)
    a, b = np.eye(4)[:2], np.eye(4)[2:]
    assert style_similarity.style_similarity(a, b) == pytest.approx(0.0)
    np.testing.assert_allclose(style_similarity.cosine_similarity(np.array([[1.0, 0.0], [1.0, 1.0]]),
                                                                  np.array([[0.0, 2.0], [1.0, 0.0]])),
                               [0.0, np.sqrt(0.5)])
    with pytest.raises(ValueError, match="same shape"):
        style_similarity.style_similarity(e, e[:3])


def test_retrieval_accuracy_on_a_constructed_example():
    # Three speakers whose references point along the axes (two references for speaker 0).
    gallery = np.array([[1.0, 0, 0], [0.9, 0.1, 0], [0, 1.0, 0], [0, 0, 1.0]])
    gallery_labels = np.array([0, 0, 1, 2])
    queries = np.array([[0.8, 0.2, 0.0],    # speaker 0: nearest is a speaker-0 reference  -> right
                        [0.1, 0.9, 0.1],    # speaker 1                                     -> right
                        [0.9, 0.0, 0.3],    # speaker 2, but closest to speaker 0            -> wrong
                        [0.0, 0.2, 5.0]])   # speaker 2 (norm does not matter)               -> right
    labels = np.array([0, 1, 2, 2])
    np.testing.assert_array_equal(style_similarity.retrieval_predictions(queries, gallery, gallery_labels),
                                  [0, 1, 0, 2])
    assert style_similarity.retrieval_accuracy(queries, labels, gallery, gallery_labels) == pytest.approx(0.75)
    # Excluding the two speaker-0 references for query 2 lets it find speaker 2.
    exclude = np.zeros((4, 4), bool)
    exclude[2, :2] = True
    assert style_similarity.retrieval_accuracy(queries, labels, gallery, gallery_labels, exclude) == 1.0
    with pytest.raises(ValueError, match="without any gallery"):
        style_similarity.retrieval_accuracy(queries, labels, gallery, gallery_labels, np.ones((4, 4), bool))


def _encoder(max_frames=16):
    from mirrortalk_jax.models.mirrortalk.style_encoder import StyleEncoder

    return StyleEncoder(motion_dim=SYNTHTALK_SPEC.dim, hidden=16, num_layers=1, num_heads=2, mlp_dim=32,
                        num_slots=4, style_dim=8, content_dim=8, max_frames=max_frames, rngs=nnx.Rngs(0))


def test_embed_motion_windows_and_masks():
    encoder = _encoder()
    rng = np.random.default_rng(0)
    short = rng.normal(size=(10, 18)).astype(np.float32)
    long = rng.normal(size=(40, 18)).astype(np.float32)
    padded = np.zeros((2, 40, 18), np.float32)
    padded[0, :10], padded[1] = short, long
    mask = np.zeros((2, 40), bool)
    mask[0, :10], mask[1] = True, True
    padded[0, 10:] = 7.0  # whatever lies behind the mask must not matter
    emb = style_similarity.embed_motion(encoder, padded, mask, batch_size=4)
    assert emb.shape == (2, 8)
    # A clip no longer than a window: its normalised style code.
    code = np.asarray(encoder(short[None], np.ones((1, 10), bool)), np.float64)[0]
    np.testing.assert_allclose(emb[0], code / np.linalg.norm(code), atol=1e-5)
    # A longer one: the mean of the normalised codes of ceil(40 / 16) = 3 evenly spaced full windows.
    codes = [np.asarray(encoder(long[None, s:s + 16], np.ones((1, 16), bool)), np.float64)[0] for s in (0, 12, 24)]
    np.testing.assert_allclose(emb[1], np.mean([c / np.linalg.norm(c) for c in codes], 0), atol=1e-5)
    # A list of unpadded sequences gives the same.
    np.testing.assert_allclose(style_similarity.embed_motion(encoder, [short, long]), emb, atol=1e-6)
    # Identical sequences are maximally similar.
    assert style_similarity.style_similarity(emb[:1], style_similarity.embed_motion(encoder, [short])) == \
        pytest.approx(1.0)


def test_the_generators_own_style_encoder_is_refused(tmp_path):
    generator = ml_collections.ConfigDict({"model": {"style_encoder_workdir": str(tmp_path / "sdse")}})
    with pytest.raises(ValueError, match="independently trained"):
        style_similarity.StyleEvaluator.from_run(tmp_path / "sdse", generator_config=generator)
