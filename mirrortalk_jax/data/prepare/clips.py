"""One raw video -> its training clips (aligned crops, landmarks, pose, audio, QC) and a report entry.

    entry = process_video("talk.mp4", work_dir / "clips" / key, Options())

The video is read in windows of `Options.window_seconds` (by seeking), each twice, frame by frame: first for the
face mesh of every frame and the scene cuts, then, once the face track is chosen and smoothed, for the crops.
Memory is bounded by the window, whatever the video's length. Each clip is written to its own file as soon as it
is complete (`ClipFile`); the dataset steps (prepare/dataset.py) turn them into records once the motion basis is
fitted. Nothing here raises on a bad video: the entry says why.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mirrortalk_jax.data import media, schema, video
from mirrortalk_jax.data.faces import identity, layout
from mirrortalk_jax.data.faces.landmarker import FaceLandmarker
from mirrortalk_jax.data.prepare import tracking


@dataclasses.dataclass(frozen=True)
class Options:
    image_size: int = 256
    fps: float = schema.FPS
    sample_rate: int = schema.AUDIO_SAMPLE_RATE
    min_seconds: float = 1.0  # shorter face segments are dropped
    max_seconds: float = 20.0  # longer ones are cut into parts
    min_face_px: int = 48  # faces smaller than this (box side in source pixels) are not used
    crop_scale: float = 1.6  # crop side / face size
    dark_level: float = 0.08  # mean brightness (0-1) below which a video is rejected as too dark
    identity_frames: int = 3  # frames per clip the identity embedding is averaged over
    window_seconds: float = 300.0  # a longer video is read in windows of this length: memory stays bounded

    def __post_init__(self):
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {self.image_size}")
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(f"need 0 < min_seconds <= max_seconds, got {self.min_seconds} and {self.max_seconds}")
        if self.window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, got {self.window_seconds}")


@dataclasses.dataclass
class ClipFile:
    """A prepared clip before the motion basis: what `process_video` writes, one .npz per clip."""

    frames_png: list[bytes]  # T PNG crops
    mesh: np.ndarray  # (T, 478, 3) crop pixels, smoothed
    blendshapes: np.ndarray  # (T, 52)
    pose_matrix: np.ndarray  # (T, 4, 4)
    transform: np.ndarray  # (T, 3) crop = a * source + (bx, by)
    audio: np.ndarray  # (N,) 16 kHz mono
    identity: np.ndarray  # (128,) dlib face embedding, mean over a few frames
    info: dict[str, Any]  # source, start frame, QC numbers

    def save(self, path: Path) -> None:
        sizes = np.array([len(b) for b in self.frames_png], np.int64)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, png=np.frombuffer(b"".join(self.frames_png), np.uint8), png_sizes=sizes, mesh=self.mesh,
                 blendshapes=self.blendshapes, pose_matrix=self.pose_matrix, transform=self.transform,
                 audio=self.audio, identity=self.identity,
                 info=np.frombuffer(json.dumps(self.info, default=float).encode(), np.uint8))
        os.replace(tmp, path)

    def resynced(self, delay: int, samples_per_frame: int) -> ClipFile:
        """The clip with audio delayed by `delay` frames relative to the video (negative: early) moved back into
        sync: both streams cut to the frames they then share (|delay| frames fewer)."""
        if delay == 0:
            return self
        n, k = len(self.mesh), abs(delay)
        video = slice(0, n - k) if delay > 0 else slice(k, n)
        audio = self.audio[k * samples_per_frame:] if delay > 0 else self.audio
        audio = audio[:(n - k) * samples_per_frame]
        info = {**self.info, "num_frames": n - k,
                "start_frame": self.info["start_frame"] + (k if delay < 0 else 0)}
        return ClipFile(self.frames_png[video], self.mesh[video], self.blendshapes[video], self.pose_matrix[video],
                        self.transform[video], audio, self.identity, info)

    def part(self, start: int, stop: int) -> ClipFile:
        """Frames start..stop-1 with their audio."""
        per_frame = schema.AUDIO_SAMPLE_RATE / schema.FPS
        info = {**self.info, "num_frames": stop - start, "start_frame": self.info["start_frame"] + start}
        return ClipFile(self.frames_png[start:stop], self.mesh[start:stop], self.blendshapes[start:stop],
                        self.pose_matrix[start:stop], self.transform[start:stop],
                        self.audio[round(start * per_frame):round(stop * per_frame)], self.identity, info)

    @staticmethod
    def load_info(path: Path) -> dict[str, Any]:
        """Only the clip's info (source, start frame, frame count, QC), without decoding its arrays."""
        with np.load(path) as z:
            return json.loads(z["info"].tobytes().decode())

    @classmethod
    def load(cls, path: Path) -> ClipFile:
        with np.load(path) as z:
            png, ends = z["png"].tobytes(), np.cumsum(z["png_sizes"])
            frames = [png[a:b] for a, b in zip(np.concatenate([[0], ends[:-1]]), ends)]
            return cls(frames, z["mesh"], z["blendshapes"], z["pose_matrix"], z["transform"], z["audio"],
                       z["identity"], json.loads(z["info"].tobytes().decode()))


