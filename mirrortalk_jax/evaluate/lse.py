"""LSE-C / LSE-D (Sync_conf) with SyncNet, exactly as syncnet_python's `SyncNetInstance.evaluate` computes them.

    model = runs.loader.load_model("ckpt/syncnet").model           # tools/convert_syncnet.py output
    embedder = lse.SyncNetEmbedder(model)
    result = sync.clip_sync(embedder, frames_rgb_uint8, audio_16k)       # frames (T, 224, 224, 3), 25 fps
    result.confidence, result.min_dist, result.offset                    # LSE-C, LSE-D, AV offset (frames)

What makes the numbers comparable to the literature (research: syncnet_python, Wav2Lip and EAT evaluation code):

* audio: 16 kHz mono, MFCC of python_speech_features 0.6 with its defaults (`speech_features_mfcc`: 25 ms
  rectangular frames every 10 ms, pre-emphasis 0.97, 512-point FFT, 26 mel filters, 13 cepstra, lifter 22, c0
  replaced by the log frame energy) computed on **raw int16 sample values**: float audio in [-1, 1] is first
  converted to int16 as ffmpeg does (x * 32768, rounded, clipped), because the waveform's scale shifts c0;
* video: 25 fps face crops at 224 x 224 in **BGR** order with raw 0..255 values (RGB input is flipped here);
  other sizes are resized bilinearly like cv2.resize (syncnet_python's crop pipeline), which is close to but
  not bit-identical with an ffmpeg-scaled crop;
* windows: min_length = min(frames, floor(samples / 640)); n = min_length - 5 windows (syncnet_python drops the
  last full window); window i = frames i .. i+4 and MFCC columns 4i .. 4i+19;
* distances, offset, confidence: evaluate/sync.py (vshift 15 is the scripts' default).

Face detection and cropping (S3FD tracks in syncnet_python's run_pipeline) are not part of this module: pass
crops. Numbers from a self-trained SyncNet, or from other crops, are internal only.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft
from flax import nnx

from mirrortalk_jax.models.syncnet import model as syncnet

SAMPLE_RATE = 16000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps


# ----------------------------------------------------------------------------------------------------------------
# MFCC (python_speech_features 0.6)
# ----------------------------------------------------------------------------------------------------------------

def _round_half_up(x: float) -> int:
    return int(decimal.Decimal(x).quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))


def _hz2mel(hz):
    return 2595 * np.log10(1 + hz / 700.0)


def _mel2hz(mel):
    return 700 * (10 ** (mel / 2595.0) - 1)


def speech_filterbank(nfilt: int = 26, nfft: int = 512, sample_rate: int = SAMPLE_RATE, lowfreq: float = 0.0,
                      highfreq: float | None = None) -> np.ndarray:
    """python_speech_features.get_filterbanks: (nfilt, nfft // 2 + 1) triangles on integer FFT-bin edges."""
    highfreq = highfreq or sample_rate / 2
    if highfreq > sample_rate / 2:
        raise ValueError(f"highfreq {highfreq} is above the Nyquist frequency {sample_rate / 2}")
    mels = np.linspace(_hz2mel(lowfreq), _hz2mel(highfreq), nfilt + 2)
    edges = np.floor((nfft + 1) * _mel2hz(mels) / sample_rate)
    bank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = edges[j], edges[j + 1], edges[j + 2]
        rise, fall = np.arange(int(lo), int(mid)), np.arange(int(mid), int(hi))
        bank[j, rise] = (rise - lo) / (mid - lo)
        bank[j, fall] = (hi - fall) / (hi - mid)
    return bank


def speech_features_mfcc(signal: Any, sample_rate: int = SAMPLE_RATE, *, winlen: float = 0.025,
                         winstep: float = 0.01, numcep: int = 13, nfilt: int = 26, nfft: int = 512,
                         lowfreq: float = 0.0, highfreq: float | None = None, preemph: float = 0.97,
                         ceplifter: int = 22, append_energy: bool = True) -> np.ndarray:
    """python_speech_features.mfcc (0.6, rectangular window) in float64: (N,) signal -> (frames, numcep).

    Frames: 1 + ceil((N - frame_len) / step) (at least 1), the signal zero-padded at the end to fill the last.
    syncnet_python passes raw int16 values (not [-1, 1] floats); see `to_int16`.
    """
    signal = np.asarray(signal)
    if signal.ndim != 1 or signal.size == 0:
        raise ValueError(f"expected a non-empty 1-D mono signal, got shape {signal.shape}")
    signal = signal.astype(np.float64)
    signal = np.append(signal[0], signal[1:] - preemph * signal[:-1])
    frame_len, frame_step = _round_half_up(winlen * sample_rate), _round_half_up(winstep * sample_rate)
    n = signal.size
    num_frames = 1 if n <= frame_len else 1 + math.ceil((n - frame_len) / frame_step)
    padded = np.concatenate([signal, np.zeros((num_frames - 1) * frame_step + frame_len - n)])
    frames = padded[np.arange(num_frames)[:, None] * frame_step + np.arange(frame_len)[None, :]]
    power = np.square(np.abs(np.fft.rfft(frames, nfft))) / nfft  # truncates frames longer than nfft, as the library
    eps = np.finfo(float).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    feat = power @ speech_filterbank(nfilt, nfft, sample_rate, lowfreq, highfreq).T
    feat = np.log(np.where(feat == 0, eps, feat))
    feat = scipy.fft.dct(feat, type=2, axis=1, norm="ortho")[:, :numcep]
    if ceplifter > 0:
        feat = feat * (1 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter))
    if append_energy:
        feat[:, 0] = np.log(energy)
    return feat


