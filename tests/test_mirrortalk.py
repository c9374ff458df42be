"""MirrorTalk end to end on SynthTalk: staged training with frozen parts, sharded == single device, sampling."""

import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mirrortalk_jax.models import registry
from mirrortalk_jax.sample import compiled
from mirrortalk_jax.sample import diffusion as samplers
from mirrortalk_jax.sample import mirrortalk as mirrortalk_sampling
from mirrortalk_jax.runs import loader
from mirrortalk_jax.train import trainer
from mirrortalk_jax.train.metrics import read_metrics
from tests.test_trainer import ROOT, _load_config

SMALL = dict(hidden=32, num_layers=1, num_heads=2)


def _config(name, dataset, **train):
    config = _load_config(f"mirrortalk_jax/configs/{name}.py", "tiny")
    config.data.dataset_dir = str(dataset)
    config.data.window_frames = 16
    config.data.reference_frames = 24
    config.train.update(dict(batch_size=8, num_steps=4, log_every=1, eval_every=0, checkpoint_every=100,
                             warmup_steps=1))
    config.train.update(train)
    if name == "mirrortalk":
        config.model.update(SMALL)
        config.model.style_encoder.update(hidden=32, num_layers=1, max_frames=24)
    return config


@pytest.fixture(scope="module")
def stage_runs(micro_dataset, tmp_path_factory):
    """Stage 0 (motion expert) and stage 1 (SDSE with the expert as content encoder), a few steps each."""
    root = tmp_path_factory.mktemp("stages")
    expert = _config("motion_expert", micro_dataset)
    trainer.train_and_evaluate(expert, root / "expert")
    sdse = _config("style_encoder", micro_dataset)
    sdse.model.update(hidden=32, num_layers=1, max_frames=24, content_dim=expert.model.embed_dim,
                      content_encoder_workdir=str(root / "expert"))
    trainer.train_and_evaluate(sdse, root / "sdse")
    return root


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_stage2_loads_and_freezes_earlier_stages(micro_dataset, stage_runs, tmp_path):
    config = _config("mirrortalk", micro_dataset)
    config.model.update(style_encoder_workdir=str(stage_runs / "sdse"),
                        motion_expert_workdir=str(stage_runs / "expert"))
    state = trainer.train_and_evaluate(config, tmp_path)
    expert = nnx.state(loader.load_model(stage_runs / "expert").model, nnx.Param)
    sdse = nnx.state(loader.load_model(stage_runs / "sdse").model, nnx.Param)
    for got, want in zip(_leaves(state.params["motion_expert"]), _leaves(expert)):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(_leaves(state.params["style_encoder"]), _leaves(sdse)):
        np.testing.assert_array_equal(got, want)
    metrics = read_metrics(tmp_path)
    assert all(np.isfinite(m["train/sync"]) and m["train/sync"] > 0 for m in metrics)


def test_joint_training_lowers_the_denoising_loss(micro_dataset, tmp_path):
    trainer.train_and_evaluate(_config("mirrortalk", micro_dataset, num_steps=40, learning_rate=2e-3), tmp_path)
    losses = [m["train/denoise"] for m in read_metrics(tmp_path)]
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8])


def test_sharded_step_matches_one_device(micro_dataset, tmp_path):
    """2 steps on a (2, 2, 2) data/fsdp/tensor mesh of 8 CPU devices == 2 steps on 1 device."""
    assert jax.device_count() == 8
    config = _config("mirrortalk", micro_dataset, num_steps=2)
    config.mesh.update(ici_data=2, ici_fsdp=2, ici_tensor=2)
    sharded = trainer.train_and_evaluate(config, tmp_path / "mesh")
    kernel = sharded.params["denoiser"]["blocks"][0]["mlp"]["up"]["kernel"]
    assert kernel.value.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    flags = [f"--config={ROOT}/mirrortalk_jax/configs/mirrortalk.py:tiny", f"--workdir={tmp_path / 'one'}",
             f"--config.data.dataset_dir={micro_dataset}", "--config.data.window_frames=16",
             "--config.data.reference_frames=24", "--config.train.batch_size=8", "--config.train.num_steps=2",
             "--config.train.log_every=1", "--config.train.eval_every=0", "--config.train.warmup_steps=1",
             "--config.model.hidden=32", "--config.model.num_layers=1", "--config.model.num_heads=2",
             "--config.model.style_encoder.hidden=32", "--config.model.style_encoder.num_layers=1",
             "--config.model.style_encoder.max_frames=24"]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    one = subprocess.run(["python", "-m", "mirrortalk_jax.main", *flags], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    np.testing.assert_allclose([m["train/loss"] for m in read_metrics(tmp_path / "mesh")],
                               [m["train/loss"] for m in read_metrics(tmp_path / "one")], rtol=1e-4)
    single = loader.load_model(tmp_path / "one").model
    for got, want in zip(_leaves(sharded.params), _leaves(nnx.state(single, nnx.Param))):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def _model():
    config = _config("mirrortalk", "unused")
    from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
    model = registry.create_model(config.model, SYNTHTALK_SPEC, nnx.Rngs(0))  # the SDSE from its sub-config
    # Leave the adaLN-Zero start (which predicts x0 = 0 whatever the noise) so sampling paths carry signal.
    state = nnx.state(model.denoiser, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(state))))
    nnx.update(model.denoiser, jax.tree.map(lambda p: p + 0.1 * jax.random.normal(next(keys), p.shape), state))
    return model


