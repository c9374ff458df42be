"""mp4 reading and writing (H.264 video + AAC audio) with PyAV.

Used for dataset clips, rendered previews and evaluation videos. Conventions:

* Frames are RGB uint8, shape (T, H, W, 3). H.264 with 4:2:0 chroma needs even width and height, so odd
  sizes are padded by one row/column at the bottom/right, replicating the last row/column; a read-back clip
  then has the padded (even) size.
* Video is encoded as yuv420p with libx264 at crf 18 (visually near-lossless), so previews play everywhere.
* Audio is mono float32 in [-1, 1]. AAC is encoded at `sample_rate` when AAC supports that rate (16 kHz does),
  otherwise resampled to the nearest supported rate; read-back audio is downmixed to mono float32 at the
  stream's rate and trimmed to the duration stored in the container (AAC pads to 1024-sample frames).
* Writes go to a hidden temporary file in the destination directory and are moved into place with
  os.replace, so readers never see a half-written mp4.
"""

from __future__ import annotations

import dataclasses
import fractions
import itertools
import os
import uuid
from collections.abc import Iterable, Iterator

import av
import numpy as np

from mirrortalk_jax.data.audio_features import validate_audio

# libx264 quality: 18 is visually near-lossless; lower is larger files.
DEFAULT_CRF = 18
# Samples per AAC-LC frame; the encoder needs exactly this many per frame.
AAC_FRAME_SIZE = 1024


class MediaError(ValueError):
    """A file exists but cannot be decoded as an mp4 with a video stream."""


@dataclasses.dataclass
class VideoClip:
    """A decoded mp4.

    Attributes:
      frames: (T, H, W, 3) uint8 RGB.
      fps: frames per second.
      audio: (N,) float32 mono in [-1, 1], or None if the file has no audio stream.
      sample_rate: audio sample rate in Hz, or None without audio.
    """

    frames: np.ndarray
    fps: float
    audio: np.ndarray | None = None
    sample_rate: int | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration(self) -> float:
        """Video duration in seconds, num_frames / fps."""
        return self.num_frames / self.fps


def _check_frames(frames: np.ndarray) -> np.ndarray:
    """Validates (T, H, W, 3) uint8 frames and pads odd H/W to even by edge replication."""
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", type(frames).__name__)
        raise ValueError(f"write_mp4: frames must be a (T, H, W, 3) RGB array, got {shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"write_mp4: frames must be uint8, got dtype {frames.dtype}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"write_mp4: frames must be non-empty, got shape {frames.shape}")
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        # yuv420p subsamples chroma 2x2, so libx264 rejects odd sizes; replicate the last row/column.
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def _aac_rate(sample_rate: int) -> int:
    """The AAC rate to encode at: `sample_rate` if AAC supports it, else the nearest supported rate."""
    supported = av.codec.Codec("aac", "w").audio_rates or ()
    if not supported or sample_rate in supported:
        return sample_rate
    return min(supported, key=lambda r: (abs(r - sample_rate), -r))


