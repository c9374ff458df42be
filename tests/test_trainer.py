"""The shared trainer on the audio-regression model: learning, sharding, exact resume, preemption, configs."""

import glob
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mirrortalk_jax import base_config
from mirrortalk_jax.train import mesh as mesh_lib
from mirrortalk_jax.train import trainer
from mirrortalk_jax.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_config(path, arg):
    return base_config.load_config_file(os.path.join(ROOT, path), arg)


def _config(dataset, **train):
    config = _load_config("mirrortalk_jax/configs/synthtalk_regression.py", "tiny")
    config.data.dataset_dir = str(dataset)
    config.data.window_frames = 16
    config.train.update(dict(batch_size=8, num_steps=20, log_every=1, eval_every=0, checkpoint_every=10,
                             warmup_steps=2, decay_steps=20))
    config.train.update(train)
    return config


def _params(state):
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def test_loss_decreases(micro_dataset, tmp_path):
    trainer.train_and_evaluate(_config(micro_dataset, num_steps=40), tmp_path)
    losses = [m["train/loss"] for m in read_metrics(tmp_path)]
    assert len(losses) == 40 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_resume_reproduces_the_uninterrupted_run(micro_dataset, tmp_path):
    straight = trainer.train_and_evaluate(_config(micro_dataset), tmp_path / "straight")
    first = trainer.train_and_evaluate(_config(micro_dataset, num_steps=10), tmp_path / "split")
    assert int(first.step) == 10
    resumed = trainer.train_and_evaluate(_config(micro_dataset), tmp_path / "split")
    assert int(resumed.step) == 20
    for a, b in zip(_params(straight), _params(resumed)):
        np.testing.assert_array_equal(a, b)
    want = {m["step"]: m["train/loss"] for m in read_metrics(tmp_path / "straight")}
    got = {m["step"]: m["train/loss"] for m in read_metrics(tmp_path / "split")}
    assert got == want  # same batches in the same order after resuming: the iterator state was restored


def test_fsdp_mesh_shards_parameters_and_matches_data_parallel(micro_dataset, tmp_path):
    assert jax.device_count() == 8
    dp = trainer.train_and_evaluate(_config(micro_dataset, num_steps=5), tmp_path / "dp")
    config = _config(micro_dataset, num_steps=5)
    config.mesh.ici_data, config.mesh.ici_fsdp = 4, 2
    fsdp = trainer.train_and_evaluate(config, tmp_path / "fsdp")
    kernel = fsdp.params["audio_in"]["kernel"]
    kernel = kernel.value if isinstance(kernel, nnx.Variable) else kernel
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp")  # logical ("audio", "embed")
    for a, b in zip(_params(dp), _params(fsdp)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_mesh_config_errors():
    cfg = {"ici_data": 3, "ici_fsdp": -1, "ici_tensor": 1}
    with pytest.raises(ValueError, match="does not divide"):
        mesh_lib.create_mesh(cfg)
    with pytest.raises(ValueError, match="at most one"):
        mesh_lib.create_mesh({"ici_data": -1, "ici_fsdp": -1})
    mesh = mesh_lib.create_mesh({"ici_data": 2, "ici_fsdp": 2, "ici_tensor": 2})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}


def test_batch_size_must_fit_the_mesh(micro_dataset, tmp_path):
    with pytest.raises(ValueError, match="must divide by the data\\*fsdp mesh size 8"):
        trainer.train_and_evaluate(_config(micro_dataset, batch_size=4), tmp_path)


def test_the_logical_batch_rule_places_batches(micro_dataset, tmp_path):
    """The rules' "batch" entry, not a hard-coded pair of axes, says where batches are split: on a 4 x 2
    (data, fsdp) mesh with batch -> data only, a batch of 4 trains, split 4 ways and repeated over fsdp."""
    config = _config(micro_dataset, batch_size=4, num_steps=2)
    config.mesh.ici_data, config.mesh.ici_fsdp = 4, 2
    config.mesh.logical_axis_rules = [[name, axes] for name, axes in mesh_lib.DEFAULT_RULES if name != "batch"]
    with pytest.raises(ValueError, match="no 'batch' entry"):
        trainer.train_and_evaluate(config, tmp_path / "none")
    config.mesh.logical_axis_rules = [["batch", ["data"]], *config.mesh.logical_axis_rules]
    from mirrortalk_jax.data.sources import ClipSource
    from mirrortalk_jax.runs import loader
    from mirrortalk_jax.train.compiled import compile_training

    state = trainer.train_and_evaluate(config, tmp_path / "data_only")
    assert int(state.step) == 2 and np.isfinite(read_metrics(tmp_path / "data_only")[-1]["train/loss"])
    spec = ClipSource(micro_dataset, "train").spec
    setup = compile_training(config, loader.recipe(config.model, spec).factory, mesh_lib.create_mesh(config.mesh))
    assert setup.batch_axes == ("data",)
    assert setup.batch_sharding.spec == jax.sharding.PartitionSpec(("data",))


