"""Human-facing views of a built dataset: a text summary and a preview mp4 of one record."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mirrortalk_jax import storage
from mirrortalk_jax.data import schema, video
from mirrortalk_jax.data.sources import ClipSource, load_info, motion_spec_of


def summarize(dataset_dir: str | os.PathLike) -> str:
    """Counts, durations, speakers, motion space and schema of every split, as printable text."""
    info = load_info(dataset_dir)
    spec = motion_spec_of(info)
    lines = [f"dataset: {info.full_name} at {storage.path(dataset_dir)}",
             f"motion space: {spec.name} ({spec.dim} channels at {spec.fps:g} fps)"]
    lines += [f"  {group}: {', '.join(channels)}" for group, channels in spec.groups.items()]
    total_records = 0
    for split in sorted(info.splits.keys()):
        source = ClipSource(dataset_dir, split)
        index = source.clip_index()
        frames = np.array([e["num_frames"] for e in index], float)
        seconds = frames / spec.fps
        speakers = {e["speaker"] for e in index}
        total_records += len(index)
        lines.append(f"split {split}: {len(index)} clips, {len(speakers)} speakers, {seconds.sum():.1f} s "
                     f"(clip length mean {seconds.mean():.2f} s, min {seconds.min():.2f} s, "
                     f"max {seconds.max():.2f} s), {len(source.paths)} shard(s)")
    lines.append(f"total: {total_records} clips")
    lines.append("record schema:")
    for name, feature in info.features.items():
        shape = getattr(feature, "shape", "")
        dtype = getattr(feature, "np_dtype", "")
        lines.append(f"  {name}: {type(feature).__name__} {shape} {dtype}".rstrip())
    extra = {k: v for k, v in info.metadata.items() if k != "motion_spec"} if info.metadata else {}
    for key, value in extra.items():
        text = str(value)  # a fitted basis is megabytes of JSON: show its start
        lines.append(f"metadata {key}: {text if len(text) <= 200 else text[:200] + f'... ({len(text)} characters)'}")
    return "\n".join(lines)


def _draw_landmarks(points: np.ndarray, size: int) -> np.ndarray:
    """Fallback frames for records without stored frames: landmarks as dots. (T, size, size, 3) uint8."""
    out = []
    for frame in points:
        img = Image.new("RGB", (size, size), (20, 20, 20))
        draw = ImageDraw.Draw(img)
        for x, y in frame:
            draw.ellipse([x - 1, y - 1, x + 1, y + 1], fill=(240, 240, 240))
        out.append(np.asarray(img))
    return np.stack(out)


def preview(dataset_dir: str | os.PathLike, split: str, index: int, out_path: str | os.PathLike,
            landmark_size: int = 256) -> Path:
    """Writes record `index` of `split` as an H.264 + AAC mp4: its frames (or landmarks) with its audio."""
    source = ClipSource(dataset_dir, split)
    if not 0 <= index < len(source):
        raise IndexError(f"split {split!r} of {dataset_dir} has {len(source)} records; index {index} is out of range")
    record = source[index]
    if "frames" in record:
        frames = schema.decode_frames(record["frames"])
    elif "landmarks_2d" in record:
        pts = record["landmarks_2d"]
        scale = landmark_size / max(float(pts.max()), 1.0) * 0.9
        frames = _draw_landmarks(pts * scale, landmark_size)
    else:
        raise ValueError(f"{source.where(index)} has neither frames nor landmarks to show")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    video.write_mp4(out_path, frames, fps=float(record["fps"]), audio=record["audio"],
                    sample_rate=int(record["sample_rate"]))
    return out_path