def write_mp4(
    path: str | os.PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    crf: int = DEFAULT_CRF,
) -> None:
    """Writes an H.264 (+ AAC) mp4 atomically.

    Args:
      path: destination file; its directory must exist. Replaced atomically if it already exists.
      frames: (T, H, W, 3) uint8 RGB, or an iterable of such batches (all of one H, W), encoded as they come
        so a long video never has to be in memory at once. Odd H or W is padded to even (last row/column
        repeated).
      fps: frame rate, > 0 (non-integer rates such as 29.97 are stored as a rational).
      audio: (N,) floating mono audio in [-1, 1] at `sample_rate`, or None for a silent video. Values outside
        [-1, 1] are clipped.
      sample_rate: audio sample rate in Hz.
      crf: libx264 constant rate factor (0 = lossless, 18 = near-lossless, 23 = x264 default).
    """
    path = os.fspath(path)
    batches = iter([frames] if isinstance(frames, np.ndarray) else frames)
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"write_mp4: fps must be a positive finite number, got {fps}")
    if audio is not None:
        audio = np.clip(validate_audio(audio, name="write_mp4: audio"), -1.0, 1.0)
        if sample_rate <= 0:
            raise ValueError(f"write_mp4: sample_rate must be positive, got {sample_rate}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"write_mp4: directory {directory!r} for {path!r} does not exist")

    # Hidden temp name in the same directory so os.replace is an atomic rename on the same filesystem.
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp.mp4")
    try:
        _encode(tmp, batches, fps, audio, sample_rate, crf)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _encode(tmp: str, batches: Iterator[np.ndarray], fps: float, audio: np.ndarray | None, sample_rate: int,
            crf: int):
    """Encodes frame batches (+ audio) into `tmp`, interleaving the audio that belongs to each video frame."""
    rate = fractions.Fraction(fps).limit_denominator(1001)
    first = next(batches, None)
    if first is None:
        raise ValueError("write_mp4: frames must be non-empty, got no batch")
    first = _check_frames(first)
    size = first.shape[1:3]
    # faststart moves the index to the front so browsers can start playing previews before the download ends.
    with av.open(tmp, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        vstream = container.add_stream("libx264", rate=rate)
        vstream.width, vstream.height = size[1], size[0]
        vstream.pix_fmt = "yuv420p"
        vstream.codec_context.time_base = 1 / rate
        vstream.options = {"crf": str(crf)}

        astream = resampler = None
        if audio is not None:
            aac_rate = _aac_rate(sample_rate)
            astream = container.add_stream("aac", rate=aac_rate)
            astream.layout = "mono"
            # Converts flt -> fltp, resamples if needed, and re-chunks into exact AAC-sized frames.
            resampler = av.AudioResampler(format="fltp", layout="mono", rate=aac_rate, frame_size=AAC_FRAME_SIZE)

        t = audio_pos = 0
        for batch in itertools.chain([first], (_check_frames(b) for b in batches)):
            if batch.shape[1:3] != size:
                raise ValueError(f"write_mp4: a batch of frames of size {batch.shape[1:3]} after {size}")
            for frame in batch:
                vframe = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                vframe.pts = t
                container.mux(vstream.encode(vframe))
                t += 1
                if audio is not None:  # the audio up to the end of this video frame
                    end = min(len(audio), round(t * sample_rate / fps))
                    if end > audio_pos:
                        _encode_audio(container, astream, resampler, audio[audio_pos:end], sample_rate, audio_pos)
                        audio_pos = end
        container.mux(vstream.encode(None))
        if audio is not None:
            if audio_pos < len(audio):  # audio longer than the video ends the file
                _encode_audio(container, astream, resampler, audio[audio_pos:], sample_rate, audio_pos)
            for aframe in resampler.resample(None):
                container.mux(astream.encode(aframe))
            container.mux(astream.encode(None))


def _encode_audio(container, astream, resampler, chunk: np.ndarray, sample_rate: int, pts: int):
    aframe = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
    aframe.sample_rate = sample_rate
    aframe.pts = pts
    aframe.time_base = fractions.Fraction(1, sample_rate)
    for out in resampler.resample(aframe):
        container.mux(astream.encode(out))


def read_mp4(path: str | os.PathLike) -> VideoClip:
    """Decodes an mp4 into RGB frames and mono float32 audio.

    Args:
      path: an mp4 (or any container FFmpeg can read) with at least one video stream.

    Returns:
      VideoClip with frames (T, H, W, 3) uint8, fps, and audio (N,) float32 mono + sample_rate, or None/None if
      the file has no audio stream.

    Raises:
      FileNotFoundError: `path` does not exist.
      MediaError (a ValueError): the file is not a readable mp4 or has no video frames.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"read_mp4: no such file: {path!r}")
    try:
        with av.open(path, mode="r") as container:
            return _decode(path, container)
    except av.FFmpegError as e:
        raise MediaError(f"read_mp4: {path!r} is not a readable mp4: {e}") from e


def _decode(path: str, container) -> VideoClip:
    if not container.streams.video:
        raise MediaError(f"read_mp4: {path!r} is not a readable mp4: it has no video stream")
    vstream = container.streams.video[0]
    astream = container.streams.audio[0] if container.streams.audio else None
    rate = vstream.average_rate or vstream.guessed_rate or vstream.base_rate
    if not rate:
        raise MediaError(f"read_mp4: {path!r} is not a readable mp4: its video stream has no frame rate")

    frames: list[np.ndarray] = []
    chunks: list[np.ndarray] = []
    # Downmixes any channel layout to mono flt (packed float32) at the stream's own rate.
    resampler = av.AudioResampler(format="flt", layout="mono") if astream is not None else None
    streams = [vstream] + ([astream] if astream is not None else [])
    for packet in container.demux(*streams):
        for frame in packet.decode():
            if isinstance(frame, av.VideoFrame):
                frames.append(frame.to_ndarray(format="rgb24"))
            else:
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
    if resampler is not None:
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    if not frames:
        raise MediaError(f"read_mp4: {path!r} is not a readable mp4: its video stream has no frames")

    audio = sample_rate = None
    if astream is not None:
        sample_rate = int(astream.rate)
        audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
        if astream.duration is not None and astream.time_base is not None:
            # AAC pads the last frame to 1024 samples; the container records the true duration.
            n = int(round(astream.duration * astream.time_base * sample_rate))
            audio = audio[:n] if n > 0 else audio
    return VideoClip(frames=np.stack(frames), fps=float(rate), audio=audio, sample_rate=sample_rate)
