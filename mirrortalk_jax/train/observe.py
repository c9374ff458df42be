"""What the trainer reports about itself besides metrics: clu's parameter overview at start, a jax.profiler trace of
chosen steps, and progress (steps/s, ETA). clu's periodic actions import TensorFlow through its metric writers, so
the progress report and profiler hook are these few lines instead (clu's parameter_overview needs no TensorFlow).

    print(observe.parameter_overview(state.params))          # also written to WORKDIR/parameters.txt
    profiler = observe.Profiler(workdir / "profile", start=10, steps=5)   # train.profile = (10, 5)
    profiler.before(step); ...step...; profiler.after(step, state)
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
from clu import parameter_overview as clu_overview
from flax import nnx

from mirrortalk_jax import storage


def parameter_overview(params: Any) -> str:
    """clu's table of every parameter (name, shape, size, mean, std) and the total, for an nnx.State or pytree."""
    tree = nnx.to_pure_dict(params) if isinstance(params, nnx.State) else params
    return clu_overview.get_parameter_overview(tree, include_stats=False)


class Profiler:
    """A jax.profiler trace (TensorBoard's profile plugin, Perfetto) of `steps` steps from step `start` into
    `logdir`; start 0 or steps 0: off. Process 0 only."""

    def __init__(self, logdir: str | os.PathLike, start: int = 0, steps: int = 0):
        self.logdir, self.start, self.steps = storage.path(logdir), int(start), int(steps)
        self.enabled = self.start > 0 and self.steps > 0 and jax.process_index() == 0
        self.active = False
        self._mirror: storage.Mirror | None = None  # the profiler writes local files; uploaded when it stops

    def before(self, step: int) -> None:
        if self.enabled and step == self.start:
            self._mirror = storage.Mirror(self.logdir)
            jax.profiler.start_trace(os.fspath(self._mirror.local))
            self.active = True

    def after(self, step: int, result: Any) -> None:
        if self.active and step >= self.start + self.steps - 1:
            jax.block_until_ready(result)  # the traced steps' device work belongs in the trace
            self._stop()
            logging.info("profile of steps %d-%d written to %s", self.start, step, self.logdir)

    def close(self) -> None:
        if self.active:
            self._stop()

    def _stop(self) -> None:
        jax.profiler.stop_trace()
        self.active = False
        self._mirror.close()


class Progress:
    """Steps/s and the ETA since the last report (what clu's ReportProgress logs)."""

    def __init__(self, start_step: int, num_steps: int):
        self.num_steps = num_steps
        self._last = (time.perf_counter(), start_step)

    def report(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        then, last_step = self._last
        rate = (step - last_step) / max(now - then, 1e-9)
        self._last = (now, step)
        return {"steps_per_s": rate, "eta_s": (self.num_steps - step) / max(rate, 1e-9)}