def test_sigterm_saves_and_exits_cleanly(micro_dataset, tmp_path):
    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "mirrortalk_jax.main", f"--config={ROOT}/mirrortalk_jax/configs/synthtalk_regression.py:tiny",
           f"--workdir={workdir}", f"--config.data.dataset_dir={micro_dataset}", "--config.train.num_steps=100000",
           "--config.train.log_every=1", "--config.train.eval_every=0", "--config.train.checkpoint_every=100000"]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    steps = sorted(int(os.path.basename(p)) for p in glob.glob(str(workdir / "checkpoints" / "[0-9]*")))
    last_logged = read_metrics(workdir)[-1]["step"]
    assert steps and steps[-1] == last_logged and 3 <= last_logged < 100000


def test_every_config_loads_and_documents_its_command():
    for path in sorted(glob.glob(os.path.join(ROOT, "mirrortalk_jax", "configs", "**", "[!_]*.py"), recursive=True)):
        doc = open(path).read().split('"""')[1]
        # Frozen ports of released models (evaluation only) document their converter command instead.
        frozen = "python tools/convert_" in doc
        assert frozen or "python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/" in doc, path
        if frozen:  # no training section: the model is built from converted weights
            assert _load_config(os.path.relpath(path, ROOT), None).model.name, path
            continue
        for variant in ("tiny", None):
            config = _load_config(os.path.relpath(path, ROOT), variant)
            assert config.model.name and config.train.num_steps > 0


def test_load_model_and_init_from_a_trained_run(micro_dataset, tmp_path):
    from mirrortalk_jax.runs import loader

    trained = trainer.train_and_evaluate(_config(micro_dataset, num_steps=10), tmp_path / "first")
    run = loader.load_model(tmp_path / "first")
    assert run.step == 10 and run.spec.name == "synthtalk_v1" and run.config.model.name == "audio_regression"
    for a, b in zip(_params(trained), jax.tree.leaves(nnx.state(run.model, nnx.Param))):
        np.testing.assert_array_equal(a, np.asarray(b))
    # A fresh run whose init_from points at the trained run starts from its weights; a frozen group stays put.
    config = _config(micro_dataset, num_steps=3, init_from=(("", str(tmp_path / "first")),),
                     param_groups=(("audio_in/.*", 0.0),))
    second = trainer.train_and_evaluate(config, tmp_path / "second")
    np.testing.assert_array_equal(np.asarray(second.params["audio_in"]["kernel"]),
                                  np.asarray(trained.params["audio_in"]["kernel"]))
    assert not np.array_equal(np.asarray(second.params["motion_out"]["kernel"]),
                              np.asarray(trained.params["motion_out"]["kernel"]))
    # Resuming a run with a frozen group (its optimizer state holds empty MaskedNodes) works too.
    config.train.num_steps = 5
    resumed = trainer.train_and_evaluate(config, tmp_path / "second")
    assert int(resumed.step) == 5
    np.testing.assert_array_equal(np.asarray(resumed.params["audio_in"]["kernel"]),
                                  np.asarray(trained.params["audio_in"]["kernel"]))
    bad = _config(micro_dataset, num_steps=1, init_from=(("blocks", str(tmp_path / "first")),))
    with pytest.raises(ValueError, match="does not fit parameter subtree 'blocks'"):
        trainer.train_and_evaluate(bad, tmp_path / "third")
    with pytest.raises(FileNotFoundError, match="nowhere: no such folder"):
        loader.load_model(tmp_path / "nowhere")


class _Flaky(nnx.Module):
    """Regression loss that is NaN on batches whose first window comes from an even clip (or always)."""

    def __init__(self, config, spec, rngs):
        from mirrortalk_jax.models.baselines.regression import AudioMotionRegressor
        self.inner = AudioMotionRegressor(320, spec.dim, 16, 1, 3, rngs)
        self.always = bool(config.always)

    def loss(self, batch, rng, train):
        loss, metrics = self.inner.loss(batch, rng, train)
        bad = True if self.always else batch["clip_index"][0] % 2 == 0
        return jnp.where(bad, jnp.nan, loss), metrics


