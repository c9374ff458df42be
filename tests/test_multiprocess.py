"""Real multi-process training on loopback (launch/local.sh): 2 processes x 2 devices == 1 process x 4 devices."""

import os
import subprocess

import numpy as np
import pytest

from mirrortalk_jax.train import distributed
from mirrortalk_jax.train.metrics import read_metrics
from tests.test_trainer import ROOT

FLAGS = ["--config=mirrortalk_jax/configs/synthtalk_regression.py:tiny", "--config.train.num_steps=6", "--config.train.log_every=1",
         "--config.train.eval_every=0", "--config.train.checkpoint_every=3", "--config.train.warmup_steps=2",
         "--config.data.window_frames=16"]


def _env(devices):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRRORTALK_")}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["DEVICES_PER_PROCESS"] = str(devices)
    return env


def test_two_processes_match_one(micro_dataset, tmp_path):
    data = f"--config.data.dataset_dir={micro_dataset}"
    two = subprocess.run(["bash", "launch/local.sh", "2", f"--workdir={tmp_path / 'two'}", *FLAGS, data],
                         cwd=ROOT, env={**_env(2), "WORKDIR_LOGS": str(tmp_path / "logs")},
                         capture_output=True, text=True, timeout=300)
    logs = "".join(p.read_text()[-1500:] for p in sorted((tmp_path / "logs").glob("*.log")))
    assert two.returncode == 0, two.stderr + logs
    one = subprocess.run(["python", "-m", "mirrortalk_jax.main", f"--workdir={tmp_path / 'one'}", *FLAGS, data],
                         cwd=ROOT, env=_env(4), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    loss_two = [m["train/loss"] for m in read_metrics(tmp_path / "two")]
    loss_one = [m["train/loss"] for m in read_metrics(tmp_path / "one")]
    assert len(loss_one) == 6
    np.testing.assert_allclose(loss_two, loss_one, rtol=1e-4)
    # Both processes wrote their own iterator state into the shared checkpoint.
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints" / "6" / "data_iter").glob("process_*")) == \
        ["process_0-of-2.json", "process_1-of-2.json"]


def test_launcher_stops_everything_when_one_process_fails(tmp_path):
    bad = subprocess.run(["bash", "launch/local.sh", "2", "--config=mirrortalk_jax/configs/does_not_exist.py",
                          f"--workdir={tmp_path}"], cwd=ROOT, env={**_env(1), "WORKDIR_LOGS": str(tmp_path / "logs")},
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "failed" in bad.stderr


@pytest.mark.parametrize("env, kind", [
    ({}, "single"),
    ({"MIRRORTALK_COORDINATOR": "127.0.0.1:1234"}, "explicit"),
    ({"SLURM_NTASKS": "8"}, "slurm"),
    ({"SLURM_NTASKS": "1"}, "single"),
    ({"TPU_WORKER_HOSTNAMES": "a,b,c,d"}, "tpu_pod"),
    ({"TPU_WORKER_HOSTNAMES": "localhost"}, "single"),
])
def test_cluster_detection(env, kind):
    assert distributed.cluster_kind(env) == kind
