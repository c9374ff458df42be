"""Multi-process start-up: initialise JAX's distributed runtime from the environment.

- Explicit (local multi-process, GPU clusters, any launcher): MIRRORTALK_COORDINATOR=host:port,
  MIRRORTALK_NUM_PROCESSES=N, MIRRORTALK_PROCESS_ID=i (see launch/local.sh).
- Slurm (SLURM_NTASKS > 1) and Cloud TPU pods (TPU_WORKER_HOSTNAMES with several hosts): JAX detects the
  cluster itself, so a plain `jax.distributed.initialize()`.
- Anything else is a single process and needs nothing.
"""

from __future__ import annotations

import logging
import os

import jax


def cluster_kind(env: dict[str, str] | None = None) -> str:
    """'explicit', 'slurm', 'tpu_pod' or 'single' for the given environment (default: os.environ)."""
    env = os.environ if env is None else env
    if env.get("MIRRORTALK_COORDINATOR"):
        return "explicit"
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return "slurm"
    if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
        return "tpu_pod"
    return "single"


def initialize_from_env() -> None:
    """Initialises jax.distributed when the environment describes a multi-process job; else does nothing."""
    kind = cluster_kind()
    if kind == "single":
        return
    if kind == "explicit":
        try:
            num_processes = int(os.environ["MIRRORTALK_NUM_PROCESSES"])
            process_id = int(os.environ["MIRRORTALK_PROCESS_ID"])
        except (KeyError, ValueError) as e:
            raise ValueError("MIRRORTALK_COORDINATOR is set, so MIRRORTALK_NUM_PROCESSES and "
                             f"MIRRORTALK_PROCESS_ID must be integers too ({e})") from e
        jax.distributed.initialize(coordinator_address=os.environ["MIRRORTALK_COORDINATOR"],
                                   num_processes=num_processes, process_id=process_id)
    else:
        jax.distributed.initialize()
    logging.info("process %d of %d (%s), %d local / %d global devices", jax.process_index(), jax.process_count(),
                 kind, jax.local_device_count(), jax.device_count())
