"""The pod path for real on a Cloud Storage emulator (tests/gcs_emulator.py): a gs:// workdir and a gs:// dataset
for a run stopped and resumed, for a 2-process run (the flags launch/tpu.sh gives its workers), and for loading
the trained run back."""

import os
import shlex
import subprocess

import chex
import jax
import numpy as np
import pytest
from flax import nnx

from mirrortalk_jax import storage
from mirrortalk_jax.runs import loader
from mirrortalk_jax.train import trainer
from mirrortalk_jax.train.metrics import read_metrics
from tests.test_multiprocess import FLAGS, _env
from tests.test_trainer import ROOT, _config, _params


@pytest.fixture(scope="module")
def gcs_dataset(gcs, micro_dataset):
    """The micro SynthTalk build uploaded to the emulator."""
    uri = f"{gcs}/data/synthtalk_micro"
    storage.copy_folder(micro_dataset, uri)
    return uri


def test_run_with_gs_workdir_and_dataset_stops_resumes_and_loads(gcs, gcs_dataset, micro_dataset, tmp_path,
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)  # a mangled URI would show up here as a local folder "gs:"
    monkeypatch.setenv("MIRRORTALK_CACHE_DIR", str(tmp_path / "cache"))
    workdir = f"{gcs}/runs/resumed"
    first = trainer.train_and_evaluate(_config(gcs_dataset, num_steps=10), workdir)
    assert int(first.step) == 10
    resumed = trainer.train_and_evaluate(_config(gcs_dataset), workdir)
    assert int(resumed.step) == 20
    assert not (tmp_path / "gs:").exists()

    # The same run on local paths: the remote one stopped and resumed matches it exactly.
    straight = trainer.train_and_evaluate(_config(micro_dataset), tmp_path / "straight")
    for a, b in zip(_params(straight), _params(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    losses = {m["step"]: m["train/loss"] for m in read_metrics(workdir)}  # read back from the bucket
    assert sorted(losses) == list(range(1, 21))
    want = {m["step"]: m["train/loss"] for m in read_metrics(tmp_path / "straight")}
    np.testing.assert_allclose([losses[s] for s in range(1, 21)], [want[s] for s in range(1, 21)], rtol=1e-6)

    # Everything a run writes is in the bucket: checkpoints sealed with checksums, TensorBoard events, overview.
    root = storage.path(workdir)
    assert (root / "checkpoints" / "20" / "checksums.json").exists()
    assert any(p.name.startswith("events.out.tfevents") for p in root.iterdir())
    assert "Total" in (root / "parameters.txt").read_text()
    # The shards were copied to the local cache once, and read there.
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*array_record*"))

    # Generation and warm starts read the run from the bucket.
    run = loader.load_model(workdir)
    assert run.step == 20
    chex.assert_trees_all_equal(_params(resumed), [np.asarray(x) for x in jax.tree.leaves(nnx.state(run.model, nnx.Param))])
    warm = trainer.train_and_evaluate(_config(micro_dataset, num_steps=1, init_from=(("", workdir),),
                                              param_groups=(("audio_in/.*", 0.0),)), tmp_path / "warm")
    np.testing.assert_array_equal(np.asarray(warm.params["audio_in"]["kernel"]),
                                  np.asarray(resumed.params["audio_in"]["kernel"]))


def test_tpu_launcher_flags_drive_a_two_process_run_on_gcs(gcs, gcs_dataset, tmp_path):
    """launch/tpu.sh's dry run prints the command every worker runs; its flags (gs:// workdir and dataset) then
    train with 2 processes on loopback (launch/local.sh) against the emulator."""
    workdir = f"{gcs}/runs/two_processes"
    flags = [*FLAGS, f"--config.data.dataset_dir={gcs_dataset}", f"--workdir={workdir}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TPU_", "MIRRORTALK_"))}
    dry = subprocess.run(["bash", "launch/tpu.sh", *flags], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**env, "DRY_RUN": "1", "TPU_NAME": "mt", "ZONE": "z", "ACCELERATOR": "v5p-16",
                              "RUNTIME": "v2-alpha-tpuv5", "NUM_WORKERS": "2"})
    assert dry.returncode == 0, dry.stderr
    workers = [line for line in dry.stdout.splitlines() if "mirrortalk_jax.main" in line]
    assert len(workers) == 2
    command = next(a for a in shlex.split(workers[0]) if a.startswith("--command="))[len("--command="):]
    forwarded = shlex.split(command.split("mirrortalk_jax.main", 1)[1])
    assert forwarded == flags  # the URIs reach the workers unchanged

    two = subprocess.run(["bash", "launch/local.sh", "2", *forwarded], cwd=ROOT, capture_output=True, text=True,
                         timeout=400, env={**_env(2), "WORKDIR_LOGS": str(tmp_path / "logs"),
                                           "MIRRORTALK_CACHE_DIR": str(tmp_path / "cache")})
    logs = "".join(p.read_text()[-1500:] for p in sorted((tmp_path / "logs").glob("*.log")))
    assert two.returncode == 0, two.stderr[-2000:] + logs
    losses = [m["train/loss"] for m in read_metrics(workdir)]
    assert len(losses) == 6 and np.all(np.isfinite(losses))
    data_iter = storage.path(workdir) / "checkpoints" / "6" / "data_iter"
    # Both processes wrote their iterator state (next to Orbax's commit marker, which stands in for a rename).
    assert sorted(p.name for p in data_iter.iterdir() if p.name.startswith("process_")) == \
        ["process_0-of-2.json", "process_1-of-2.json"]


def test_prepare_reads_videos_from_gs_and_publishes_a_dataset_there(gcs, tmp_path, monkeypatch):
    """A real photo talking with espeak speech, in a gs:// folder, prepared into a gs:// dataset that ClipSource
    reads back (its shards through the local cache)."""
    from mirrortalk_jax.data import schema
    from mirrortalk_jax.data.prepare import builders
    from mirrortalk_jax.data.sources import ClipSource
    from tests import real_videos
    from tests.test_prepare import SETTINGS

    monkeypatch.setenv("MIRRORTALK_CACHE_DIR", str(tmp_path / "cache"))
    video = real_videos.talking_video(tmp_path / "astronaut talks.mp4", seconds=3.2)
    storage.copy_file(video, f"{gcs}/raw/speaker_a/{video.name}")
    out = f"{gcs}/data/prepared"
    report = builders.prepare([f"{gcs}/raw"], out, SETTINGS, log=lambda _: None)
    assert report["counts"]["ok"] == 1, report["entries"]
    assert (storage.path(out) / "dataset_info.json").exists() and (storage.path(out) / "prepare_report.json").exists()
    source = ClipSource(out, "train")
    assert source.remote and len(source) >= 1
    record = source[0]
    assert schema.decode_frames(record["frames"]).shape[1:] == (128, 128, 3) and record["audio"].size > 0
    # Re-running resumes from the local cache and publishes again.
    again = builders.prepare([f"{gcs}/raw"], out, SETTINGS, log=lambda _: None)
    assert again["counts"] == report["counts"]