def to_int16(audio: Any) -> np.ndarray:
    """int16 samples as syncnet_python reads them from ffmpeg's wav: ints pass, floats in [-1, 1] -> x * 32768.

    ffmpeg converts float to s16 as clip(lrintf(x * 32768)); np.round also rounds half to even.
    """
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"expected mono (N,) audio, got shape {audio.shape}")
    if np.issubdtype(audio.dtype, np.integer):
        if audio.dtype != np.int16:
            raise ValueError(f"integer audio must be int16 samples, got {audio.dtype}")
        return audio
    return np.clip(np.round(audio.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


# ----------------------------------------------------------------------------------------------------------------
# Windows and the SyncNet embedder
# ----------------------------------------------------------------------------------------------------------------

def num_windows(num_frames: int, num_samples: int) -> int:
    """syncnet_python's window count: min(frames, floor(samples / 640)) - 5 (may be <= 0 for short clips)."""
    return min(num_frames, num_samples // SAMPLES_PER_FRAME) - syncnet.WINDOW_FRAMES


def mfcc_windows(mfcc: np.ndarray, n: int) -> np.ndarray:
    """(13, F) MFCC -> (n, 13, 20): window i = columns 4i .. 4i+19 (0.2 s starting at video frame i)."""
    width = syncnet.MFCC_SHAPE[1]
    if mfcc.shape[1] < MFCC_PER_FRAME * (n - 1) + width:
        raise ValueError(f"{n} windows need {MFCC_PER_FRAME * (n - 1) + width} MFCC frames, got {mfcc.shape[1]}")
    idx = MFCC_PER_FRAME * np.arange(n)[:, None] + np.arange(width)[None, :]
    return np.transpose(mfcc[:, idx], (1, 0, 2))


def prepare_frames(frames: Any, rgb: bool = True) -> np.ndarray:
    """(T, H, W, 3) uint8/float frames -> (T, 224, 224, 3) float32 BGR 0..255.

    Other sizes are resized with half-pixel-centred bilinear interpolation and no antialiasing, as cv2.resize
    (INTER_LINEAR) in syncnet_python's crop pipeline, then rounded to integers as cv2 does for uint8 images.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) frames, got shape {frames.shape}")
    x = frames.astype(np.float32)
    if rgb:
        x = x[..., ::-1]
    size = syncnet.LIP_SHAPE[1:3]
    if x.shape[1:3] != size:
        x = jax.image.resize(jnp.asarray(x), (x.shape[0], *size, 3), method="linear", antialias=False)
        x = np.clip(np.round(np.asarray(x)), 0, 255).astype(np.float32)
    return np.ascontiguousarray(x)


class SyncNetEmbedder:
    """An `evaluate.sync.Embedder`: (frames, audio) -> SyncNet (n, E) lip and audio embeddings of every window.

    Windows go through jitted towers in fixed-size chunks (`chunk` windows; the last one zero-padded), so a
    clip of any length compiles once and memory stays bounded (a 224x224 frame costs ~5 MB of activations in
    the first lip conv). The lip tower runs on `chunk + 4` consecutive frames at a time (models.syncnet.model
    `lip_sequence`), which equals window-by-window evaluation.
    """

    def __init__(self, model: syncnet.SyncNet, chunk: int = 32):
        if chunk <= 0:
            raise ValueError(f"chunk must be positive, got {chunk}")
        self.chunk = chunk
        graphdef, state = nnx.split(model)
        self._state = state
        self._lip = jax.jit(lambda s, x: nnx.merge(graphdef, s).lip_sequence(x))
        self._forward_lip = jax.jit(lambda s, x: nnx.merge(graphdef, s).forward_lip(x))
        self._aud = jax.jit(lambda s, x: nnx.merge(graphdef, s).forward_aud(x))
        self._lipfeat = jax.jit(lambda s, x: nnx.merge(graphdef, s).forward_lipfeat(x))

    # The original's three entry points, channels-last (see models/syncnet/model.py), as numpy.
    def forward_lip(self, lips: Any) -> np.ndarray:
        """(N, 5, 224, 224, 3) BGR 0..255 -> (N, E)."""
        return np.asarray(self._forward_lip(self._state, jnp.asarray(lips, jnp.float32)))

    def forward_aud(self, mfcc: Any) -> np.ndarray:
        """(N, 13, 20) MFCC windows -> (N, E)."""
        return np.asarray(self._aud(self._state, jnp.asarray(mfcc, jnp.float32)))

    def forward_lipfeat(self, lips: Any) -> np.ndarray:
        """(N, 5, 224, 224, 3) BGR 0..255 -> (N, C) lip-tower features before the FC."""
        return np.asarray(self._lipfeat(self._state, jnp.asarray(lips, jnp.float32)))

    def __call__(self, video: Any, audio: Any, *, rgb: bool = True,
                 sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
        """(T, H, W, 3) face crops at 25 fps (RGB unless rgb=False) and (N,) mono audio -> (n, E), (n, E).

        Audio: int16 samples or floats in [-1, 1], at 16 kHz (resample beforehand; the metric is defined there).
        """
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"SyncNet expects {SAMPLE_RATE} Hz audio, got {sample_rate} Hz; resample it first")
        samples = to_int16(audio)
        video = np.asarray(video)
        n = num_windows(len(video), len(samples))
        if n < 1:
            raise ValueError(f"a clip of {len(video)} frames and {len(samples)} samples gives no SyncNet window "
                             f"(needs at least {syncnet.WINDOW_FRAMES + 1} frames of video and audio)")
        mfcc = speech_features_mfcc(samples, SAMPLE_RATE).T.astype(np.float32)  # (13, F), float32 like the original
        frames = prepare_frames(video[:n + syncnet.WINDOW_FRAMES - 1], rgb)
        return self._lip_windows(frames, n), self._audio_windows(mfcc_windows(mfcc, n))

    def _lip_windows(self, frames: np.ndarray, n: int) -> np.ndarray:
        extra = syncnet.WINDOW_FRAMES - 1
        out = []
        for start in range(0, n, self.chunk):
            count = min(self.chunk, n - start)
            block = frames[start:start + count + extra]
            block = np.pad(block, ((0, self.chunk + extra - len(block)), (0, 0), (0, 0), (0, 0)))
            out.append(np.asarray(self._lip(self._state, jnp.asarray(block[None])))[0, :count])
        return np.concatenate(out)

    def _audio_windows(self, windows: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(windows), self.chunk):
            block = windows[start:start + self.chunk]
            padded = np.pad(block, ((0, self.chunk - len(block)), (0, 0), (0, 0)))
            out.append(self.forward_aud(padded)[:len(block)])
        return np.concatenate(out)


def sync_scorer(model: syncnet.SyncNet, vshift: int = 15) -> Callable[[Any, Any], tuple[int, float]]:
    """(face crops (T, H, W, 3) RGB uint8 at 25 fps, audio (N,) 16 kHz) -> (AV offset in frames, confidence), the
    QC `mirrortalk data prepare --sync_model` applies (data.prepare.dataset.SyncScorer)."""
    from mirrortalk_jax.evaluate import sync

    embedder = SyncNetEmbedder(model)

    def score(frames: Any, audio: Any) -> tuple[int, float]:
        result = sync.clip_sync(embedder, frames, audio, vshift)
        return result.offset, result.confidence
    return score
