"""SIGTERM -> one coordinated stop of every process, so the run saves a checkpoint and exits cleanly.

A scheduler or a preempted VM signals processes one by one (or only one of them). A process that stopped on
its own would call the (collective) checkpoint save while the others are inside the next train step: the job
hangs until the coordinator times out. So the flag is only a local request; every `sync_every` steps the
processes all-gather their flags (a few bytes through the same collectives as training) and all stop after
the same step when any of them was asked to.
"""

from __future__ import annotations

import logging
import signal

import jax
import numpy as np
from jax.experimental import multihost_utils


class Preemption:
    """Turns SIGTERM into a stop that every process of the run agrees on; `restore()` the old handler after."""

    def __init__(self, sync_every: int = 1):
        if sync_every < 1:
            raise ValueError(f"train.preemption_sync_every must be >= 1, got {sync_every}")
        self.sync_every = sync_every
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum, frame) -> None:
        logging.warning("SIGTERM received by process %d: the run saves a checkpoint and stops at the next "
                        "agreed step", jax.process_index())
        self.requested = True

    def should_stop(self, step: int) -> bool:
        """Whether every process stops after `step`. Called by all processes at every step (a collective
        every `sync_every` steps when there are several processes)."""
        if jax.process_count() == 1:
            return self.requested
        if step % self.sync_every:
            return False
        flags = multihost_utils.process_allgather(np.asarray([self.requested], np.int32))
        if np.any(flags):
            logging.warning("stopping after step %d: SIGTERM reached process(es) %s", step,
                            np.flatnonzero(np.asarray(flags).reshape(-1)).tolist())
            return True
        return False
