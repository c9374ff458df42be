"""The pieces of `data prepare` that need no face model: tracking, smoothing, segments, the motion basis, the
corpus layouts, input listing and the new record fields."""

import json
import os
from pathlib import PurePosixPath

import numpy as np
import pytest

from mirrortalk_jax import storage
from mirrortalk_jax.data import schema
from mirrortalk_jax.data.faces import backend, layout
from mirrortalk_jax.data.faces.landmarker import FaceObservation
from mirrortalk_jax.data.prepare import inputs, layouts, motion_space, tracking


def _face(x: float, size: float) -> FaceObservation:
    mesh = np.zeros((478, 3), np.float32)
    mesh[:, 0] = np.linspace(x, x + size, 478)
    mesh[:, 1] = np.linspace(50, 50 + size, 478)
    return FaceObservation(mesh, np.zeros(52, np.float32), np.eye(4, dtype=np.float32))


def test_track_stays_on_its_face_splits_where_it_is_lost_and_at_cuts():
    a, big = _face(10, 40), _face(120, 80)
    frames = [[a]] * 5 + [[big, a]] * 5 + [[]] * 2 + [[a]] * 4 + [[a]] * 4
    result = tracking.follow(frames, cuts=[16])
    assert [(s.start, s.stop) for s in result.segments] == [(0, 10), (12, 16), (16, 20)]
    # The larger face that entered at frame 5 did not take the track over.
    assert all(f is a for f in result.segments[0].faces)
    assert result.max_faces == 2 and result.frames_with_face == 18 and result.scene_cuts == 1


def test_short_segments_are_dropped_and_long_ones_cut():
    segs = [tracking.Segment(0, 10, [None] * 10), tracking.Segment(20, 140, [None] * 120)]
    kept, dropped = tracking.split_segments(segs, fps=25, min_seconds=1.0, max_seconds=2.0)
    assert dropped == pytest.approx(0.4)
    assert [(s.start, s.stop) for s in kept] == [(20, 60), (60, 100), (100, 140)]
    assert all(len(s.faces) == len(s) for s in kept)


def test_one_euro_removes_jitter_without_delaying_a_fast_movement():
    rng = np.random.default_rng(0)
    t = np.arange(100)
    step = (t >= 50).astype(np.float64) * 10.0  # the mouth opening at once
    noisy = step + rng.normal(0, 0.3, t.shape)
    smooth = tracking.one_euro(noisy, fps=25.0)
    assert np.abs(smooth[:45] - 0).std() < 0.5 * np.abs(noisy[:45]).std()
    # Zero phase: the step is crossed where it happens, not later.
    assert abs(np.argmax(smooth > 5.0) - 50) <= 1


def test_crop_transforms_map_the_face_into_the_crop_and_back():
    mesh = np.stack([_face(100 + 2 * i, 60).mesh for i in range(20)]).astype(np.float64)
    transform = tracking.crop_transforms(mesh, 25.0, image_size=128)
    crop = tracking.to_crop(mesh, transform)
    assert (crop[..., :2] > 0).all() and (crop[..., :2] < 128).all()
    back = (crop[..., :2] - transform[:, None, 1:]) / transform[:, None, :1]
    np.testing.assert_allclose(back, mesh[..., :2], atol=1e-3)


