"""A checkpoint resumes on another topology: other meshes, and other process counts (the data iterator's
per-process state is converted through the global stream position)."""

import json
import logging
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from mirrortalk_jax.data import pipeline
from mirrortalk_jax.data.sources import ClipSource
from mirrortalk_jax.runs import checkpointing
from mirrortalk_jax.train import mesh as mesh_lib, trainer
from mirrortalk_jax.train.metrics import read_metrics
from tests.test_multiprocess import _env
from tests.test_trainer import ROOT, _config, _params


@pytest.mark.parametrize("saved, n, index, count, want", [
    ({0: 6, 1: 6}, 2, 0, 1, 12),  # 2 processes at element 6 of their strides: global element 12
    ({0: 12}, 1, 0, 2, 6), ({0: 12}, 1, 1, 2, 6),  # and back
    ({0: 12}, 1, 0, 3, 4), ({0: 12}, 1, 2, 3, 4),
    ({0: 5}, 1, 0, 2, 3), ({0: 5}, 1, 1, 2, 2),  # global 5: process 0 resumes at element 6, process 1 at 5
    ({0: 7, 1: 6}, 2, 0, 1, 12),  # uneven (a skipped bad record): the earliest position, nothing is lost
    ({0: 0, 1: 0}, 2, 1, 4, 0),
])
def test_reshard_iterator_state(saved, n, index, count, want):
    state = checkpointing.reshard_iterator_state({i: {"next_index": k} for i, k in saved.items()}, n, index, count)
    assert state == {"next_index": want}


def test_reshard_refuses_states_it_cannot_read():
    assert checkpointing.reshard_iterator_state({0: {"workers_state": {}}}, 2, 0, 1) is None
    assert checkpointing.reshard_iterator_state({}, 2, 0, 1) is None


def _stream(source, index=0, count=1):
    window = pipeline.WindowConfig(window_frames=16)
    return iter(pipeline.training_dataset(source, window, batch_size=4, seed=0, process_index=index,
                                          process_count=count))


def test_iterator_and_state_resume_across_process_counts_and_meshes(micro_dataset, tmp_path, caplog):
    """A checkpoint whose iterator states were written by 2 processes (and whose state sits on one mesh)
    restores in this single process, on another mesh, and continues the same global batch stream."""
    source = ClipSource(micro_dataset, "train")
    reference = _stream(source)
    for _ in range(3):
        next(reference)
    want = [next(reference) for _ in range(2)]
    # Two "processes" each consumed 3 batches of 2 windows: together the same 3 global batches.
    halves = [_stream(source, i, 2) for i in range(2)]
    for it in halves:
        for _ in range(3):
            next(it)

    mesh_a = mesh_lib.create_mesh({"ici_data": 8})
    mesh_b = mesh_lib.create_mesh({"ici_data": 2, "ici_fsdp": 4})
    weights = jax.device_put(jnp.arange(64.0).reshape(8, 8), NamedSharding(mesh_a, P("data")))
    ckpt = checkpointing.Checkpointer(tmp_path / "ckpt", async_save=False)
    ckpt.save(3, {"w": weights}, halves[0], {"config": {}}, force=True)
    ckpt.wait()
    iter_dir = tmp_path / "ckpt" / "3" / "data_iter"
    for f in iter_dir.iterdir():
        f.unlink()
    for i, it in enumerate(halves):
        (iter_dir / f"process_{i}-of-2.json").write_text(json.dumps(it.get_state()))
    checkpointing.write_checksums(tmp_path / "ckpt" / "3", 3)  # re-seal the hand-edited step
    assert sorted(ckpt.saved_iterator_states(3)) == [(0, 2), (1, 2)]

    resumed = _stream(source)
    target = {"w": jax.ShapeDtypeStruct((8, 8), jnp.float32, sharding=NamedSharding(mesh_b, P("fsdp", None)))}
    with caplog.at_level(logging.WARNING):
        restored = ckpt.restore(3, target, resumed)
    ckpt.close()
    assert "written by 2 processes, this run has 1" in caplog.text
    assert restored["w"].sharding.spec == P("fsdp", None)
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(64.0).reshape(8, 8))
    for expected in want:
        got = next(resumed)
        for key in ("clip_index", "start_frame", "motion"):
            np.testing.assert_array_equal(got[key], expected[key])

    # The other way: the single-process position, resumed as process 1 of 2, yields its stride (the odd
    # elements) of the same global batch.
    second = _stream(source, 1, 2)
    second.set_state(checkpointing.reshard_iterator_state({0: {"next_index": 12}}, 1, 1, 2))
    np.testing.assert_array_equal(next(second)["clip_index"], want[0]["clip_index"][1::2])


