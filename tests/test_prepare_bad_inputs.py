"""A corpus of bad and unusual files, made here from a real photo and espeak speech, through one `data prepare`
run: each file gets its status and a reason in words, the batch never stops, the good files still come out."""

import json
import os

import numpy as np
import pytest

from mirrortalk_jax.data import sources
from mirrortalk_jax.data.prepare import builders, dataset
from tests import real_videos

SETTINGS = dataset.PrepareSettings(options=dataset.clips.Options(image_size=96, min_seconds=0.8), runner="local")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """{name: (path, expected status, expected words in the reason)}."""
    root = tmp_path_factory.mktemp("corpus")
    speech = real_videos.sentence()[:round(1.6 * 16000)]
    files = {}

    def add(name, status, words, path=None):
        files[name] = (path or root / name, status, words)

    good = real_videos.talking_video(root / "good.mp4", seconds=1.6, size=192)
    add("good.mp4", "ok", "ok", good)
    (root / "empty.mp4").write_bytes(b"")
    add("empty.mp4", "rejected", "empty file (0 bytes)")
    (root / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes())
    add("random.mp4", "rejected", "not a readable mp4")
    (root / "text.mp4").write_text("this is not a video\n")
    add("text.mp4", "rejected", "not a readable mp4")
    data = good.read_bytes()  # written with its index first: a cut file keeps what comes before the cut
    (root / "truncated.mp4").write_bytes(data[:int(len(data) * 0.85)])
    add("truncated.mp4", "partial", "truncated at")
    plain = real_videos.encode(root / "plain.mp4", real_videos.frames(40, 160), audio=speech)
    data = plain.read_bytes()  # the index at the end of the file
    (root / "moov_missing.mp4").write_bytes(data[:len(data) // 2])
    plain.unlink()
    add("moov_missing.mp4", "rejected", "not a readable mp4")
    mkv = real_videos.encode(root / "full.mkv", real_videos.frames(50, 160), audio=speech[:32000])
    cut = mkv.read_bytes()
    (root / "truncated.mkv").write_bytes(cut[:int(len(cut) * 0.6)])
    mkv.unlink()
    add("truncated.mkv", "partial", "truncated at")
    real_videos.encode(root / "audio_only.mp4", None, audio=speech)
    add("audio_only.mp4", "rejected", "no video stream")
    real_videos.encode(root / "tiny_face.mp4", real_videos.frames(40, 160, face_scale=0.2), audio=speech)
    add("tiny_face.mp4", "rejected", "no face detected")
    real_videos.encode(root / "stereo_48k.mp4", real_videos.frames(40, 160), audio=speech, stereo_48k=True)
    add("stereo_48k.mp4", "ok", "ok")
    real_videos.encode(root / "no_audio.mp4", real_videos.frames(40, 160))
    add("no_audio.mp4", "rejected", "no audio stream")
    noise = np.random.default_rng(1).integers(0, 256, (40, 160, 160, 3), np.uint8)
    real_videos.encode(root / "no_face.mp4", noise, audio=speech)
    add("no_face.mp4", "rejected", "no face detected")
    real_videos.encode(root / "dark.mp4", real_videos.frames(40, 160, brightness=0.04), audio=speech)
    add("dark.mp4", "rejected", "too dark")
    real_videos.encode(root / "two faces.mp4", real_videos.frames(40, 256, second_face=True), audio=speech)
    add("two faces.mp4", "ok", "2 faces, kept the largest track")
    real_videos.encode(root / "cut_off.mp4", real_videos.frames(40, 160, shift=(-60, 0)), audio=speech)
    add("cut_off.mp4", "ok", "face partly outside the frame (cut off)")
    real_videos.encode(root / "two_frames.mp4", real_videos.frames(2, 160), audio=speech[:1280])
    add("two_frames.mp4", "rejected", "no face segment of at least 0.8 s")
    real_videos.encode(root / "one_fps.mp4", real_videos.frames(3, 160), fps=1, audio=np.tile(speech, 2)[:48000])
    add("one_fps.mp4", "ok", "ok")
    real_videos.encode(root / "fast_120fps.mp4", real_videos.frames(150, 160), fps=120, audio=speech[:20000])
    add("fast_120fps.mp4", "ok", "ok")
    real_videos.encode(root / "odd_size.mp4", real_videos.frames(40, 162)[:, :161, :157], audio=speech,
                       pix_fmt="yuv444p")
    add("odd_size.mp4", "ok", "ok")
    stored_sideways = np.ascontiguousarray(np.rot90(real_videos.frames(40, 160), k=-1, axes=(1, 2)))
    real_videos.encode(root / "rotated.mp4", stored_sideways, audio=speech, rotation=90)
    add("rotated.mp4", "ok", "ok")
    real_videos.encode(root / "hevc_10bit.mkv", real_videos.frames(40, 160), codec="libx265",
                       pix_fmt="yuv420p10le", audio=speech)
    add("hevc_10bit.mkv", "ok", "ok")
    gaps = np.random.default_rng(2).uniform(0.02, 0.07, 40)
    times = np.concatenate([[0.0], np.cumsum(gaps[:-1])]) * 1.5 / gaps[:-1].sum()  # 0 .. 1.5 s, irregular
    real_videos.encode(root / "variable_rate.mp4", real_videos.frames(40, 160), audio=speech, times=times)
    add("variable_rate.mp4", "ok", "ok")
    real_videos.encode(root / "short_audio.mp4", real_videos.frames(40, 160), audio=speech[:20000])
    add("short_audio.mp4", "partial", "cut to the common span")
    for odd in ("-leading dash.mp4", "semi;colon $(rm) & 'q'.mp4", "ünïcödé 名前.mp4", "x" * 180 + ".mp4"):
        os.symlink(good, root / odd)
        add(odd, "ok", "ok")
    os.symlink(root / "loop.mp4", root / "loop.mp4")
    add("loop.mp4", "rejected", "symlink loop")
    (root / "folder.mp4").mkdir()  # a folder named like a video: searched, holds nothing
    return root, files


@pytest.fixture(scope="module")
def report(corpus, tmp_path_factory):
    root, _ = corpus
    out = tmp_path_factory.mktemp("bad") / "ds"
    return builders.prepare([str(root)], out, SETTINGS, log=lambda line: None), out


def test_every_bad_file_gets_a_reason_and_the_good_ones_come_out(corpus, report):
    _, files = corpus
    result, out = report
    entries = {os.path.basename(e["file"]): e for e in result["entries"]}
    assert set(entries) == set(files)
    for name, (_, status, words) in files.items():
        entry = entries[name]
        assert entry["status"] == status and words in entry["reason"], (name, entry)
        assert "Traceback" not in entry["reason"]
    ok = [name for name, (_, status, _) in files.items() if status != "rejected"]
    total = sum(len(sources.ClipSource(out, split)) for split in sources.load_info(out).splits)
    assert total == sum(entries[name]["clips"] for name in ok) >= len(ok)
    saved = json.loads((out / builders.REPORT_FILE).read_text())
    assert saved["counts"] == result["counts"]


def test_resampled_rotated_and_unusual_encodings_keep_their_timing(report):
    result, _ = report
    entries = {os.path.basename(e["file"]): e for e in result["entries"]}
    assert entries["one_fps.mp4"]["seconds_kept"] == pytest.approx(3.0, abs=0.05)  # 1 fps -> 75 frames
    assert entries["fast_120fps.mp4"]["seconds_kept"] == pytest.approx(1.25, abs=0.05)
    assert entries["rotated.mp4"]["qc"]["face_px"] > 40  # found upright: the display matrix was applied
    assert entries["truncated.mkv"]["seconds_kept"] < 2.0
    assert entries["stereo_48k.mp4"]["seconds_kept"] == pytest.approx(1.6, abs=0.05)  # downmixed, resampled