def crop(frame: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    """The (size, size, 3) crop of a (H, W, 3) frame under crop = a * frame + b (outside the frame: black)."""
    a, bx, by = (float(v) for v in transform)
    image = Image.fromarray(frame)
    factor = int(1 / a) // 2 if a < 0.5 else 1  # downscale by whole factors first: no aliasing
    if factor > 1:
        image = image.reduce(factor)  # source pixels shrink by `factor`: the same crop is `a * factor` of them
        a *= factor
    x0, y0 = -bx / a, -by / a
    out = image.transform((size, size), Image.Transform.AFFINE, (1 / a, 0, x0, 0, 1 / a, y0),
                          resample=Image.Resampling.BILINEAR)
    return np.asarray(out)


def _laplacian_variance(gray: np.ndarray) -> float:
    lap = (-4 * gray[1:-1, 1:-1] + gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:])
    return float(lap.var())


def _entry(path: str, status: str, reason: str, clips: int = 0, seconds: float = 0.0, **extra) -> dict[str, Any]:
    return {"file": path, "status": status, "reason": reason, "clips": clips, "seconds_kept": round(seconds, 3),
            **extra}


def process_video(path: str | os.PathLike, out_dir: Path, options: Options = Options()) -> dict[str, Any]:
    """Prepares one video: clip files in `out_dir` (000.npz, 001.npz, ...) and its report entry
    {file, status ok|partial|rejected, reason, clips, seconds_kept, qc}. Never raises for a bad file."""
    path = os.fspath(path)
    try:
        return _process(path, Path(out_dir), options)
    except (media.MediaError, FileNotFoundError, ValueError) as e:
        return _entry(path, "rejected", str(e).replace(f"video {path}: ", ""))
    except MemoryError:
        return _entry(path, "rejected", "out of memory while decoding")


