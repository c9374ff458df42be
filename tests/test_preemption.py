"""SIGTERM to one process of a multi-process run: every process saves the same step and exits cleanly, and a
restart continues with the losses of an uninterrupted run."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from mirrortalk_jax.train import trainer
from mirrortalk_jax.train.metrics import read_metrics
from mirrortalk_jax.train.preemption import Preemption
from tests.test_multiprocess import _env
from tests.test_trainer import ROOT, _config


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _process_env(port, i, n=2, devices=1):
    return {**_env(devices), "MIRRORTALK_COORDINATOR": f"127.0.0.1:{port}", "MIRRORTALK_NUM_PROCESSES": str(n),
            "MIRRORTALK_PROCESS_ID": str(i)}


def test_single_process_stops_at_once():
    preemption = Preemption(sync_every=5)
    try:
        assert not preemption.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert preemption.should_stop(1)  # one process: no agreement needed, no step skipped
    finally:
        preemption.restore()
    with pytest.raises(ValueError, match="preemption_sync_every"):
        Preemption(sync_every=0)


# Two real processes on a loopback coordinator; process 1 alone is signalled after step 3.
_AGREE = textwrap.dedent("""
    import os, signal, sys
    from mirrortalk_jax.train import distributed
    from mirrortalk_jax.train.preemption import Preemption
    distributed.initialize_from_env()
    import jax
    preemption = Preemption(sync_every=int(sys.argv[1]))
    for step in range(1, 50):
        if step == 3 and jax.process_index() == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        if preemption.should_stop(step):
            break
    print("stopped", step, preemption.requested, flush=True)
""")


@pytest.mark.parametrize("sync_every, stop", [(1, 3), (2, 4)])
def test_processes_agree_on_the_stop_step(sync_every, stop):
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", _AGREE, str(sync_every)], cwd=ROOT, env=_process_env(port, i),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    # Both stop after the same step; only process 1 was signalled.
    assert [out.split()[-3:] for out, _ in outs] == [["stopped", str(stop), "False"], ["stopped", str(stop), "True"]]


def _checkpoint_steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.slow
def test_sigterm_to_one_process_saves_everywhere_and_resumes(micro_dataset, tmp_path):
    flags = [f"--config={ROOT}/mirrortalk_jax/configs/synthtalk_regression.py:tiny", f"--config.data.dataset_dir={micro_dataset}",
             "--config.data.window_frames=16", "--config.train.batch_size=8", "--config.train.log_every=1",
             "--config.train.eval_every=0", "--config.train.checkpoint_every=100000", "--config.train.warmup_steps=2",
             "--config.train.decay_steps=40", "--config.train.preemption_sync_every=2"]
    workdir = tmp_path / "run"
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "mirrortalk_jax.main", f"--workdir={workdir}", *flags,
                               "--config.train.num_steps=100000"], cwd=ROOT, env=_process_env(port, i, devices=2),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.1)
    procs[1].send_signal(signal.SIGTERM)  # only the second process
    errs = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for e in errs]
    stopped = read_metrics(workdir)[-1]["step"]
    assert 3 <= stopped < 100000 and stopped % 2 == 0  # an agreed step (sync every 2 steps)
    assert _checkpoint_steps(workdir) == [stopped]
    assert "SIGTERM reached process(es) [1]" in errs[0]  # process 0 stopped because process 1 was told to

    resume = subprocess.run(["bash", "launch/local.sh", "2", f"--workdir={workdir}", *flags,
                             f"--config.train.num_steps={stopped + 3}"], cwd=ROOT,
                            env={**_env(2), "WORKDIR_LOGS": str(tmp_path / "logs")}, capture_output=True, text=True,
                            timeout=300)
    assert resume.returncode == 0, resume.stderr[-2000:]
    got = {m["step"]: m["train/loss"] for m in read_metrics(workdir)}  # later lines win
    assert sorted(got) == list(range(1, stopped + 4))
    trainer.train_and_evaluate(_config(micro_dataset, num_steps=stopped + 3, decay_steps=40), tmp_path / "straight")
    want = {m["step"]: m["train/loss"] for m in read_metrics(tmp_path / "straight")}
    np.testing.assert_allclose([got[s] for s in sorted(want)], [want[s] for s in sorted(want)], rtol=1e-4)
