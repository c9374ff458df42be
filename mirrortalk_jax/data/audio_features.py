"""Audio frontends (STFT power, log-mel, MFCC) and their alignment to video frames.

All functions take 16 kHz mono floating-point audio in [-1, 1] as a 1-D numpy array and are vectorised over
frames (no Python loop per frame), so they are cheap enough to run inside Grain data pipelines.

Conventions (shared by every function here, so audio lines up with 25 fps motion without off-by-one drift):

* Frames are centred: the signal is reflect-padded by n_fft // 2 on both sides, so feature frame i is centred
  at sample i * hop_length, i.e. at time i / feature_rate seconds. A clip of N samples gives
  1 + N // hop_length feature frames (100 per second with the default 10 ms hop).
* Mel scale: Slaney (as in librosa's default and the Auditory Toolbox): linear below 1 kHz, logarithmic
  above. Filters are triangles in Hz between mel-spaced edges, area-normalised (2 / bandwidth) so that wide
  high-frequency bands do not dominate.
* Log: natural log of the mel power with a floor, log(max(x, LOG_FLOOR)), LOG_FLOOR = 1e-5, so digital
  silence maps to a finite value (about -11.5) instead of -inf.
* Video alignment: video frame t at `fps` covers the half-open interval [t / fps, (t + 1) / fps). A feature
  frame belongs to the video frame whose interval contains its centre. With 100 Hz features and 25 fps that is
  feature frames 4t .. 4t+3 for video frame t.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.fft

# Floor applied before the log so silence gives a finite feature (log(1e-5) ~ -11.5).
LOG_FLOOR = 1e-5


@dataclasses.dataclass(frozen=True)
class MelConfig:
    """Parameters of the STFT / mel frontend.

    Attributes:
      sample_rate: audio sample rate in Hz (the models expect 16 kHz).
      n_fft: FFT size; the spectrum has n_fft // 2 + 1 bins.
      win_length: Hann window length in samples (400 = 25 ms), zero-padded to n_fft and centred in the frame.
      hop_length: hop between frames in samples (160 = 10 ms, i.e. 100 feature frames per second).
      n_mels: number of mel bands.
      fmin: lowest mel-filter edge in Hz.
      fmax: highest mel-filter edge in Hz (must not exceed sample_rate / 2).
    """

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0

    def __post_init__(self):
        if self.sample_rate <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ValueError(f"MelConfig: sample_rate, hop_length and n_mels must be positive, got {self}")
        if not 0 < self.win_length <= self.n_fft:
            raise ValueError(
                f"MelConfig: expected 0 < win_length <= n_fft, got win_length={self.win_length}, n_fft={self.n_fft}"
            )
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(
                f"MelConfig: expected 0 <= fmin < fmax <= sample_rate / 2 = {self.sample_rate / 2}, "
                f"got fmin={self.fmin}, fmax={self.fmax}"
            )

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def feature_rate(self) -> float:
        """Feature frames per second (sample_rate / hop_length)."""
        return self.sample_rate / self.hop_length


DEFAULT_MEL_CONFIG = MelConfig()


def validate_audio(audio: np.ndarray, name: str = "audio") -> np.ndarray:
    """Checks that `audio` is finite 1-D floating-point audio; returns it as (N,) float32."""
    if not isinstance(audio, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(audio).__name__}")
    if audio.ndim != 1:
        raise ValueError(f"{name}: expected mono 1-D audio of shape (N,), got shape {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(
            f"{name}: expected floating-point audio in [-1, 1] (float32), got dtype {audio.dtype}; "
            "scale integer PCM first (e.g. int16 / 32768)"
        )
    if not np.all(np.isfinite(audio)):
        raise ValueError(f"{name}: expected finite samples, found NaN or inf")
    return audio.astype(np.float32, copy=False)


# Slaney mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above.
_MEL_F_SP = 200.0 / 3.0
_MEL_MIN_LOG_HZ = 1000.0
_MEL_MIN_LOG_MEL = _MEL_MIN_LOG_HZ / _MEL_F_SP
_MEL_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale (see the constants above)."""
    hz = np.asarray(hz, np.float64)
    return np.where(hz >= _MEL_MIN_LOG_HZ,
                    _MEL_MIN_LOG_MEL + np.log(np.maximum(hz, _MEL_MIN_LOG_HZ) / _MEL_MIN_LOG_HZ) / _MEL_LOGSTEP,
                    hz / _MEL_F_SP)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of `_hz_to_mel`."""
    mel = np.asarray(mel, np.float64)
    return np.where(mel >= _MEL_MIN_LOG_MEL, _MEL_MIN_LOG_HZ * np.exp(_MEL_LOGSTEP * (mel - _MEL_MIN_LOG_MEL)),
                    mel * _MEL_F_SP)


def mel_band_edges(cfg: MelConfig = DEFAULT_MEL_CONFIG) -> np.ndarray:
    """Mel-spaced filter edges in Hz. Shape (n_mels + 2,), float64; band m peaks at edges[m + 1]."""
    mels = np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.n_mels + 2)
    return _mel_to_hz(mels)


def mel_centers(cfg: MelConfig = DEFAULT_MEL_CONFIG) -> np.ndarray:
    """Centre (peak) frequency in Hz of each mel band. Shape (n_mels,), float64."""
    return mel_band_edges(cfg)[1:-1]


def mel_filterbank(cfg: MelConfig = DEFAULT_MEL_CONFIG) -> np.ndarray:
    """Slaney-style triangular mel filterbank.

    Returns:
      (n_fft // 2 + 1, n_mels) float32; `power @ fb` maps (F, n_freqs) power to (F, n_mels) mel power.
    """
    fft_freqs = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_freqs)
    edges = mel_band_edges(cfg)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    # Triangles are defined in Hz (not in mel) between neighbouring edges: rising then falling ramps.
    rising = (fft_freqs[:, None] - lower[None]) / (center - lower)[None]
    falling = (upper[None] - fft_freqs[:, None]) / (upper - center)[None]
    fb = np.maximum(0.0, np.minimum(rising, falling))
    # Area normalisation keeps the energy per band comparable across narrow and wide bands.
    fb *= (2.0 / (upper - lower))[None]
    return fb.astype(np.float32)


def _window(cfg: MelConfig) -> np.ndarray:
    """Periodic Hann window of win_length, zero-padded symmetrically to n_fft. Shape (n_fft,), float32."""
    n = np.arange(cfg.win_length)
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / cfg.win_length)
    left = (cfg.n_fft - cfg.win_length) // 2
    out = np.zeros(cfg.n_fft, np.float64)
    out[left:left + cfg.win_length] = hann
    return out.astype(np.float32)


def num_feature_frames(num_samples: int, cfg: MelConfig = DEFAULT_MEL_CONFIG) -> int:
    """Feature frames produced for `num_samples` samples: 1 + num_samples // hop_length."""
    return 1 + num_samples // cfg.hop_length


def stft_power(audio: np.ndarray, cfg: MelConfig = DEFAULT_MEL_CONFIG) -> np.ndarray:
    """Power spectrogram |STFT|^2 with centred, reflect-padded frames.

    Args:
      audio: (N,) floating mono audio at cfg.sample_rate, N > n_fft // 2 (reflect padding needs it).
      cfg: frontend parameters.

    Returns:
      (F, n_fft // 2 + 1) float32 with F = 1 + N // hop_length; row i is centred at sample i * hop_length.
    """
    audio = validate_audio(audio)
    pad = cfg.n_fft // 2
    if audio.shape[0] <= pad:
        raise ValueError(
            f"audio: expected more than n_fft // 2 = {pad} samples for reflect padding, got {audio.shape[0]}"
        )
    padded = np.pad(audio, pad, mode="reflect")
    num_frames = num_feature_frames(audio.shape[0], cfg)
    # Strided view: (F, n_fft) without copying, then one batched FFT.
    frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft)[::cfg.hop_length][:num_frames]
    spec = scipy.fft.rfft(frames * _window(cfg)[None], axis=-1)
    return (spec.real**2 + spec.imag**2).astype(np.float32)