def test_nonfinite_steps_are_skipped_counted_and_stop_the_run(micro_dataset, tmp_path):
    from mirrortalk_jax.models import registry
    if "flaky_test_model" not in registry._ENTRIES:
        registry.register("flaky_test_model")(_Flaky)
    config = _config(micro_dataset, num_steps=12, max_nonfinite_streak=13)
    config.model.name = "flaky_test_model"
    config.model.always = False
    state = trainer.train_and_evaluate(config, tmp_path / "some")
    skipped = int(state.nonfinite_total)
    assert 0 < skipped < 12 and all(np.isfinite(p).all() for p in _params(state))
    assert sum(m["train/skipped"] for m in read_metrics(tmp_path / "some")) == skipped
    config.model.always = True
    config.train.max_nonfinite_streak = 4
    with pytest.raises(FloatingPointError, match="4 consecutive steps"):
        trainer.train_and_evaluate(config, tmp_path / "always")


def test_killed_run_resumes_with_the_same_losses(micro_dataset, tmp_path):
    """SIGKILL mid-run (no chance to save), restart: the run continues from the last checkpoint and every
    loss from there on equals the uninterrupted run's."""
    flags = [f"--config={ROOT}/mirrortalk_jax/configs/synthtalk_regression.py:tiny", f"--config.data.dataset_dir={micro_dataset}",
             "--config.data.window_frames=16", "--config.train.batch_size=8", "--config.train.num_steps=30",
             "--config.train.log_every=1", "--config.train.eval_every=0", "--config.train.checkpoint_every=4",
             "--config.train.decay_steps=30", "--config.train.warmup_steps=2"]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    run = lambda workdir: [sys.executable, "-m", "mirrortalk_jax.main", f"--workdir={workdir}", *flags]  # noqa: E731
    subprocess.run(run(tmp_path / "straight"), env=env, check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(run(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 10):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    saved = [int(p.name) for p in (tmp_path / "killed" / "checkpoints").iterdir() if p.name.isdigit()]
    assert saved and max(saved) < 30  # killed mid-run, after at least one checkpoint
    subprocess.run(run(tmp_path / "killed"), env=env, check=True, capture_output=True, timeout=300)
    want = {m["step"]: m["train/loss"] for m in read_metrics(tmp_path / "straight")}
    got = {m["step"]: m["train/loss"] for m in read_metrics(tmp_path / "killed")}  # later lines win
    assert got == want


def _events(workdir) -> dict[str, list]:
    """tag -> [(step, scalar value or decoded image frames)] from the TensorBoard event files under `workdir`."""
    import io
    import struct

    from PIL import Image, ImageSequence
    from tensorboardX.proto.event_pb2 import Event

    found: dict[str, list] = {}
    for path in sorted(glob.glob(os.path.join(str(workdir), "events.out.tfevents.*"))):
        data = open(path, "rb").read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4  # length, its crc, the record, its crc
            for value in event.summary.value:
                if value.HasField("image"):
                    image = Image.open(io.BytesIO(value.image.encoded_image_string))
                    item = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(image)]
                else:
                    item = value.simple_value
                found.setdefault(value.tag, []).append((event.step, item))
    return found


def test_tensorboard_events_parameter_overview_and_a_profile_without_tensorflow(micro_dataset, tmp_path):
    trainer.train_and_evaluate(_config(micro_dataset, num_steps=4, profile=(2, 2)), tmp_path)
    events = _events(tmp_path)
    assert [step for step, _ in events["train/loss"]] == [1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in events["train/loss"]],
                               [m["train/loss"] for m in read_metrics(tmp_path)], rtol=1e-6)
    assert {"train/steps_per_s", "train/eta_s"} <= set(events)
    overview = (tmp_path / "parameters.txt").read_text()
    assert "Total" in overview and "kernel" in overview
    assert glob.glob(str(tmp_path / "profile" / "**" / "*.xplane.pb"), recursive=True)  # the traced steps

    from mirrortalk_jax.train.metrics import MetricWriter

    writer = MetricWriter(tmp_path / "media", enabled=True)
    frames = np.random.RandomState(0).randint(0, 255, (5, 16, 24, 3)).astype(np.uint8)
    writer.write_video(7, "eval/preview", frames, fps=25)
    writer.write_images(7, {"eval/portraits": frames[:2]})
    with pytest.raises(ValueError, match="eval/bad"):
        writer.write_video(7, "eval/bad", frames.astype(np.float32), fps=25)
    writer.close()
    media = _events(tmp_path / "media")
    assert media["eval/preview"][0][0] == 7 and len(media["eval/preview"][0][1]) == 5  # an animated GIF of 5 frames
    assert media["eval/portraits"][0][1][0].shape == (16, 48, 3)  # two images side by side