@dataclasses.dataclass
class _Window:
    """What one window of a video gave: clips written, or why none."""

    written: int = 0
    seconds: float = 0.0
    qcs: list[dict[str, float]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    partial: bool = False
    reason: str = ""  # why nothing was kept
    face_frames: int = 0
    frames: int = 0
    source_fps: float | None = None


def _windows(declared: float | None, options: Options) -> list[tuple[float, float | None]]:
    """(start, duration) windows covering the video; the last runs to the end."""
    if declared is None or declared <= 1.5 * options.window_seconds:
        return [(0.0, None)]
    starts = np.arange(0.0, declared - 0.5 * options.window_seconds, options.window_seconds)
    return [(float(t), options.window_seconds) for t in starts[:-1]] + [(float(starts[-1]), None)]


def _process(path: str, out_dir: Path, options: Options) -> dict[str, Any]:
    media.check_file(path, "video")
    if Path(path).stat().st_size == 0:
        return _entry(path, "rejected", "empty file (0 bytes)")
    with video.VideoStream(path, options.fps, "video") as probe:
        if not probe.has_audio:
            return _entry(path, "rejected", "no audio stream")
        declared = probe.declared_duration
    results = []
    for index, (start, duration) in enumerate(_windows(declared, options)):
        results.append(_process_window(path, out_dir, options, index, start, duration))
        if results[-1].reason and index == 0 and results[-1].frames == 0:
            break  # nothing decodable
    written = sum(r.written for r in results)
    notes = list(dict.fromkeys(n for r in results for n in r.notes))
    if not written:
        reason = next(r.reason for r in results if r.reason)
        return _entry(path, "rejected", "; ".join([reason] + [n for n in notes if n not in reason]))
    qcs = [q for r in results for q in r.qcs]
    qc = {key: round(float(np.mean([q[key] for q in qcs])), 4) for key in qcs[0]}
    qc["face_fraction"] = round(sum(r.face_frames for r in results) / max(sum(r.frames for r in results), 1), 4)
    status = "partial" if any(r.partial for r in results) else "ok"
    return _entry(path, status, "; ".join(notes) or "ok", written, sum(r.seconds for r in results), qc=qc)


def _process_window(path: str, out_dir: Path, options: Options, index: int, start: float,
                    duration: float | None) -> _Window:
    """Both passes over one window of the video (a whole short video is one window)."""
    result = _Window()
    where = f" at {start:.0f} s" if start else ""
    # Pass 1: the face mesh of every frame and the shots.
    per_frame: list[list] = []
    cuts = tracking.SceneCuts()
    brightness = []
    small = 0
    with video.VideoStream(path, options.fps, "video", audio_rate=options.sample_rate, start=start,
                           duration=duration) as stream:
        with FaceLandmarker(num_faces=2) as marker:
            for i, frame in enumerate(stream):
                cuts(frame)
                brightness.append(float(frame[::8, ::8].mean()) / 255)
                faces = marker.detect(frame, round(i * 1000 / options.fps))
                kept = [f for f in faces if f.size >= options.min_face_px]
                small += len(faces) - len(kept)
                per_frame.append(kept)
        audio, declared, decoded_seconds = stream.audio, stream.declared_duration, stream.duration
        result.source_fps = stream.source_fps
        if duration is None and ((declared is not None and start + decoded_seconds < declared - 0.1)
                                 or stream.skipped_packets):
            result.partial = True
            result.notes.append(f"truncated at {start + decoded_seconds:.1f} s of {declared:.1f} s" if declared
                                else f"{stream.skipped_packets} damaged packets skipped")
    result.frames = len(per_frame)
    if audio is None or not len(audio):
        result.reason = "no audio samples (empty or truncated audio stream)" + where
        return result
    if not np.all(np.isfinite(audio)):
        result.reason = "audio holds NaN or infinite samples" + where
        return result
    if np.mean(brightness) < options.dark_level:
        result.reason = f"too dark (mean brightness {np.mean(brightness):.2f} of 1)" + where
        return result

    # Video and audio cut to their common span.
    audio_frames = int(len(audio) * options.fps / options.sample_rate)
    if abs(audio_frames - len(per_frame)) > 2 and duration is None:
        result.partial = True
        result.notes.append(f"audio {len(audio) / options.sample_rate:.2f} s vs video "
                            f"{len(per_frame) / options.fps:.2f} s: cut to the common span")
    usable = min(len(per_frame), audio_frames)
    track = tracking.follow(per_frame[:usable], cuts.cuts)
    result.face_frames = track.frames_with_face
    if track.max_faces > 1:
        result.notes.append(f"{track.max_faces} faces, kept the largest track")
    if track.scene_cuts:
        result.notes.append(f"{track.scene_cuts} scene cut(s)")
    if not track.frames_with_face:
        result.reason = "no face detected" + where + (
            f" ({small} faces smaller than {options.min_face_px} px ignored)" if small else "")
        return result
    segments, dropped = tracking.split_segments(track.segments, options.fps, options.min_seconds,
                                                options.max_seconds)
    if not segments:
        result.reason = (f"no face segment of at least {options.min_seconds:.1f} s{where} (face in "
                         f"{track.frames_with_face} of {usable} frames)")
        return result
    if dropped:
        result.notes.append(f"{dropped:.1f} s of short face segments dropped")
    _crop_segments(path, out_dir, options, index, start, segments, audio, result)
    if any(q["face_outside_frame"] > 0.1 for q in result.qcs):
        result.notes.append("face partly outside the frame (cut off)")
    return result


def _crop_segments(path: str, out_dir: Path, options: Options, index: int, start: float,
                   segments: list[tracking.Segment], audio: np.ndarray, result: _Window) -> None:
    """Pass 2: smoothed tracks, crop transforms and crops; each clip written once its last frame is cropped."""
    plans = []
    for seg in segments:
        raw = np.stack([f.mesh for f in seg.faces]).astype(np.float64)
        smooth = tracking.one_euro(raw, options.fps)
        transform = tracking.crop_transforms(smooth, options.fps, image_size=options.image_size,
                                             scale=options.crop_scale)
        plans.append((seg, raw, smooth, transform, _identity_frames(len(seg), options.identity_frames)))
    out_dir.mkdir(parents=True, exist_ok=True)
    starts = {seg.start: k for k, (seg, *_) in enumerate(plans)}
    active: tuple[int, list[bytes], list[float], list[np.ndarray]] | None = None
    embed = identity.IdentityEmbedder()
    first_frame = round(start * options.fps)
    with video.VideoStream(path, options.fps, "video", start=start, duration=plans[-1][0].stop / options.fps) \
            as stream:
        for i, frame in enumerate(stream):
            if active is None and i in starts:
                active = (starts[i], [], [], [])
            if active is None:
                continue
            k, pngs, blur, embeddings = active
            seg, raw, smooth, transform, identity_frames = plans[k]
            t = i - seg.start
            image = crop(frame, transform[t], options.image_size)
            pngs.append(schema.encode_png(image))
            blur.append(_laplacian_variance(image.mean(-1)))
            if t in identity_frames:
                points = layout.dlib68(tracking.to_crop(smooth[t:t + 1], transform[t:t + 1]))[0, :, :2]
                embeddings.append(embed(image, points))
            if i + 1 == seg.stop:
                result.qcs.append(_write_clip(out_dir / f"{index:03d}_{k:03d}.npz", path, seg, raw, smooth,
                                              transform, pngs, blur, audio, np.mean(embeddings, 0), options,
                                              first_frame, frame.shape[:2], result.source_fps))
                result.written += 1
                result.seconds += len(seg) / options.fps
                active = None
    if not result.written:
        result.reason = "the video could not be decoded a second time"


def _identity_frames(length: int, count: int) -> set[int]:
    return set(np.linspace(0, length - 1, min(count, length)).round().astype(int).tolist())


def _write_clip(dest: Path, source: str, seg: tracking.Segment, raw: np.ndarray, smooth: np.ndarray,
                transform: np.ndarray, pngs: list[bytes], blur: list[float], audio: np.ndarray,
                embedding: np.ndarray, options: Options, first_frame: int,
                frame_size: tuple[int, int], source_fps: float | None) -> dict[str, float]:
    per_frame = options.sample_rate / options.fps
    clip_audio = audio[round(seg.start * per_frame):round(seg.stop * per_frame)].astype(np.float32)
    mesh_crop = tracking.to_crop(smooth, transform)
    raw_crop = tracking.to_crop(raw, transform)
    # Jitter: frame-to-frame acceleration of the raw landmarks, in crop pixels (what smoothing took out).
    jitter = float(np.abs(np.diff(raw_crop[..., :2], n=2, axis=0)).mean()) if len(raw) > 2 else 0.0
    # Cut-off faces: the share of mesh vertices outside the source frame (the crop pads them with black).
    height, width = frame_size
    outside = float(np.mean((raw[..., 0] < 0) | (raw[..., 0] >= width) | (raw[..., 1] < 0) | (raw[..., 1] >= height)))
    qc = {"face_px": float(np.mean([f.size for f in seg.faces])), "face_outside_frame": outside,
          "landmark_jitter_px": jitter,
          "blur": float(np.mean(blur))}
    info = {"source": source, "source_fps": source_fps, "source_size": list(frame_size),
            "start_frame": first_frame + seg.start, "num_frames": len(seg), "qc": qc,
            "image_size": options.image_size}
    ClipFile(pngs, mesh_crop.astype(np.float32), np.stack([f.blendshapes for f in seg.faces]).astype(np.float32),
             np.stack([f.pose_matrix for f in seg.faces]).astype(np.float32), transform.astype(np.float32),
             clip_audio, embedding.astype(np.float32), info).save(dest)
    return qc