FLAGS = ["--config=mirrortalk_jax/configs/synthtalk_regression.py:tiny", "--config.data.window_frames=16",
         "--config.train.batch_size=8", "--config.train.log_every=1", "--config.train.eval_every=0",
         "--config.train.checkpoint_every=4", "--config.train.warmup_steps=2", "--config.train.decay_steps=8"]


def _two_processes(workdir, logs, *flags):
    run = subprocess.run(["bash", "launch/local.sh", "2", f"--workdir={workdir}", *FLAGS, *flags], cwd=ROOT,
                         env={**_env(2), "WORKDIR_LOGS": str(logs)}, capture_output=True, text=True, timeout=600)
    text = "".join(p.read_text() for p in sorted(logs.glob("*.log")))
    assert run.returncode == 0, run.stderr + text[-3000:]
    return text


def _losses(workdir):
    return {m["step"]: m["train/loss"] for m in read_metrics(workdir)}


@pytest.mark.slow
def test_checkpoints_move_between_two_processes_and_one(micro_dataset, tmp_path, caplog):
    """2 processes x 2 devices write step 4; 1 process x 8 devices (fsdp=4) resumes it to step 8. And the
    reverse: 1 process writes step 4, 2 processes (fsdp=2) resume it. Both continue exactly like the
    uninterrupted single-process run (same batches, same losses, same parameters)."""
    def config(num_steps, **mesh):
        c = _config(micro_dataset, num_steps=num_steps, checkpoint_every=4, decay_steps=8)
        c.mesh.update(mesh)
        return c

    reference = trainer.train_and_evaluate(config(8), tmp_path / "reference")
    want = _losses(tmp_path / "reference")
    data = f"--config.data.dataset_dir={micro_dataset}"

    # 2 -> 1
    _two_processes(tmp_path / "two_then_one", tmp_path / "logs_a", data, "--config.train.num_steps=4")
    assert sorted(p.name for p in (tmp_path / "two_then_one/checkpoints/4/data_iter").glob("process_*")) == \
        ["process_0-of-2.json", "process_1-of-2.json"]
    with caplog.at_level(logging.WARNING):
        state = trainer.train_and_evaluate(config(8, ici_data=2, ici_fsdp=4), tmp_path / "two_then_one")
    assert "written by 2 processes, this run has 1" in caplog.text
    got = _losses(tmp_path / "two_then_one")
    np.testing.assert_allclose([got[s] for s in range(1, 9)], [want[s] for s in range(1, 9)], rtol=1e-4)
    for a, b in zip(_params(state), _params(reference)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)

    # 1 -> 2
    trainer.train_and_evaluate(config(4), tmp_path / "one_then_two")
    logs = _two_processes(tmp_path / "one_then_two", tmp_path / "logs_b", data, "--config.train.num_steps=8",
                          "--config.mesh.ici_data=2", "--config.mesh.ici_fsdp=2")
    assert "written by 1 processes, this run has 2" in logs
    got = _losses(tmp_path / "one_then_two")
    np.testing.assert_allclose([got[s] for s in range(5, 9)], [want[s] for s in range(5, 9)], rtol=1e-4)
    state = trainer.train_and_evaluate(config(8), tmp_path / "one_then_two")  # restores step 8, trains nothing
    assert int(state.step) == 8
    for a, b in zip(_params(state), _params(reference)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