def test_sampling_is_deterministic_and_chunking_agrees_with_one_shot():
    model = _model()
    b, t = 2, 20
    audio = jax.random.normal(jax.random.key(0), (b, t, 320))
    ref = jax.random.normal(jax.random.key(1), (b, 24, 18))
    ref_mask = jnp.ones((b, 24), bool)
    style = model.style_code(ref, ref_mask)
    a = mirrortalk_sampling.sample(model, audio, style, jax.random.key(2), num_steps=4)
    assert a.shape == (b, t, 18) and np.isfinite(np.asarray(a)).all()
    np.testing.assert_array_equal(a, mirrortalk_sampling.sample(model, audio, style, jax.random.key(2), num_steps=4))
    assert not np.allclose(a, mirrortalk_sampling.sample(model, audio, style, jax.random.key(3), num_steps=4))
    one_shot = mirrortalk_sampling.generate(model, audio, ref, ref_mask, jax.random.key(2), chunk_frames=64, num_steps=4)
    np.testing.assert_allclose(one_shot, a, atol=1e-5)
    long_audio = jax.random.normal(jax.random.key(4), (b, 70, 320))
    long = mirrortalk_sampling.generate(model, long_audio, ref, ref_mask, jax.random.key(5), chunk_frames=16,
                                        overlap_frames=4, num_steps=3)
    assert long.shape == (b, 70, 18) and np.isfinite(np.asarray(long)).all()


def test_guidance_runs_only_the_branches_it_needs():
    model = _model()
    audio = jnp.zeros((1, 8, 320))
    style = jnp.zeros((1, model.style_encoder.encoder.style_head.out_features))
    seen = []
    inner = mirrortalk_sampling.denoise_fn(model)

    def counting(x_t, t, cond, drop_audio, drop_style):
        seen.append(x_t.shape[0])
        return inner(x_t, t, cond, drop_audio, drop_style)

    for guidance, batch in ((samplers.NO_GUIDANCE, 1), (samplers.Guidance(audio_scale=1.0, style_scale=2.0), 2),
                            (samplers.Guidance(audio_scale=2.0, style_scale=2.0), 2),  # the audio-only branch cancels
                            (samplers.Guidance(audio_scale=2.0, style_scale=3.0), 3)):
        seen.clear()
        samplers.sample_ddim(counting, model.schedule(), (1, 8, 18), jax.random.key(0), num_steps=2,
                             cond={"audio": audio, "style": style}, guidance=guidance)
        assert set(seen) == {batch}


def test_dpm_solver_under_jit_and_generation_compiles_once():
    model = _model()
    audio = jax.random.normal(jax.random.key(0), (1, 40, 320))
    ref = jax.random.normal(jax.random.key(1), (1, 24, 18))
    mask = jnp.ones((1, 24), bool)
    first = mirrortalk_sampling.generate(model, audio, ref, mask, jax.random.key(2), chunk_frames=16,
                                         overlap_frames=4, sampler="dpm_solver", num_steps=3)
    assert first.shape == (1, 40, 18) and np.isfinite(np.asarray(first)).all()
    sample_chunk = compiled.jitted(mirrortalk_sampling._sample_chunk, nnx.graphdef(model), num_steps=3,
                                   sampler="dpm_solver")
    programs = sample_chunk._cache_size()
    mirrortalk_sampling.generate(model, audio[:, :30], ref, mask, jax.random.key(3), chunk_frames=16,
                                 overlap_frames=4, sampler="dpm_solver", num_steps=3)
    assert sample_chunk._cache_size() == programs == 1
