"""`mirrortalk data prepare` on real material: scikit-image's astronaut photo with a known head roll and espeak
speech, the corpus builders on folders laid out like the real corpora, a corpus of bad files, resuming."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mirrortalk_jax import cli
from mirrortalk_jax.data import schema, sources
from mirrortalk_jax.data.faces import layout
from mirrortalk_jax.data.faces.landmarker import FaceLandmarker
from mirrortalk_jax.data.prepare import builders, dataset, motion_space
from tests import real_videos

SETTINGS = dataset.PrepareSettings(options=dataset.clips.Options(image_size=128, min_seconds=0.8), runner="local")


@pytest.fixture(scope="module")
def good_video(tmp_path_factory):
    return real_videos.talking_video(tmp_path_factory.mktemp("videos") / "astronaut talks.mp4", seconds=3.2)


@pytest.fixture(scope="module")
def prepared(good_video, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "astro"
    log = []
    report = builders.prepare([str(good_video)], out, SETTINGS, log=log.append)
    return out, report, log


def test_a_real_photo_clip_becomes_a_valid_dataset(prepared, good_video):
    out, report, log = prepared
    assert report["counts"] == {"ok": 1, "partial": 0, "rejected": 0}
    entry = report["entries"][0]
    assert entry["clips"] == 1 and entry["seconds_kept"] == pytest.approx(3.2, abs=0.05)
    qc = entry["qc"]
    assert qc["face_fraction"] == 1.0 and qc["face_px"] > 80 and qc["landmark_jitter_px"] < 1.0
    assert json.loads((out / builders.REPORT_FILE).read_text())["counts"]["ok"] == 1
    source = sources.ClipSource(out, "train")  # validates every record it reads
    assert len(source) == 1
    record = source[0]
    spec = sources.motion_spec_of(sources.load_info(out))
    assert set(spec.group_names) >= {"lower", "upper", "eyes", "pose"} and spec.dim == 12 + 1 + 6 + 4 + 6
    num_frames = len(record["motion"])
    assert num_frames == 80 and len(record["audio"]) == num_frames * 640
    frames = schema.decode_frames(record["frames"])
    assert frames.shape == (num_frames, 128, 128, 3)
    points = record["landmarks_2d"]
    assert points.shape == (num_frames, 68, 2) and (points > 0).all() and (points < 128).all()
    assert "summary" not in log and any("1 ok" in line for line in log)


def test_head_roll_is_read_from_the_video(prepared):
    out, _, _ = prepared
    record = sources.ClipSource(out, "train")[0]
    spec = sources.motion_spec_of(sources.load_info(out))
    roll = record["motion"][:, spec.index("roll")]
    applied = np.radians(real_videos.roll_degrees(len(roll)))
    assert abs(np.corrcoef(roll, applied)[0, 1]) > 0.95
    # Pose-normalised expression: a rolling still photo has (almost) no mouth movement.
    mouth = record["motion"][:, spec.index("mouth_open")]
    assert mouth.std() < 0.02


def test_crop_transform_pastes_landmarks_back_onto_the_source_frame(prepared, good_video):
    out, _, _ = prepared
    record = sources.ClipSource(out, "train")[0]
    meta = json.loads(record["metadata"])
    transform = np.asarray(meta["crop_transform"])
    source_frames = real_videos.frames(len(record["motion"]))
    with FaceLandmarker(num_faces=1, video=False) as marker:
        for t in (5, 40, 75):
            direct = layout.dlib68(marker.detect(source_frames[t])[0].mesh)[:, :2]
            a, bx, by = transform[t]
            pasted = (record["landmarks_2d"][t] - [bx, by]) / a
            assert np.abs(pasted - direct).mean() < 3.0  # source pixels (smoothing moves points a little)
    assert meta["source"].endswith("astronaut talks.mp4") and meta["start_frame"] == 0
    assert meta["source_fps"] == 25.0 and meta["source_size"] == [256, 256]


def test_the_basis_in_the_metadata_reproduces_the_expression_channels(prepared):
    out, _, _ = prepared
    info = sources.load_info(out)
    basis = motion_space.MeshBasis.from_json(info.metadata["motion_basis"])
    record = sources.ClipSource(out, "train")[0]
    again = basis.motion(record["mesh_3d"], np.repeat(np.eye(4)[None], len(record["mesh_3d"]), 0))
    k = len(basis.lower_scale) + 1 + len(basis.upper_scale) + 4
    np.testing.assert_allclose(again[:, :k], record["motion"][:, :k], atol=1e-3)
    assert basis.spec == sources.motion_spec_of(info)


def test_rerun_skips_prepared_videos_and_an_interrupted_write_leaves_no_dataset(good_video, tmp_path,
                                                                               monkeypatch):
    second = tmp_path / "second.mp4"
    shutil.copy(good_video, second)
    out = tmp_path / "ds"
    first_log = []
    builders.prepare([str(good_video), str(second)], out, SETTINGS, log=first_log.append)
    # A crash while writing the records of a re-run: the published dataset stays as it was.
    before = sorted(p.name for p in out.iterdir())
    shutil.rmtree(builders.work_dir(out) / "videos" / dataset.inputs.VideoInput(str(second), Path("x")).key)

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(dataset, "record", crash)
    log = []
    with pytest.raises(RuntimeError, match="disk full"):
        builders.prepare([str(good_video), str(second)], out, SETTINGS, log=log.append)
    assert any("1 video(s) already prepared" in line and "1 to go" in line for line in log)
    assert sorted(p.name for p in out.iterdir()) == before
    assert not list(tmp_path.glob(".staging-*"))
    monkeypatch.undo()
    log = []
    builders.prepare([str(good_video), str(second)], out, SETTINGS, log=log.append)
    assert any("2 video(s) already prepared" in line and "0 to go" in line for line in log)
    assert len(sources.ClipSource(out, "train")) == 2


def _corpus(root: Path, files: list[str], video: Path) -> None:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(video, path)


@pytest.mark.parametrize("builder, files, expect", [
    (builders.Hdtf, ["WDA_BarackObama_000.mp4", "WRA_KellyAyotte_001.mp4"],
     {"speakers": ["WDA_BarackObama", "WRA_KellyAyotte"], "runner": ("direct", 1)}),
    (builders.CremaD, ["VideoFlash/1001_DFA_ANG_XX.flv", "VideoFlash/1002_IEO_HAP_HI.flv", "readme.txt"],
     {"speakers": ["1001", "1002"], "emotions": {"angry", "happy"}}),
    (builders.Mead, ["M003/video/front/angry/level_1/001.mp4", "M003/video/left_30/angry/level_1/001.mp4",
                     "W009/video/front/happy/level_3/002.mp4"],
     {"speakers": ["M003", "W009"], "emotions": {"angry", "happy"}}),
    (builders.Voxceleb2, ["dev/mp4/id00012/21Uxsk56VDQ/00001.mp4", "test/mp4/id00017/01dfn2spqyE/00001.mp4"],
     {"speakers": ["id00012", "id00017"], "heldout_speakers": ["id00017"], "runner": ("direct", 2)}),
])
def test_corpus_builders_read_folders_laid_out_like_the_real_ones(builder, files, expect, good_video,
                                                                 tmp_path):
    manual = tmp_path / "manual"
    _corpus(manual, files, good_video)
    runner, workers = expect.get("runner", ("local", 1))  # Apache Beam's DirectRunner, in memory and 2 processes
    settings = dataclasses.replace(SETTINGS, runner=runner, workers=workers)
    b = builder(data_dir=str(tmp_path / "data"), settings=settings, log=lambda line: None)
    b.download_and_prepare(file_format="array_record",
                           download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    assert b.info.metadata["speakers"] == expect["speakers"]
    records = {split: [sources.ClipSource(b.data_dir, split)[i] for i in range(info.num_examples)]
               for split, info in b.info.splits.items()}
    labels = [json.loads(r["metadata"])["labels"] for rs in records.values() for r in rs]
    if "emotions" in expect:
        assert {lab["emotion"] for lab in labels} == expect["emotions"]
    if "heldout_speakers" in expect:
        assert sorted(r["speaker"].decode() for r in records["heldout_speakers"]) == expect["heldout_speakers"]
    assert sum(len(rs) for rs in records.values()) == len(expect["speakers"])  # MEAD's side view is not used
    assert motion_space.MeshBasis.from_json(b.info.metadata["motion_basis"]).spec.name == f"{builder.LAYOUT}_mesh_v1"


def test_the_command_prepares_and_says_why_nothing_came_out(good_video, tmp_path, capsys):
    out = tmp_path / "cmd"
    assert cli.main(["data", "prepare", str(good_video), "--out", str(out), "--image_size", "96",
                     "--speaker_from", "identity"]) == 0
    printed = capsys.readouterr().out
    assert "1 ok" in printed and str(out) in printed
    assert sources.load_info(out).metadata["speakers"] == ["person000"]
    empty = tmp_path / "nothing.mp4"
    empty.write_bytes(b"")
    assert cli.main(["data", "prepare", str(empty), "--out", str(tmp_path / "none"), "--runner", "local"]) == 1
    printed = capsys.readouterr().out
    assert "no training clip" in printed and "empty file (0 bytes)" in printed
    report = json.loads((tmp_path / "none" / builders.REPORT_FILE).read_text())
    assert report["dataset"] is None and report["entries"][0]["status"] == "rejected"


def test_sync_model_scores_clips_and_drops_those_below_the_threshold(good_video, syncnet_dir, tmp_path, capsys):
    out = tmp_path / "synced"
    assert cli.main(["data", "prepare", str(good_video), "--out", str(out), "--image_size", "96",
                     "--sync_model", str(syncnet_dir), "--runner", "local"]) == 0
    record = sources.ClipSource(out, "train")[0]
    meta = json.loads(record["metadata"])
    offset = meta["sync"]["offset"]
    assert abs(offset) <= 15 and np.isfinite(meta["sync"]["confidence"])
    # The offset is corrected by cutting both streams to their shared span.
    assert len(record["motion"]) == 80 - abs(offset) and len(record["audio"]) == len(record["motion"]) * 640
    entry = json.loads((out / builders.REPORT_FILE).read_text())["entries"][0]
    assert entry["sync"][0]["offset"] == offset and entry["sync"][0]["kept"]
    capsys.readouterr()
    assert cli.main(["data", "prepare", str(good_video), "--out", str(tmp_path / "strict"), "--image_size", "96",
                     "--sync_model", str(syncnet_dir), "--min_sync_confidence", "1000", "--runner", "local"]) == 1
    assert "audio-visual sync confidence" in capsys.readouterr().out
    assert cli.main(["data", "prepare", str(good_video), "--out", str(tmp_path / "x"),
                     "--sync_model", str(tmp_path / "no_such_model")]) == 2
    assert "no_such_model" in capsys.readouterr().out


def test_resynced_clip_moves_the_audio_and_keeps_the_streams_aligned():
    n, spf = 10, 640
    audio = np.repeat(np.arange(n, dtype=np.float32), spf)  # sample value = its frame
    clip = dataset.clips.ClipFile([bytes([i]) for i in range(n)], np.arange(n)[:, None, None] * np.ones((n, 478, 3)),
                                  np.zeros((n, 52)), np.zeros((n, 4, 4)), np.zeros((n, 3)), audio, np.zeros(128),
                                  {"start_frame": 100, "num_frames": n})
    late = clip.resynced(2, spf)  # audio 2 frames late: video frame t goes with audio frame t + 2
    assert late.frames_png[0] == bytes([0]) and late.audio[0] == 2 and len(late.audio) == 8 * spf
    early = clip.resynced(-3, spf)
    assert early.frames_png[0] == bytes([3]) and early.audio[0] == 0 and early.info["start_frame"] == 103
    assert len(early.mesh) == 7 and len(early.audio) == 7 * spf


def test_a_long_video_is_read_in_windows_that_add_up_to_the_whole(good_video, prepared, tmp_path):
    options = dataclasses.replace(SETTINGS.options, window_seconds=1.0)
    entry = dataset.clips.process_video(good_video, tmp_path / "clips", options)
    assert entry["status"] == "ok" and entry["clips"] == 3, entry  # windows [0, 1), [1, 2), [2, 3.2)
    assert entry["seconds_kept"] == pytest.approx(3.2, abs=0.05)
    parts = [dataset.clips.ClipFile.load(p) for p in sorted((tmp_path / "clips").glob("*.npz"))]
    assert [p.info["start_frame"] for p in parts] == [0, 25, 50]
    whole = sources.ClipSource(prepared[0], "train")[0]
    audio = np.concatenate([p.audio for p in parts])
    np.testing.assert_allclose(audio, whole["audio"][:len(audio)], atol=1e-6)
    assert all(len(p.audio) == len(p.mesh) * 640 for p in parts)


def test_the_corpus_config_trains_on_a_prepared_dataset(prepared, tmp_path):
    """Region-wise models read the real-face motion space unchanged: two steps of the motion expert on the
    prepared clip, with the corpus config (real_corpus.py) pointed at it."""
    from mirrortalk_jax import base_config
    from mirrortalk_jax.train import trainer
    from mirrortalk_jax.train.metrics import read_metrics

    config = base_config.load_config_file(base_config.config_path("real_corpus"), "hdtf,motion_expert,tiny")
    assert config.data.dataset_dir == "data/hdtf"
    config.data.dataset_dir, config.data.eval_split = str(prepared[0]), "train"  # one clip: no held-out split
    config.train.update(dict(num_steps=2, batch_size=8, log_every=1, eval_every=0, checkpoint_every=1000,
                             warmup_steps=1))
    trainer.train_and_evaluate(config, tmp_path / "run")
    losses = [m["train/loss"] for m in read_metrics(tmp_path / "run") if "train/loss" in m]
    assert len(losses) == 2 and all(np.isfinite(losses))
    with pytest.raises(ValueError, match="unknown corpus 'hdtf2'"):
        base_config.load_config_file(base_config.config_path("real_corpus"), "hdtf2")


def test_speech_encoder_features_are_added_to_a_prepared_dataset(prepared, tmp_path):
    """`mirrortalk features` copies a prepared dataset with its real-face fields and basis, adding HuBERT features
    (the tiny HuBERT fixture, converted)."""
    from tools import convert_hf_audio

    root = Path(__file__).resolve().parents[1]
    assert convert_hf_audio.main(["--hf_dir", str(root / "tests" / "fixtures" / "hubert_tiny"),
                                  "--out", str(tmp_path / "hubert")]) == 0
    out = tmp_path / "with_features"
    assert cli.main(["features", str(tmp_path / "hubert"), str(prepared[0]), "--out", str(out)]) == 0
    source, copy = sources.ClipSource(prepared[0], "train")[0], sources.ClipSource(out, "train")[0]
    assert copy["audio_features"].shape[0] == len(copy["motion"]) == len(source["motion"])
    for key in ("motion", "mesh_3d", "blendshapes", "identity", "landmarks_2d"):
        np.testing.assert_array_equal(copy[key], source[key])
    info = sources.load_info(out)
    assert info.metadata["motion_basis"] == sources.load_info(prepared[0]).metadata["motion_basis"]


def test_bad_command_arguments_fail_clearly_and_never_replace_a_users_folder(good_video, tmp_path, capsys):
    mine = tmp_path / "my_notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    base = ["data", "prepare", str(good_video), "--runner", "local"]
    assert cli.main(base + ["--out", str(mine)]) == 2
    assert "holds other files" in capsys.readouterr().out and (mine / "thesis.tex").exists()
    (tmp_path / "a_file").write_text("x")
    assert cli.main(base + ["--out", str(tmp_path / "a_file")]) == 2
    assert "is a file" in capsys.readouterr().out
    for flags, words in ((["--image_size", "0"], "image_size must be at least 16"),
                         (["--min_seconds", "5", "--max_seconds", "2"], "min_seconds <= max_seconds"),
                         (["--workers", "0"], "workers must be at least 1")):
        assert cli.main(base + ["--out", str(tmp_path / "new")] + flags) == 2
        assert words in capsys.readouterr().out
    assert not (tmp_path / "new").exists()


def test_renderers_train_and_score_on_a_prepared_real_clip(prepared, tmp_path):
    """Our renderer reads the real-face motion space unchanged (real_corpus.py's renderer stage), and the
    self-reenactment scores run on the real clip with landmarks re-tracked by the prepare pipeline's tracker."""
    from mirrortalk_jax import base_config
    from mirrortalk_jax.data.sources import ClipSource
    from mirrortalk_jax.evaluate import landmark_detectors, renderer_quality
    from mirrortalk_jax.runs import loader
    from mirrortalk_jax.train import trainer

    config = base_config.load_config_file(base_config.config_path("real_corpus"), "hdtf,renderer,tiny")
    config.data.dataset_dir, config.data.eval_split = str(prepared[0]), "train"
    config.train.update(dict(num_steps=1, batch_size=8, log_every=1, eval_every=0, checkpoint_every=1000,
                             warmup_steps=1))
    trainer.train_and_evaluate(config, tmp_path / "run")
    run = loader.load_model(tmp_path / "run")
    assert run.spec.dim == 29 and run.model.motion_dim == 29  # the prepared mesh space, not SynthTalk's 18
    source = ClipSource(prepared[0], "train")
    settings = renderer_quality.Settings(max_clips=1, max_frames=8, batch_size=8)
    with landmark_detectors.MeshLandmarkDetector() as detector:
        ours = renderer_quality.evaluate(run.model, source, settings, detector=detector)
        copy = renderer_quality.evaluate(renderer_quality.PortraitCopy(), source, settings, detector=detector)
    assert ours["frames"] == copy["frames"] == 8 and ours["clips"] == 1
    assert 0.0 < ours["ssim"] < 1.0 and np.isfinite(ours["psnr"])
    # The real frames roll the head: the unmoved portrait is tracked in every frame and its landmarks are off.
    assert copy["landmark_frames"] == 1.0 and copy["f_lmd"] > 0.5
    assert 0.0 < copy["ssim"] < 1.0


class _Oracle:
    """The renderer interface drawing, for each driving motion, the clip's real frame of that motion."""

    def __init__(self, frames: np.ndarray, motion: np.ndarray):
        self.frames, self.motion = frames, motion

    def driving(self, motion, start=0, stop=None):
        return np.asarray(motion)[start:stop]

    def render_frames(self, source_image, source_motion, driving):
        index = np.argmin(np.abs(np.asarray(driving)[:, None] - self.motion[None]).sum(-1), axis=1)
        return self.frames[index].astype(np.float32) / 127.5 - 1.0


def test_renderer_scores_include_identity_re_tracked_expression_and_pose_and_fid(prepared):
    """CSIM, AED / APD (motion re-tracked from rendered and real frames with the dataset's basis) and FID: zero
    distance for the real frames themselves, a pose error for the unmoved portrait of a rolling head."""
    from mirrortalk_jax.data import schema
    from mirrortalk_jax.data.faces.identity import IdentityEmbedder
    from mirrortalk_jax.data.prepare import motion_space
    from mirrortalk_jax.data.sources import ClipSource
    from mirrortalk_jax.evaluate import fid, landmark_detectors, renderer_quality

    source = ClipSource(prepared[0], "train")
    record = source[0]
    oracle = _Oracle(schema.decode_frames(record["frames"]), np.asarray(record["motion"], np.float32))
    basis = motion_space.MeshBasis.from_json(source.info.metadata["motion_basis"])
    settings = renderer_quality.Settings(max_clips=1, max_frames=10, batch_size=8, identity_stride=3)
    with landmark_detectors.MeshLandmarkDetector() as detector:
        scores = {name: renderer_quality.evaluate(r, source, settings, detector=detector, identity=IdentityEmbedder(),
                                                  basis=basis, fid_features=fid.PixelProjection())
                  for name, r in (("real", oracle), ("copy", renderer_quality.PortraitCopy()))}
        with pytest.raises(ValueError, match="need a landmark detector"):
            renderer_quality.evaluate(oracle, source, settings, basis=basis)
    real, copy = scores["real"], scores["copy"]
    assert real["csim"] == pytest.approx(1.0, abs=1e-5) and real["aed"] == real["apd"] == 0.0
    assert real["fid"] == pytest.approx(0.0, abs=1e-6) and real["psnr"] == 100.0
    assert copy["apd"] > 0.01 and copy["aed"] > 0.0 and copy["fid"] > 1e-4 and 0.9 < copy["csim"] < 1.0
