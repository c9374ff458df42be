"""mp4 reading and writing (H.264 video + AAC audio) with PyAV.

Used for dataset clips, rendered previews and evaluation videos. Conventions:

* Frames are RGB uint8, shape (T, H, W, 3). H.264 with 4:2:0 chroma needs even width and height, so odd
  sizes are padded by one row/column at the bottom/right, replicating the last row/column; a read-back clip
  then has the padded (even) size.
* Video is encoded as yuv420p with libx264 at crf 18 (visually near-lossless), so previews play everywhere.
* Audio is mono float32 in [-1, 1]. AAC is encoded at `sample_rate` when AAC supports that rate (16 kHz does),
  otherwise resampled to the nearest supported rate; read-back audio is downmixed to mono float32 at the
  stream's rate and trimmed to the duration stored in the container (AAC pads to 1024-sample frames).
* Reading gives frames as displayed (the container's rotation applied) at a constant rate, sampled by
  presentation time (variable-frame-rate files keep their timing); a truncated or damaged file gives what can
  be decoded, with a warning naming it and the seconds kept (see read_mp4).
* Writes go to a hidden temporary file in the destination directory and are moved into place with
  os.replace, so readers never see a half-written mp4.
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import itertools
import os
import uuid
from collections.abc import Iterable, Iterator

import av
import numpy as np

from mirrortalk_jax.data.audio_features import validate_audio
from mirrortalk_jax.data.media import (MediaError, MonoDownmix, PacketFrames, check_file, declared_seconds,
                                       report_incomplete)

# libx264 quality: 18 is visually near-lossless; lower is larger files.
DEFAULT_CRF = 18
# Samples per AAC-LC frame; the encoder needs exactly this many per frame.
AAC_FRAME_SIZE = 1024


@dataclasses.dataclass
class VideoClip:
    """A decoded mp4.

    Attributes:
      frames: (T, H, W, 3) uint8 RGB.
      fps: frames per second.
      audio: (N,) float32 mono in [-1, 1], or None if the file has no audio stream.
      sample_rate: audio sample rate in Hz, or None without audio.
      declared_duration: seconds of video the file declares (None if it does not); more than `duration` when
        the file is truncated.
      skipped_packets: packets that could not be decoded (damaged data), 0 for an intact file.
    """

    frames: np.ndarray
    fps: float
    audio: np.ndarray | None = None
    sample_rate: int | None = None
    declared_duration: float | None = None
    skipped_packets: int = 0

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


def read_mp4(path: str | os.PathLike, fps: float | None = None, what: str = "read_mp4") -> VideoClip:
    """Decodes an mp4 into RGB frames as displayed, at a constant frame rate, and mono float32 audio.

    * Rotation / mirroring in the container's display matrix (phone videos shot upright) is applied, so frames
      are (T, H, W, 3) as a player shows them.
    * Frames are sampled by presentation time: output frame n (at n / fps seconds from the first frame) is the
      input frame on screen then, so variable-frame-rate files keep their timing (and their sync with the
      audio). A constant-rate file read at its own rate gives its frames one to one.
    * A truncated or damaged file is decoded as far as it can be: unreadable packets are skipped (the frame
      before a gap is held over it) and a warning names the file and the seconds kept of those it declares
      (also in `declared_duration` / `skipped_packets`). Only a file with no decodable frame is refused.

    Args:
      path: an mp4 (or any container FFmpeg can read) with at least one video stream.
      fps: frame rate to sample at; None: the stream's average rate.
      what: how messages name the file.

    Returns:
      VideoClip with frames (T, H, W, 3) uint8, fps, and audio (N,) float32 mono + sample_rate, or None/None if
      the file has no audio stream.

    Raises:
      FileNotFoundError: `path` does not exist.
      MediaError (a ValueError): `path` is not a readable file (a directory, ...), not a readable mp4, or has
      no decodable video frames.
    """
    path = os.fspath(check_file(path, what))
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"{what}: fps must be a positive finite number, got {fps}")
    try:
        clip = _decode(path, fps, what)
    except av.FFmpegError as e:
        raise MediaError(f"{what} {path}: not a readable mp4: {e}") from e
    report_incomplete(what, path, clip.duration, clip.declared_duration, clip.skipped_packets)
    return clip


def _orientation(frame: av.VideoFrame) -> tuple[bool, bool, bool]:
    """(transpose, flip rows, flip columns) that turn a decoded frame into the displayed one, from its display
    matrix (rotations by multiples of 90 degrees, with or without mirroring; others are not applied)."""
    for data in frame.side_data:
        if getattr(data.type, "name", "") == "DISPLAYMATRIX":
            # 3x3 int32, 16.16 fixed point, row-major [a b u; c d v; x y w]: displayed (x', y') = (a x + c y,
            # b x + d y) for a stored pixel (x, y) (y down), then shifted back into view.
            a, b, _, c, d = np.frombuffer(bytes(data), np.int32)[:5].astype(np.float64)
            if abs(a) < 0.5 * abs(b) and abs(d) < 0.5 * abs(c):  # x' comes from y: a transpose
                return True, b < 0, c < 0
            if abs(b) < 0.5 * abs(a) and abs(c) < 0.5 * abs(d):
                return False, d < 0, a < 0
    return False, False, False


def _orient(image: np.ndarray, orientation: tuple[bool, bool, bool]) -> np.ndarray:
    """(H, W, 3) stored -> displayed: (W, H, 3) when transposed."""
    transpose, flip_rows, flip_cols = orientation
    if transpose:
        image = image.transpose(1, 0, 2)
    if flip_rows:
        image = image[::-1]
    if flip_cols:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


class _ConstantRate:
    """Frames at presentation times -> frames at a constant `fps`: output frame n (time n / fps after the first
    frame) is the last frame shown by then, with half a period of slack so a stream at `fps` maps one to one.
    Frames are handed out as soon as they are due (a frame is converted to RGB when it is first output)."""

    def __init__(self, fps: float, orient, start: float | None = None):
        """start: the time of output frame 0 (None: the first frame's)."""
        self.fps, self.orient = fps, orient
        self.count = 0  # frames output so far
        self.start = start
        self.last = 0.0  # seconds after the first frame at which the latest frame is shown
        self.held: av.VideoFrame | None = None
        self.held_rgb: np.ndarray | None = None

    def _emit(self) -> np.ndarray:
        if self.held_rgb is None:
            self.held_rgb = self.orient(self.held.to_ndarray(format="rgb24"))
        self.count += 1
        return self.held_rgb

    def push(self, frame: av.VideoFrame, time: float) -> list[np.ndarray]:
        """The output frames that are due before `frame` (shown at `time`) replaces the held one."""
        if self.start is None:
            self.start = time
        t = time - self.start
        out = []
        while self.held is not None and (self.count + 0.5) / self.fps < t:
            out.append(self._emit())
        self.held, self.held_rgb, self.last = frame, None, max(self.last, t)
        return out

    def finish(self, end: float) -> list[np.ndarray]:
        """The remaining frames up to `end` seconds after the first one (the last frame is held until then)."""
        total = max(1, round(end * self.fps))
        out = []
        while self.held is not None and self.count < total:
            out.append(self._emit())
        return out


class VideoStream:
    """An open video file decoded frame by frame, with bounded memory (only the audio is kept whole):

        with VideoStream(path, fps=25) as stream:
            for frame in stream:          # (H, W, 3) uint8 RGB as displayed, at a constant `fps`
                ...
            stream.audio, stream.sample_rate, stream.declared_duration, stream.skipped_packets

    Frames are sampled by presentation time as in `read_mp4`; `audio` (mono float32 at the stream's rate, None
    without an audio stream) is complete once the frames are exhausted.
    """

    def __init__(self, path: str | os.PathLike, fps: float | None = None, what: str = "video", *,
                 audio_rate: int | None = None, start: float = 0.0, duration: float | None = None):
        """audio_rate: resample the audio to this rate (None: the stream's own). start, duration: only this
        window of the video (seconds from its first frame; frames at start + n / fps, the audio cut alike),
        reached by seeking, so a long video can be read window by window."""
        self.path, self.what, self._audio_rate = os.fspath(check_file(path, what)), what, audio_rate
        self.start, self.window = float(start), duration
        if fps is not None and not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"{what}: fps must be a positive finite number, got {fps}")
        try:
            self._container = av.open(self.path, mode="r")
        except av.FFmpegError as e:
            raise MediaError(f"{what} {self.path}: not a readable mp4: {e}") from e
        if not self._container.streams.video:
            self._container.close()
            raise MediaError(f"{what} {self.path}: not a readable mp4: it has no video stream")
        self._vstream = self._container.streams.video[0]
        self._astream = self._container.streams.audio[0] if self._container.streams.audio else None
        rate = self._vstream.average_rate or self._vstream.guessed_rate or self._vstream.base_rate
        if not rate and fps is None:
            self._container.close()
            raise MediaError(f"{what} {self.path}: not a readable mp4: its video stream has no frame rate")
        self.fps = float(fps or rate)
        self.source_fps = float(rate) if rate else None
        self._native_period = 1.0 / float(rate) if rate else 1.0 / self.fps
        self.declared_duration = declared_seconds(self._container, self._vstream)
        self.audio: np.ndarray | None = None
        self.sample_rate = (audio_rate or int(self._astream.rate)) if self._astream is not None else None
        self.skipped_packets = 0
        self.num_frames = 0

    def __enter__(self) -> VideoStream:
        return self

    def __exit__(self, *exc) -> None:
        self._container.close()

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    @property
    def has_audio(self) -> bool:
        return self._astream is not None

    def __iter__(self) -> Iterator[np.ndarray]:
        sampler = None
        chunks: list[np.ndarray] = []
        downmix = MonoDownmix(self._audio_rate)  # any channel layout -> mono float32
        # A window after the start: seek to the keyframe before it; frames before it only set the held frame.
        origin = None
        if self.start > 0:
            first = self._vstream.start_time
            origin = (float(first * self._vstream.time_base) if first is not None else 0.0) + self.start
            self._container.seek(int(origin * av.time_base))
        total = None if self.window is None else max(1, round(self.window * self.fps))
        audio_start = None  # time of the first decoded audio sample
        decoded = PacketFrames(self._container, self._vstream,
                               *([self._astream] if self._astream is not None else []))
        index = 0
        try:
            for frame in decoded:
                if isinstance(frame, av.VideoFrame):
                    if sampler is None:
                        sampler = _ConstantRate(self.fps, functools.partial(_orient, orientation=_orientation(frame)),
                                                origin)
                    # Frames without timestamps (raw streams) are taken as evenly spaced at the stream's rate.
                    for out in sampler.push(frame, frame.time if frame.time is not None else index * self._native_period):
                        if total is not None and self.num_frames >= total:
                            break
                        self.num_frames += 1
                        yield out
                    index += 1
                else:
                    if audio_start is None and frame.time is not None:
                        audio_start = float(frame.time)
                    chunks.extend(downmix(frame))
                if total is not None and self.num_frames >= total and self._audio_done(chunks, audio_start, origin):
                    break
        except av.FFmpegError as e:  # a conversion failure mid-file ends the video as its end would
            decoded.read_error = e
        chunks.extend(downmix(None))
        self.skipped_packets = decoded.skipped
        if sampler is None:
            kept = f" of the {self.declared_duration:.2f} s it declares" if self.declared_duration is not None else ""
            raise MediaError(f"{self.what} {self.path}: not a readable mp4: no decodable video frames (truncated or "
                             f"corrupt: 0 s kept{kept})")
        if self._astream is not None:
            audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
            first = audio_start if audio_start is not None else (origin or 0.0)
            if self._astream.duration is not None and self._astream.time_base is not None:
                # AAC pads the last frame to 1024 samples; the container records the true duration.
                begin = float((self._astream.start_time or 0) * self._astream.time_base)
                end = begin + float(self._astream.duration * self._astream.time_base)
                n = int(round((end - (first if origin is not None else begin)) * self.sample_rate))
                audio = audio[:n] if n > 0 else audio
            if origin is not None:  # a window: the samples from its start on
                skip = round((origin - first) * self.sample_rate)
                audio = audio[skip:] if skip >= 0 else np.concatenate([np.zeros(-skip, np.float32), audio])
            if total is not None:
                audio = audio[:round(total / self.fps * self.sample_rate)]
            self.audio = audio
        # The last frame lasts one period of the stream's rate, or up to the declared end when that comes first (a
        # variable-rate stream's average period is not its last frame's). Per-frame durations are not used: with
        # B-frames they are assigned in decode order, not to the frames they belong to.
        end = sampler.last + self._native_period
        if self.declared_duration is not None and self.declared_duration - self.start > sampler.last:
            end = min(end, self.declared_duration - self.start)
        if total is not None:
            end = min(end, total / self.fps)
        for out in sampler.finish(end):
            self.num_frames += 1
            yield out

    def _audio_done(self, chunks: list[np.ndarray], audio_start: float | None, origin: float | None) -> bool:
        """Whether the decoded audio covers the window (or there is none to wait for)."""
        if self._astream is None:
            return True
        if audio_start is None:
            return False
        have = audio_start + sum(len(c) for c in chunks) / self.sample_rate
        return have >= (origin or 0.0) + self.window


def _decode(path: str, fps: float | None, what: str) -> VideoClip:
    with VideoStream(path, fps, what) as stream:
        frames = np.stack(list(stream))
        return VideoClip(frames=frames, fps=stream.fps, audio=stream.audio, sample_rate=stream.sample_rate,
                         declared_duration=stream.declared_duration, skipped_packets=stream.skipped_packets)
