"""Round-trip tests for mirrortalk_jax.data.video (H.264 + AAC mp4 via PyAV)."""

import os

import numpy as np
import pytest

from mirrortalk_jax.data import video

SR = 16000


def _gradient_frames(t: int, h: int, w: int) -> np.ndarray:
    """Smooth RGB gradients that drift across frames, (t, h, w, 3) uint8."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = []
    for i in range(t):
        r = 255 * (xx + 2 * i) / (w + 2 * t)
        g = 255 * yy / h
        b = 255 * (0.5 + 0.4 * np.sin((xx + yy) / (w + h) * np.pi + i / t))
        frames.append(np.stack([r, g, b], axis=-1))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def _sine(freq: float, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _dominant_hz(audio: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / sr)[np.argmax(spec)])


def test_round_trip_video_and_audio(tmp_path):
    frames = _gradient_frames(30, 64, 96)
    audio = _sine(440.0, 1.2)
    path = tmp_path / "clip.mp4"
    video.write_mp4(path, frames, fps=25.0, audio=audio, sample_rate=SR)

    clip = video.read_mp4(path)
    assert clip.frames.shape == (30, 64, 96, 3) and clip.frames.dtype == np.uint8
    assert clip.fps == 25.0
    mae = np.abs(clip.frames.astype(np.float64) - frames).mean()
    assert mae < 8.0, f"mean abs pixel error {mae:.2f}"
    # Frame order survives (B-frames reorder packets, not frames): each frame matches its own source best.
    errs = np.abs(clip.frames[:, None].astype(np.float64) - frames[None]).mean(axis=(2, 3, 4))
    np.testing.assert_array_equal(errs.argmin(axis=1), np.arange(30))

    assert clip.sample_rate == SR and clip.audio.dtype == np.float32 and clip.audio.ndim == 1
    assert abs(len(clip.audio) / SR - 1.2) <= 0.07
    assert abs(_dominant_hz(clip.audio, SR) - 440.0) < 5.0
    assert 0.4 < np.abs(clip.audio).max() < 0.6


def test_frames_streamed_in_batches_give_the_same_file(tmp_path):
    """A generator of batches (how long renders are written) encodes exactly what the whole array does."""
    frames, audio = _gradient_frames(23, 32, 48), _sine(330.0, 1.0)
    # Lossless (crf 0): libx264 here does not repeat its lossy bitstream from run to run (measured: same input, 10
    # of 20 runs identical, one thread too), but every lossless encode decodes to the same pixels.
    video.write_mp4(tmp_path / "whole.mp4", frames, fps=25.0, audio=audio, sample_rate=SR, crf=0)
    video.write_mp4(tmp_path / "stream.mp4", (frames[i:i + 5] for i in range(0, 23, 5)), fps=25.0, audio=audio,
                    sample_rate=SR, crf=0)
    whole, stream = video.read_mp4(tmp_path / "whole.mp4"), video.read_mp4(tmp_path / "stream.mp4")
    np.testing.assert_array_equal(stream.frames, whole.frames)
    np.testing.assert_array_equal(stream.audio, whole.audio)
    with pytest.raises(ValueError, match="size"):
        video.write_mp4(tmp_path / "mixed.mp4", iter([frames[:2], frames[:2, :16]]), fps=25.0)
    with pytest.raises(ValueError, match="non-empty"):
        video.write_mp4(tmp_path / "none.mp4", iter([]), fps=25.0)
    assert not (tmp_path / "mixed.mp4").exists() and not list(tmp_path.glob(".*.tmp.mp4"))


def test_audio_is_not_delayed(tmp_path):
    # Silence then a tone: the onset must stay where it was (AAC priming samples must not leak in as a delay).
    audio = np.concatenate([np.zeros(int(0.5 * SR), np.float32), _sine(1000.0, 0.5)])
    path = tmp_path / "onset.mp4"
    video.write_mp4(path, _gradient_frames(25, 32, 32), fps=25.0, audio=audio)
    out = video.read_mp4(path).audio
    onset = int(np.argmax(np.abs(out) > 0.25))
    assert abs(onset - int(0.5 * SR)) < 0.005 * SR, f"onset at sample {onset}, expected ~{int(0.5 * SR)}"


def test_silent_video_and_fractional_fps(tmp_path):
    path = tmp_path / "silent.mp4"
    video.write_mp4(path, _gradient_frames(12, 32, 48), fps=29.97)
    clip = video.read_mp4(path)
    assert clip.audio is None and clip.sample_rate is None
    assert clip.frames.shape == (12, 32, 48, 3)
    assert abs(clip.fps - 29.97) < 1e-3


def test_odd_sizes_are_padded(tmp_path):
    frames = _gradient_frames(5, 33, 47)
    path = tmp_path / "odd.mp4"
    video.write_mp4(path, frames, fps=25.0)
    clip = video.read_mp4(path)
    assert clip.frames.shape == (5, 34, 48, 3)
    assert np.abs(clip.frames[:, :33, :47].astype(np.float64) - frames).mean() < 8.0


def test_overwrite_is_atomic_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "out.mp4"
    video.write_mp4(path, _gradient_frames(3, 16, 16), fps=25.0, audio=_sine(300.0, 0.1))
    video.write_mp4(path, _gradient_frames(7, 16, 16), fps=25.0)
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"]
    assert video.read_mp4(path).num_frames == 7


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match="uint8"):
        video.write_mp4(path, np.zeros((2, 16, 16, 3), np.float32), fps=25.0)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        video.write_mp4(path, np.zeros((2, 16, 16), np.uint8), fps=25.0)
    with pytest.raises(ValueError, match="fps"):
        video.write_mp4(path, np.zeros((2, 16, 16, 3), np.uint8), fps=0.0)
    with pytest.raises(ValueError, match="finite"):
        video.write_mp4(path, np.zeros((2, 16, 16, 3), np.uint8), fps=25.0, audio=np.full(100, np.nan, np.float32))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        video.write_mp4(tmp_path / "no_dir" / "x.mp4", np.zeros((2, 16, 16, 3), np.uint8), fps=25.0)
    assert os.listdir(tmp_path) == []


def test_missing_file_raises_file_not_found(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        video.read_mp4(missing)


def test_corrupt_file_raises_media_error(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(video.MediaError, match="junk.mp4.*not a readable mp4"):
        video.read_mp4(junk)
    assert issubclass(video.MediaError, ValueError)


def test_truncated_file_raises_media_error(tmp_path):
    path = tmp_path / "full.mp4"
    video.write_mp4(path, _gradient_frames(10, 32, 32), fps=25.0, audio=_sine(440.0, 0.4))
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(video.MediaError, match="cut.mp4"):
        video.read_mp4(cut)