def log_mel(audio: np.ndarray, cfg: MelConfig = DEFAULT_MEL_CONFIG) -> np.ndarray:
    """Log mel spectrogram, log(max(mel_power, LOG_FLOOR)).

    Args:
      audio: (N,) floating mono audio at cfg.sample_rate.
      cfg: frontend parameters.

    Returns:
      (F, n_mels) float32, F = 1 + N // hop_length.
    """
    mel = stft_power(audio, cfg) @ mel_filterbank(cfg)
    return np.log(np.maximum(mel, LOG_FLOOR)).astype(np.float32)


def mfcc(audio: np.ndarray, cfg: MelConfig = DEFAULT_MEL_CONFIG, n_mfcc: int = 13) -> np.ndarray:
    """MFCCs: orthonormal DCT-II of the log mel spectrogram, first `n_mfcc` coefficients.

    Args:
      audio: (N,) floating mono audio at cfg.sample_rate.
      cfg: frontend parameters.
      n_mfcc: number of cepstral coefficients kept, 1 <= n_mfcc <= n_mels.

    Returns:
      (F, n_mfcc) float32, F = 1 + N // hop_length.
    """
    if not 1 <= n_mfcc <= cfg.n_mels:
        raise ValueError(f"mfcc: expected 1 <= n_mfcc <= n_mels = {cfg.n_mels}, got n_mfcc={n_mfcc}")
    cepstra = scipy.fft.dct(log_mel(audio, cfg), type=2, norm="ortho", axis=-1)
    return cepstra[:, :n_mfcc].astype(np.float32)


