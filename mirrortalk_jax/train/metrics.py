"""Metric writing from process 0: JSONL (`metrics.jsonl`, one row per step and prefix) and TensorBoard event files
(tensorboardX, no TensorFlow: scalars, images, and previews as animated images), both always on.

A run resumed from step S replays the steps after S, so their JSONL rows from before the interruption are dropped
first; TensorBoard shows the replayed points after the old ones (it keeps the last value per step).

A gs:// workdir cannot be appended to: both files are written to a local mirror (storage.Mirror) that is
uploaded at most every `push_secs` seconds, at `flush` (the trainer calls it after each evaluation) and at close.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from typing import Any

import jax
import numpy as np
from PIL import Image

from mirrortalk_jax import storage


METRICS_FILE = "metrics.jsonl"


class MetricWriter:
    def __init__(self, workdir: str | os.PathLike, *, enabled: bool | None = None, resume_step: int | None = None,
                 push_secs: float = 60.0):
        """`resume_step`: the step the run resumes from (0 for a fresh start); rows after it are dropped."""
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._mirror = storage.Mirror(workdir, pull=(METRICS_FILE,)) if self.enabled else None
        self._file = self._events = None
        self.push_secs, self._pushed_at = push_secs, time.monotonic()
        if not self.enabled:
            return
        self.path = self._mirror.local / METRICS_FILE
        if resume_step is not None:
            drop_rows_after(self.path, resume_step)
        self._file = open(self.path, "a", encoding="utf-8")
        from tensorboardX import SummaryWriter

        self._events = SummaryWriter(os.fspath(self._mirror.local), flush_secs=30)

    def write(self, step: int, scalars: dict[str, Any], prefix: str = "") -> None:
        if not self.enabled:
            return
        values = {f"{prefix}{k}": float(np.asarray(v)) for k, v in scalars.items()}
        self._file.write(json.dumps({"step": int(step), **values}) + "\n")
        self._file.flush()
        for name, value in values.items():
            self._events.add_scalar(name, value, int(step))
        if time.monotonic() - self._pushed_at > self.push_secs:
            self.flush()

    def flush(self) -> None:
        """Makes what was written so far visible in the workdir (uploads it for a gs:// workdir)."""
        if not self.enabled:
            return
        self._events.flush()
        self._mirror.push()
        self._pushed_at = time.monotonic()

    def write_images(self, step: int, images: dict[str, np.ndarray]) -> None:
        """{name: (H, W, 3) or (N, H, W, 3) uint8}: one image (a batch as a grid row) per name."""
        if not self.enabled:
            return
        for name, image in images.items():
            image = np.asarray(image)
            if image.ndim == 4:
                image = np.concatenate(list(image), axis=1)
            _check_uint8_rgb(image[None], name)
            self._events.add_image(name, image, int(step), dataformats="HWC")

    def write_video(self, step: int, name: str, frames: np.ndarray, fps: float) -> None:
        """(T, H, W, 3) uint8 frames as an animated GIF image summary (TensorBoard plays it in its images tab;
        tensorboardX's own add_video needs moviepy)."""
        if not self.enabled:
            return
        frames = np.asarray(frames)
        _check_uint8_rgb(frames, name)
        from tensorboardX.proto.summary_pb2 import Summary

        buffer = io.BytesIO()
        first, *rest = (Image.fromarray(f) for f in frames)
        first.save(buffer, format="GIF", save_all=True, append_images=rest, duration=round(1000 / fps), loop=0)
        image = Summary.Image(height=frames.shape[1], width=frames.shape[2], colorspace=3,
                              encoded_image_string=buffer.getvalue())
        self._events.file_writer.add_summary(Summary(value=[Summary.Value(tag=name, image=image)]), int(step))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._events is not None:
            self._events.close()
        if self._mirror is not None:
            self._mirror.close()
            self._mirror = None


def _check_uint8_rgb(frames: np.ndarray, name: str) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(f"{name}: expected uint8 RGB frames (T, H, W, 3), got {frames.dtype} {frames.shape}")


def drop_rows_after(path: str | os.PathLike, step: int) -> None:
    """Rewrites the JSONL file `path` without its rows of steps after `step` (and lines cut short by a kill).

    Written to a temporary file and renamed over the old one: an interruption leaves either file whole.
    """
    if not os.path.exists(path):
        return
    kept, dropped = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = _parse_row(line)
            if row is not None and row["step"] <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
            elif line.strip():
                dropped += 1
    if not dropped:
        return
    logging.info("%s: dropping %d rows after step %d, the step this run resumes from", path, dropped, step)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _parse_row(line: str) -> dict | None:
    """The row of a metrics line; None for a blank or partial one (a write cut short)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("step"), int) else None


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, float]]:
    text = (storage.path(workdir) / METRICS_FILE).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]