def _random_meshes(rng, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Meshes of one face: a fixed shape, a mouth opening (lower region), random similarity poses."""
    base = rng.normal(0, 30, (478, 3))
    opening = rng.uniform(0, 1, frames)
    lower = base[:, 1] > base[layout.NOSE_TIP, 1]
    lower[list(layout.RIGID)] = False  # the skull-fixed vertices stay put
    out = []
    for o in opening:
        m = base.copy()
        m[lower, 1] += 8 * o
        angle = rng.normal(0, 0.2)
        rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        out.append(1.3 * m @ rot.T + rng.normal(0, 20, 3))
    return np.array(out), opening


def test_motion_basis_is_pose_free_and_travels_as_json():
    rng = np.random.default_rng(1)
    meshes, opening = _random_meshes(rng, 200)
    basis = motion_space.fit([meshes[:120], meshes[120:]], lower_components=4, upper_components=2)
    spec = basis.spec
    assert spec.group_names[:4] == ("lower", "upper", "eyes", "pose") or set(spec.group_names) >= {
        "lower", "upper", "eyes", "pose"}
    motion = basis.motion(meshes, np.repeat(np.eye(4)[None], len(meshes), 0))
    assert motion.shape == (200, spec.dim)
    # The rotations and shifts are gone: the first lower component is the mouth opening.
    assert abs(np.corrcoef(motion[:, 0], opening)[0, 1]) > 0.99
    upper = motion[:, spec.group_indices("upper")] * basis.upper_scale
    assert np.abs(upper).max() < 1e-6  # in pixels: the upper face did not move
    again = motion_space.MeshBasis.from_json(basis.to_json())
    np.testing.assert_allclose(again.motion(meshes[:5], np.repeat(np.eye(4)[None], 5, 0)), motion[:5], atol=1e-5)
    # Motion back to a mesh: the aligned mesh of the frame.
    aligned = motion_space.similarity_align(meshes[:5], basis.reference, layout.RIGID)
    np.testing.assert_allclose(basis.mesh(motion[:5])[:, basis.lower], aligned[:, basis.lower], atol=0.05)


def test_a_small_training_split_keeps_the_configured_channel_count():
    rng = np.random.default_rng(2)
    meshes, _ = _random_meshes(rng, 3)
    basis = motion_space.fit([meshes], lower_components=12, upper_components=6)
    assert basis.spec.dim == 12 + 1 + 6 + 4 + 6


def test_pose_from_matrix_reads_rotation_and_translation():
    from scipy.spatial.transform import Rotation

    m = np.eye(4)[None].repeat(2, 0)
    m[1, :3, :3] = Rotation.from_euler("xyz", [0.1, -0.2, 0.3]).as_matrix() * 1.1  # a scaled rotation
    m[1, :3, 3] = [3.0, -1.5, -60.0]
    pose = motion_space.pose_from_matrix(m)
    np.testing.assert_allclose(pose[1], [0.1, -0.2, 0.3, 0.2, -0.1, -4.0], atol=1e-5)


@pytest.mark.parametrize("name, path, expected", [
    ("hdtf", "HDTF/WRA_KellyAyotte_000.mp4", {"speaker": "WRA_KellyAyotte"}),
    ("crema_d", "VideoFlash/1001_DFA_ANG_XX.flv",
     {"speaker": "1001", "sentence": "DFA", "emotion": "angry", "intensity": "unspecified"}),
    ("mead", "M003/video/front/angry/level_2/001.mp4", {"speaker": "M003", "emotion": "angry", "intensity": "2"}),
    ("mead", "M003/video/left_30/angry/level_2/001.mp4", None),
    ("voxceleb2", "test/mp4/id00017/01dfn2spqyE/00001.mp4", {"speaker": "id00017", "split": "heldout_speakers"}),
    ("voxceleb2", "dev/mp4/id00012/21Uxsk56VDQ/00001.mp4", {"speaker": "id00012"}),
    ("generic", "alice/day1/take.mov", {"speaker": "alice"}),
    ("generic", "take.mov", {"speaker": "take"}),
])
def test_layouts_read_the_labels_the_file_names_carry(name, path, expected):
    assert layouts.layout(name).labels(PurePosixPath(path)) == expected


def test_heldout_speakers_are_stable_and_about_the_fraction():
    speakers = [f"spk{i}" for i in range(1000)]
    held = [s for s in speakers if layouts.is_heldout_speaker(s, 0.1)]
    assert 60 < len(held) < 140
    assert held == [s for s in speakers if layouts.is_heldout_speaker(s, 0.1)]
    with pytest.raises(ValueError, match="unknown dataset layout 'hdtf2'"):
        layouts.layout("hdtf2")


def test_inputs_expand_folders_lists_and_report_what_is_missing(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.mp4", "a/b/two.MOV", "a/notes.txt", "a/b/three.flv"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "a" / "clip.mp4").mkdir()  # a folder named like a video
    (tmp_path / "a" / "clip.mp4" / "inner.mp4").write_bytes(b"x")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")  # a folder link loop: not followed
    listing = tmp_path / "list.txt"
    listing.write_text("# my videos\na/one.mp4\nmissing.mp4\n\n" + str(tmp_path / "a" / "b") + "\n")
    videos, problems = inputs.expand([str(tmp_path / "a"), str(listing), str(tmp_path / "empty")])
    names = [v.relative.as_posix() for v in videos]
    assert names == ["one.mp4", "b/three.flv", "b/two.MOV", "clip.mp4/inner.mp4"]
    assert len({v.key for v in videos}) == len(videos)
    assert [(p["file"].rsplit("/", 1)[-1], p["reason"]) for p in problems] == [
        ("missing.mp4", "no such file or folder"), ("empty", "no such file or folder")]


def test_records_with_mesh_blendshapes_and_identity_are_validated():
    spec = motion_space.motion_spec("m", 2, 1)
    record = {"clip_id": "c", "speaker": "s", "speaker_index": 0, "fps": 25.0, "sample_rate": 16000,
              "audio": np.zeros(640 * 3, np.float32), "motion": np.zeros((3, spec.dim), np.float32),
              "metadata": json.dumps({}), "mesh_3d": np.zeros((3, 478, 3), np.float32),
              "blendshapes": np.zeros((3, 52), np.float32), "identity": np.zeros(128, np.float32)}
    schema.validate_record(record, spec, "here")
    bad = dict(record, mesh_3d=np.zeros((2, 478, 3), np.float32))
    with pytest.raises(schema.RecordError, match="mesh_3d has shape"):
        schema.validate_record(bad, spec, "here")
    bad = dict(record, identity=np.full(128, np.nan, np.float32))
    with pytest.raises(schema.RecordError, match="identity contains NaN"):
        schema.validate_record(bad, spec, "here")
    features = schema.clip_features(spec, mesh_points=478, blendshapes=52, identity_dim=128)
    assert {"mesh_3d", "blendshapes", "identity"} <= set(features.keys())


def test_a_missing_face_extra_says_how_to_install_it():
    with pytest.raises(backend.FacesUnavailable, match=r"pip install 'mirrortalk_jax\[faces\]'"):
        backend.require("no_such_face_module")


def test_dlib68_layout_and_eye_mouth_measures_on_a_synthetic_mesh():
    mesh = np.zeros((478, 3))
    for outer, inner, top, bottom, iris in (layout.RIGHT_EYE, layout.LEFT_EYE):
        mesh[outer, 0], mesh[inner, 0] = 0.0, 10.0
        mesh[top, :2], mesh[bottom, :2] = (5, -1.5), (5, 1.5)
        mesh[iris, :2] = (7.0, 0.0)
    np.testing.assert_allclose(layout.eye_openness(mesh), [0.3, 0.3])
    np.testing.assert_allclose(layout.gaze(mesh), [0.2, 0.0])
    a, b, top, bottom = layout.INNER_LIPS
    mesh[a, 0], mesh[b, 0], mesh[top, 1], mesh[bottom, 1] = 0, 20, 0, 5
    assert layout.mouth_openness(mesh) == pytest.approx(0.25)
    assert layout.dlib68(np.zeros((2, 478, 3))).shape == (2, 68, 3)
    assert len(layout.DLIB68_FROM_MESH) == 68 and all(max(v) < 468 for v in layout.DLIB68_FROM_MESH)


def test_uris_are_told_from_local_paths():
    assert storage.is_remote("gs://bucket/HDTF") and storage.is_remote("s3://b/x.mp4")
    assert not any(storage.is_remote(p) for p in ("clip.mp4", "/data/a://b.mp4", "file:///data/x.mp4", "C:/x.mp4"))
