"""Tests for mirrortalk_jax.data.audio_features against slow, loop-based references."""

import math

import numpy as np
import pytest
import scipy.fft
import scipy.signal

from mirrortalk_jax.data import audio_features as af

CFG = af.MelConfig()


def _noise(n: int, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


# ---- slow references -------------------------------------------------------------------------------------------


def _ref_stft_power(audio: np.ndarray, cfg: af.MelConfig) -> np.ndarray:
    x = audio.astype(np.float64)
    pad = cfg.n_fft // 2
    # Reflect padding written out by hand: mirror around the first/last sample, excluding it.
    padded = np.concatenate([x[pad:0:-1], x, x[-2:-pad - 2:-1]])
    win = np.zeros(cfg.n_fft)
    left = (cfg.n_fft - cfg.win_length) // 2
    win[left:left + cfg.win_length] = scipy.signal.get_window("hann", cfg.win_length, fftbins=True)
    rows = []
    for i in range(1 + len(x) // cfg.hop_length):
        start = i * cfg.hop_length  # frame i spans padded[start : start + n_fft], centred on sample i*hop
        spec = np.fft.rfft(padded[start:start + cfg.n_fft] * win)
        rows.append(np.abs(spec) ** 2)
    return np.stack(rows)


def _slaney_hz_to_mel(f: float) -> float:
    return f / (200 / 3) if f < 1000 else 15.0 + 27.0 * math.log(f / 1000) / math.log(6.4)


def _slaney_mel_to_hz(m: float) -> float:
    return m * (200 / 3) if m < 15.0 else 1000 * math.exp((m - 15.0) * math.log(6.4) / 27.0)


def _ref_centers(cfg: af.MelConfig) -> np.ndarray:
    lo, hi = _slaney_hz_to_mel(cfg.fmin), _slaney_hz_to_mel(cfg.fmax)
    return np.array([_slaney_mel_to_hz(lo + (hi - lo) * j / (cfg.n_mels + 1)) for j in range(cfg.n_mels + 2)])


def _ref_filterbank(cfg: af.MelConfig) -> np.ndarray:
    edges = _ref_centers(cfg)
    fb = np.zeros((cfg.n_fft // 2 + 1, cfg.n_mels))
    for b in range(cfg.n_fft // 2 + 1):
        f = b * cfg.sample_rate / cfg.n_fft
        for m in range(cfg.n_mels):
            lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
            if lo < f <= c:
                w = (f - lo) / (c - lo)
            elif c < f < hi:
                w = (hi - f) / (hi - c)
            else:
                w = 0.0
            fb[b, m] = w * 2.0 / (hi - lo)
    return fb


# ---- spectral features -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [16000, 12345, 300])
def test_stft_power_matches_loop_reference(n):
    audio = _noise(n)
    got = af.stft_power(audio, CFG)
    ref = _ref_stft_power(audio, CFG)
    assert got.dtype == np.float32
    assert got.shape == ref.shape == (1 + n // 160, 257)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 * ref.max())


def test_frame_count_and_centering():
    for n in (257, 1599, 1600, 1601, 16000, 16159, 16160):
        assert af.stft_power(_noise(n), CFG).shape[0] == 1 + n // 160 == af.num_feature_frames(n, CFG)
    # An impulse at sample 10*hop is centred in frame 10, so frame 10 has the most energy.
    audio = np.zeros(8000, np.float32)
    audio[1600] = 1.0
    energy = af.stft_power(audio, CFG).sum(axis=1)
    assert int(np.argmax(energy)) == 10
    np.testing.assert_allclose(energy[9], energy[11], rtol=1e-4)  # symmetric window around the centre


def test_mel_filterbank_matches_reference():
    fb = af.mel_filterbank(CFG)
    assert fb.shape == (257, 80) and fb.dtype == np.float32
    np.testing.assert_allclose(fb, _ref_filterbank(CFG), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(af.mel_centers(CFG), _ref_centers(CFG)[1:-1], rtol=1e-9)
    assert np.all(fb.sum(axis=0) > 0), "every mel band must cover at least one FFT bin"


def test_log_mel_and_mfcc_match_reference():
    audio = _noise(8000, seed=1)
    audio[4000:] = 0.0  # digital silence exercises the log floor
    mel_ref = np.log(np.maximum(_ref_stft_power(audio, CFG) @ _ref_filterbank(CFG), 1e-5))
    got = af.log_mel(audio, CFG)
    assert got.shape == (51, 80) and got.dtype == np.float32
    np.testing.assert_allclose(got, mel_ref, atol=2e-3)
    assert np.isclose(got.min(), np.log(1e-5), atol=1e-4), "silence should sit exactly on the log floor"

    mfcc_ref = np.stack([scipy.fft.dct(row, type=2, norm="ortho")[:13] for row in mel_ref])
    got_mfcc = af.mfcc(audio, CFG, n_mfcc=13)
    assert got_mfcc.shape == (51, 13)
    np.testing.assert_allclose(got_mfcc, mfcc_ref, atol=2e-2)


def test_sine_peaks_in_nearest_mel_band():
    t = np.arange(16000) / 16000
    audio = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    mel = af.log_mel(audio, CFG)
    expected = int(np.argmin(np.abs(_ref_centers(CFG)[1:-1] - 1000.0)))
    assert int(np.argmax(mel[5:-5].mean(axis=0))) == expected


# ---- video alignment -------------------------------------------------------------------------------------------


def test_features_per_video_frame_indices():
    feats = np.arange(41, dtype=np.float32)[:, None] * np.array([1.0, -1.0], np.float32)  # (41, 2)
    out = af.features_per_video_frame(feats, num_frames=10, fps=25.0, feature_rate=100.0)
    assert out.shape == (10, 4, 2)
    for t in range(10):
        np.testing.assert_array_equal(out[t, :, 0], [4 * t, 4 * t + 1, 4 * t + 2, 4 * t + 3])
        np.testing.assert_array_equal(out[t, :, 1], -out[t, :, 0])


def test_features_per_video_frame_pads_by_repeating_last():
    feats = np.arange(38, dtype=np.float32)[:, None]
    out = af.features_per_video_frame(feats, num_frames=10)
    np.testing.assert_array_equal(out[9, :, 0], [36, 37, 37, 37])
    af.features_per_video_frame(feats, num_frames=10, max_pad=2)
    with pytest.raises(ValueError, match="max_pad"):
        af.features_per_video_frame(feats, num_frames=10, max_pad=1)


def test_features_per_video_frame_rejects_non_integer_ratio():
    with pytest.raises(ValueError, match="integer"):
        af.features_per_video_frame(np.zeros((100, 3)), num_frames=5, fps=30.0, feature_rate=100.0)
    with pytest.raises(ValueError, match=r"\(F, C\)"):
        af.features_per_video_frame(np.zeros(100), num_frames=5)


def test_audio_frame_features_shapes_and_layout():
    audio = _noise(16000 * 2)  # 2 s -> 50 video frames at 25 fps
    lm = af.audio_frame_features(audio, num_frames=50, kind="log_mel")
    assert lm.shape == (50, 4 * 80) and lm.dtype == np.float32
    full = af.log_mel(audio, CFG)
    np.testing.assert_array_equal(lm[7].reshape(4, 80), full[28:32])
    mf = af.audio_frame_features(audio, num_frames=50, kind="mfcc", n_mfcc=13)
    assert mf.shape == (50, 4 * 13)
    with pytest.raises(ValueError, match="kind"):
        af.audio_frame_features(audio, num_frames=50, kind="wav2vec")


# ---- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "audio, match",
    [
        (np.zeros((2, 1000), np.float32), "1-D"),
        (np.zeros(1000, np.int16), "floating-point"),
        (np.array([0.0, np.nan] * 500, np.float32), "finite"),
        (np.array([0.0, np.inf] * 500, np.float32), "finite"),
        (np.zeros(100, np.float32), "reflect padding"),
        ([0.0] * 1000, "numpy array"),
    ],
)
def test_bad_audio_raises(audio, match):
    with pytest.raises(ValueError, match=match):
        af.log_mel(audio, CFG)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="fmax"):
        af.MelConfig(fmax=9000.0)
    with pytest.raises(ValueError, match="win_length"):
        af.MelConfig(win_length=1024)
    with pytest.raises(ValueError, match="n_mfcc"):
        af.mfcc(_noise(1000), CFG, n_mfcc=81)