def frames_per_video_frame(fps: float, feature_rate: float) -> int:
    """k = feature_rate / fps; raises ValueError unless it is a positive integer (e.g. 100 / 25 = 4)."""
    if fps <= 0 or feature_rate <= 0:
        raise ValueError(f"expected positive fps and feature_rate, got fps={fps}, feature_rate={feature_rate}")
    ratio = feature_rate / fps
    k = int(round(ratio))
    if k < 1 or abs(ratio - k) > 1e-6:
        raise ValueError(
            f"feature_rate / fps must be a positive integer so video frames get whole feature frames, "
            f"got feature_rate={feature_rate} / fps={fps} = {ratio}"
        )
    return k


def features_per_video_frame(
    feats: np.ndarray,
    num_frames: int,
    fps: float = 25.0,
    feature_rate: float = 100.0,
    max_pad: int | None = None,
) -> np.ndarray:
    """Groups feature frames by the video frame whose interval [t/fps, (t+1)/fps) contains their centre.

    Video frame t gets feature frames k*t .. k*t + k-1 with k = feature_rate / fps. Extra trailing feature
    frames are dropped. If audio is short, the missing feature frames are filled by repeating the last one
    (edge padding, so the model sees the final sound rather than artificial silence).

    Args:
      feats: (F, C) features at `feature_rate` Hz, frame i centred at i / feature_rate seconds.
      num_frames: number of video frames T.
      fps: video frame rate.
      feature_rate: feature frames per second.
      max_pad: if set, raise ValueError when more than this many feature frames would be padded
        (catches audio/video pairs that are badly out of sync instead of silently repeating).

    Returns:
      (T, k, C) array of feats.dtype.
    """
    if feats.ndim != 2:
        raise ValueError(f"feats: expected shape (F, C), got {feats.shape}")
    if num_frames < 0:
        raise ValueError(f"num_frames: expected >= 0, got {num_frames}")
    k = frames_per_video_frame(fps, feature_rate)
    needed = num_frames * k
    missing = needed - feats.shape[0]
    if missing > 0:
        if feats.shape[0] == 0:
            raise ValueError(f"feats: empty (0 frames), cannot pad to {needed} frames for {num_frames} video frames")
        if max_pad is not None and missing > max_pad:
            raise ValueError(
                f"feats: {feats.shape[0]} feature frames cover fewer than {num_frames} video frames "
                f"(need {needed}, would pad {missing} > max_pad={max_pad})"
            )
        feats = np.concatenate([feats, np.repeat(feats[-1:], missing, axis=0)], axis=0)
    return feats[:needed].reshape(num_frames, k, feats.shape[1])


def audio_frame_features(
    audio: np.ndarray,
    num_frames: int,
    kind: str = "log_mel",
    cfg: MelConfig = DEFAULT_MEL_CONFIG,
    fps: float = 25.0,
    n_mfcc: int = 13,
) -> np.ndarray:
    """Per-video-frame audio features: the k feature frames of each video frame, flattened.

    Args:
      audio: (N,) floating mono audio at cfg.sample_rate.
      num_frames: number of video frames T.
      kind: "log_mel" (C = n_mels) or "mfcc" (C = n_mfcc).
      cfg: frontend parameters; cfg.sample_rate / cfg.hop_length must be a multiple of fps.
      fps: video frame rate.
      n_mfcc: coefficients kept when kind == "mfcc".

    Returns:
      (T, k * C) float32 with k = feature_rate / fps; row t is feature frames k*t .. k*t+k-1 concatenated in
      time order (frame-major, so out.reshape(T, k, C) recovers them).
    """
    if kind == "log_mel":
        feats = log_mel(audio, cfg)
    elif kind == "mfcc":
        feats = mfcc(audio, cfg, n_mfcc=n_mfcc)
    else:
        raise ValueError(f"audio_frame_features: kind must be 'log_mel' or 'mfcc', got {kind!r}")
    grouped = features_per_video_frame(feats, num_frames, fps=fps, feature_rate=cfg.feature_rate)
    return grouped.reshape(num_frames, -1)
