"""Metric writing: JSONL always (process 0), plus clu's TensorBoard writer when the `tensorboard` extra is in.

clu's writers import TensorFlow; it is a 1.3 GB optional extra (`pip install -e .[tensorboard]`), so the plain
JSONL file is the one thing every run can count on. It holds one row per step and prefix: a run resumed from
step S replays the steps after S, so their rows from before the interruption are dropped first.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import numpy as np


class MetricWriter:
    def __init__(self, workdir: str | os.PathLike, *, enabled: bool | None = None, resume_step: int | None = None):
        """`resume_step`: the step the run resumes from (0 for a fresh start); rows after it are dropped."""
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.path = os.path.join(os.fspath(workdir), "metrics.jsonl")
        if self.enabled and resume_step is not None:
            drop_rows_after(self.path, resume_step)
        self._file = open(self.path, "a", encoding="utf-8") if self.enabled else None
        self._clu = None
        if self.enabled:
            try:
                import tensorflow  # noqa: F401  (clu's summary writer needs it)
                from clu import metric_writers
                self._clu = metric_writers.SummaryWriter(os.fspath(workdir))
            except ImportError:
                logging.info("TensorBoard summaries off: install the `tensorboard` extra to get them")

    def write(self, step: int, scalars: dict[str, Any], prefix: str = "") -> None:
        if not self.enabled:
            return
        values = {f"{prefix}{k}": float(np.asarray(v)) for k, v in scalars.items()}
        self._file.write(json.dumps({"step": int(step), **values}) + "\n")
        self._file.flush()
        if self._clu is not None:
            self._clu.write_scalars(int(step), values)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._clu is not None:
            self._clu.close()


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
    path = os.path.join(os.fspath(workdir), "metrics.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
