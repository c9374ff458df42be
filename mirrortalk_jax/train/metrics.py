"""Metric writing: JSONL always (process 0), plus clu's TensorBoard writer when the `tensorboard` extra is in.

clu's writers import TensorFlow; it is a 1.3 GB optional extra (`pip install -e .[tensorboard]`), so the plain
JSONL file is the one thing every run can count on.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import numpy as np


class MetricWriter:
    def __init__(self, workdir: str | os.PathLike, *, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.path = os.path.join(os.fspath(workdir), "metrics.jsonl")
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


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, float]]:
    path = os.path.join(os.fspath(workdir), "metrics.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
