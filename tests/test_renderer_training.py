"""Renderer training by self-reenactment with the shared trainer: ours (motion_renderer) and the PIRenderer port.

Loss falls, resume is exact, a step on an 8-device fsdp mesh matches data parallel, a trained run exports and
runs from the artifact in a fresh process that never imports the package; the shared losses give renderer and
discriminator exactly their own gradients; the self-reenactment windows carry what the renderers read.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mirrortalk_jax import base_config, safe_paths
from mirrortalk_jax.data import pipeline, schema
from mirrortalk_jax.data.sources import ClipSource
from mirrortalk_jax.data.synthtalk.builder import SYNTHTALK_SPEC
from mirrortalk_jax.export import renderers, runtime
from mirrortalk_jax.models.registry import create_model
from mirrortalk_jax.models.renderer import losses as render_losses
from mirrortalk_jax.objectives import image_reconstruction as rec
from mirrortalk_jax.runs import loader
from mirrortalk_jax.train import trainer
from mirrortalk_jax.train.metrics import read_metrics


def _config(dataset, arg="tiny", **train):
    config = base_config.load_config_file(base_config.config_path("renderer"), arg)
    config.data.dataset_dir = str(dataset)
    config.train.update(dict(batch_size=8, num_steps=20, log_every=1, eval_every=0, checkpoint_every=7,
                             warmup_steps=2, decay_steps=20))
    config.train.update(train)
    return config


def _params(state):
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def _check_fsdp_matches(dp, dataset, tmp_path):
    """The same 3 steps on a 4 x 2 (data, fsdp) mesh of the 8 CPU devices: parameters sharded, same numbers."""
    assert jax.device_count() == 8
    config = _config(dataset, num_steps=3)
    config.mesh.ici_data, config.mesh.ici_fsdp = 4, 2
    fsdp = trainer.train_and_evaluate(config, tmp_path / "fsdp")
    kernel = fsdp.params["res"][0]["a"]["conv"]["kernel"]
    kernel = kernel.value if isinstance(kernel, nnx.Variable) else kernel
    assert tuple(kernel.sharding.spec)[:3] == (None, None, "fsdp")  # logical (conv, conv, embed, mlp)
    losses = [[m["train/loss"] for m in read_metrics(tmp_path / run)][:3] for run in ("split", "fsdp")]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    # Adam divides each gradient by its own running magnitude, so parameters whose gradients are at float noise
    # level (the layers behind the zero-initialised flow head in the first steps) move by up to the learning rate
    # either way; every other parameter agrees closely.
    a, b = (np.concatenate([x.ravel() for x in _params(s)]) for s in (dp, fsdp))
    close = np.isclose(a, b, rtol=2e-4, atol=2e-5)
    assert close.mean() > 0.98, close.mean()
    assert np.abs(a - b).max() <= 3 * config.train.learning_rate


def _early_late(workdir):
    losses = [m["train/loss"] for m in read_metrics(workdir) if "train/loss" in m]
    assert all(np.isfinite(losses))
    return np.mean(losses[:3]), np.mean(losses[-3:])


def test_ours_learns_resumes_exactly_and_an_fsdp_step_matches_data_parallel(micro_dataset, tmp_path):
    straight = trainer.train_and_evaluate(_config(micro_dataset, num_steps=14), tmp_path / "straight")
    early, late = _early_late(tmp_path / "straight")
    assert late < 0.8 * early
    first = trainer.train_and_evaluate(_config(micro_dataset, num_steps=3), tmp_path / "split")
    _check_fsdp_matches(first, micro_dataset, tmp_path)
    resumed = trainer.train_and_evaluate(_config(micro_dataset, num_steps=14), tmp_path / "split")
    for a, b in zip(_params(straight), _params(resumed)):
        np.testing.assert_array_equal(a, b)
    # The run loads as a model that renders (clipped to [-1, 1]) the motion space it was trained on.
    run = loader.load_model(tmp_path / "split")
    assert run.spec == SYNTHTALK_SPEC and run.step == 14
    frames = run.model.render(jnp.zeros((2, 48, 48, 3)), jnp.zeros((2, 18)), jnp.ones((2, 18)))
    assert frames.shape == (2, 48, 48, 3) and float(jnp.abs(frames).max()) <= 1.0


def test_pirenderer_trains_on_a_dataset_motion_space(tiny_dataset, tmp_path):
    config = _config(tiny_dataset, "tiny,pirenderer", num_steps=12)
    # The reference fixture's small widths (0.37 M parameters): the same code at a fraction of the cost.
    config.model.update(descriptor_nc=24, max_nc=16)
    config.model.warping.base_nc = config.model.editing.base_nc = 8
    state = trainer.train_and_evaluate(config, tmp_path)
    early, late = _early_late(tmp_path)
    assert late < 0.8 * early
    # coeff_nc 0 took the dataset's 18 channels: the mapping net's first convolution reads them.
    assert state.params["mapping_net"]["first"]["kernel"].shape[1] == SYNTHTALK_SPEC.dim
    with pytest.raises(ValueError, match="does not match the dataset's motion space"):
        bad = config.model.copy_and_resolve_references()
        bad.coeff_nc = 73
        create_model(bad, SYNTHTALK_SPEC, nnx.Rngs(0))


def test_gan_terms_give_each_network_only_its_own_gradient():
    config = render_losses.default_config(ms_ssim_scales=1, discriminator=(8, 16))
    config.adversarial, config.feature_matching = 0.5, 1.0
    losses = render_losses.RenderLosses(config, nnx.Rngs(0))
    r = np.random.default_rng(0)
    fake = jnp.asarray(r.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
    real = jnp.asarray(r.integers(0, 256, (2, 32, 32, 3)), jnp.uint8)
    weight = jnp.ones(2)
    graphdef, params = nnx.split(losses)

    def total(params, fake):
        return nnx.merge(graphdef, params)(fake, real, weight)[0]

    d_grads, fake_grad = jax.grad(total, argnums=(0, 1))(params, fake)
    critic = nnx.merge(graphdef, params).discriminator
    critic_def, critic_params = nnx.split(critic)
    real_unit = render_losses.to_unit(real)

    def d_loss(p):  # the discriminator's own objective only
        d = nnx.merge(critic_def, p)
        return config.adversarial * rec.gan_discriminator(d(real_unit)[1], d(fake)[1]).mean()

    def g_loss(fake):  # the renderer's objective with the discriminator held fixed
        d = nnx.merge(critic_def, critic_params)
        fm = rec.feature_l1(d(fake)[0], d(real_unit)[0]).mean()
        return (rec.l1(fake, real_unit).mean() + rec.ms_ssim_loss(fake, real_unit, 1).mean()
                + config.adversarial * rec.gan_generator(d(fake)[1]).mean() + config.feature_matching * fm)

    want_d = jax.grad(d_loss)(critic_params)
    chex.assert_trees_all_close(jax.tree.leaves(d_grads["discriminator"]), jax.tree.leaves(want_d), rtol=1e-4,
                                atol=1e-6)
    np.testing.assert_allclose(fake_grad, jax.grad(g_loss)(fake), rtol=1e-4, atol=1e-7)


def test_loss_config_is_checked():
    cfg = render_losses.default_config()
    cfg.feature_matching = 1.0
    with pytest.raises(ValueError, match="set adversarial > 0"):
        render_losses.RenderLosses(cfg, nnx.Rngs(0))
    cfg = render_losses.default_config()
    cfg.l1 = -1.0
    with pytest.raises(ValueError, match=">= 0"):
        render_losses.RenderLosses(cfg, nnx.Rngs(0))
    with pytest.raises(ValueError, match="at least 176 px"):
        rec.ms_ssim_loss(jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 64, 64, 3)), scales=5)


def test_ms_ssim_single_scale_is_gaussian_ssim_and_identical_images_score_zero():
    from skimage.metrics import structural_similarity

    r = np.random.default_rng(1)
    a = r.uniform(0, 1, (40, 40, 3))
    b = np.clip(a + r.normal(0, 0.1, a.shape), 0, 1)
    want = structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True,
                                 use_sample_covariance=False)
    got = 1.0 - float(rec.ms_ssim_loss(jnp.asarray(b[None] * 2 - 1, jnp.float32),
                                       jnp.asarray(a[None] * 2 - 1, jnp.float32), scales=1)[0])
    assert abs(got - want) < 2e-4
    x = jnp.asarray(r.uniform(-1, 1, (2, 48, 48, 3)), jnp.float32)
    np.testing.assert_allclose(rec.ms_ssim_loss(x, x, scales=3), 0.0, atol=1e-5)
    assert float(rec.ms_ssim_loss(x, -x, scales=3).min()) > 0.5


def test_self_reenactment_windows(micro_dataset):
    source = ClipSource(micro_dataset, "train")
    cfg = pipeline.WindowConfig(window_frames=5, reference_frames=4, audio_feature="none", frames="centre",
                                source_frame=True)
    batch = next(iter(pipeline.training_dataset(source, cfg, batch_size=2, seed=0)))
    assert batch["frames"].shape == (2, 1, 48, 48, 3) and batch["source_frame"].shape == (2, 48, 48, 3)
    assert batch["source_motion"].shape == (2, 18)
    for i in range(2):  # the source frame and its motion are one frame of the same clip
        record = source[int(batch["clip_index"][i])]
        match = np.flatnonzero(np.all(record["motion"] == batch["source_motion"][i], axis=1))
        assert len(match) >= 1
        frame = schema.decode_frames(record["frames"][match[0]:match[0] + 1])[0]
        np.testing.assert_array_equal(frame, batch["source_frame"][i])
        centre = int(batch["start_frame"][i]) + 2
        np.testing.assert_array_equal(schema.decode_frames(record["frames"][centre:centre + 1]), batch["frames"][i])
    # Adding frames draws after everything else: the windows themselves do not change.
    plain = next(iter(pipeline.training_dataset(source, pipeline.WindowConfig(
        window_frames=5, reference_frames=4, audio_feature="none"), batch_size=2, seed=0)))
    np.testing.assert_array_equal(plain["motion"], batch["motion"])
    with pytest.raises(ValueError, match="frames must be one of"):
        pipeline.WindowConfig(frames="all")


STANDALONE = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import runtime
    renderer = runtime.load(sys.argv[2])
    inputs = np.load(sys.argv[3])
    out = {f"b{b}": renderer(source_image=inputs["image"][:b], source_motion=inputs["source"][:b],
                             driving_motion=inputs["driving"][:b])["image"] for b in (1, 3)}
    assert not [m for m in sys.modules if m.split(".")[0] in ("mirrortalk_jax", "flax")]
    np.savez(sys.argv[4], **out)
""")


@pytest.fixture(scope="module")
def short_run(micro_dataset, tmp_path_factory):
    """Two steps of ours on the micro corpus: a trained run to export and score."""
    run = tmp_path_factory.mktemp("renderer") / "run"
    trainer.train_and_evaluate(_config(micro_dataset, num_steps=2), run)
    return run


def test_trained_run_exports_and_runs_from_the_artifact_alone(short_run, tmp_path):
    artifact = renderers.export_renderer(short_run, tmp_path / "artifact", platforms=("cpu",))
    manifest = runtime.load(artifact).manifest
    assert manifest["model"] == "motion_renderer" and manifest["source"] == {"training_run": short_run.name, "step": 2}
    assert not [w for w in np.load(artifact / "weights.npz").files if w.startswith("losses/")]  # training-only
    r = np.random.default_rng(0)
    inputs = {"image": r.uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32),
              "source": r.normal(size=(3, 18)).astype(np.float32), "driving": r.normal(size=(3, 18)).astype(np.float32)}
    np.savez(tmp_path / "inputs.npz", **inputs)
    (tmp_path / "run.py").write_text(STANDALONE)
    (tmp_path / "served").mkdir()
    for file in (runtime.__file__, safe_paths.__file__):
        shutil.copy(file, tmp_path / "served")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "served"), str(artifact),
                    str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")], check=True, cwd=tmp_path, timeout=600,
                   env=env)
    model = loader.load_model(short_run).model
    with np.load(tmp_path / "out.npz") as out:
        for b in (1, 3):
            want = model.render(inputs["image"][:b], inputs["source"][:b], inputs["driving"][:b])
            np.testing.assert_allclose(out[f"b{b}"], want, atol=5e-5)


def test_evaluate_renderers_command_scores_a_run_next_to_the_no_motion_floor(micro_dataset, short_run, tmp_path,
                                                                            capsys):
    import json

    from mirrortalk_jax import cli

    args = ["evaluate-renderers", "--dataset_dir", str(micro_dataset), "--splits", "heldout_speakers,train",
            "--landmarks", "none", "--max_clips", "2", "--max_frames", "5", "--batch_size", "4",
            "--out", str(tmp_path / "results")]
    assert cli.main(args + ["--renderer", f"Ours={short_run}"]) == 0
    rows = json.loads((tmp_path / "results" / "renderers.json").read_text())["rows"]
    assert set(rows) == {"heldout_speakers", "train"}
    for split in rows.values():
        assert set(split) == {"Portrait copy (no motion)", "Ours"}
        assert split["Ours"]["frames"] == 10 and 0 < split["Ours"]["ssim"] < 1
        assert split["Ours"]["perceptual"] is None and split["Ours"]["m_lmd"] is None
    assert "| Ours |" in capsys.readouterr().out
    assert cli.main(args + ["--renderer", "Ours"]) == 2
    assert "--renderer takes NAME=RUN_DIR" in capsys.readouterr().err
    assert cli.main(args + ["--renderer", f"Ours={tmp_path / 'missing'}"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_vgg_perceptual_loss_trains_with_the_network_frozen_and_left_out_of_exports(micro_dataset, tmp_path):
    """A VGG19 converted from torchvision-layout weights (random here, at small widths) is the renderer's frozen
    `perceptual_net` part: the term is logged, the network's weights never move, the run reloads without the
    converted folder, and the export leaves it out."""
    from safetensors.numpy import save_file

    from mirrortalk_jax.convert import vgg as convert_vgg

    r = np.random.default_rng(0)
    widths, blocks, tensors, index, in_ch = (8, 8, 16, 16, 16), (2, 2, 4, 4, 4), {}, 0, 3
    for width, size in zip(widths, blocks):  # torchvision's vgg19 `features` indexing at small widths
        for _ in range(size):
            tensors[f"features.{index}.weight"] = (r.standard_normal((width, in_ch, 3, 3))
                                                   * np.sqrt(2 / (9 * in_ch))).astype(np.float32)
            tensors[f"features.{index}.bias"] = np.zeros(width, np.float32)
            index, in_ch = index + 2, width
        index += 1  # the block's max pool
    save_file(tensors, str(tmp_path / "vgg.safetensors"))
    vgg_config = base_config.load_config_file(base_config.config_path("vgg19"), "small").model
    vgg_dir = convert_vgg.convert_checkpoint(tmp_path / "vgg.safetensors", tmp_path / "vgg19", vgg_config)

    config = _config(micro_dataset, num_steps=3)
    config.model.loss.perceptual = 1.0
    with pytest.raises(ValueError, match="needs model.perceptual_net"):
        trainer.train_and_evaluate(config, tmp_path / "no_net")
    config.model.perceptual_net = str(vgg_dir)
    state = trainer.train_and_evaluate(config, tmp_path / "run")
    metrics = [m for m in read_metrics(tmp_path / "run") if "train/perceptual" in m]
    assert len(metrics) == 3 and all(np.isfinite(m["train/perceptual"]) and m["train/perceptual"] > 0 for m in metrics)
    vgg = loader.load_model(vgg_dir).model
    for want, got in zip(jax.tree.leaves(nnx.state(vgg, nnx.Param)), jax.tree.leaves(state.params["perceptual_net"])):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    shutil.rmtree(vgg_dir)  # the run stored the part's config; its weights are in the run's checkpoint
    assert loader.load_model(tmp_path / "run").model.perceptual_net is not None
    artifact = renderers.export_renderer(tmp_path / "run", tmp_path / "artifact", platforms=("cpu",))
    assert not [w for w in np.load(artifact / "weights.npz").files if w.startswith(("perceptual_net/", "losses/"))]


@pytest.mark.slow  # a second PIRenderer run; the default run trains PIRenderer on a dataset space
def test_pirenderer_fine_tunes_converted_weights_on_another_motion_space(tiny_dataset, tmp_path):
    """The converted PIRenderer (the fixture's random weights at its small sizes) set up to fine-tune on SynthTalk's
    18-channel motion: its warping and editing nets and the mapping net's inner layers are loaded (init_from with
    source subtrees, as the trainer loads them into a fresh state), only the mapping net's input layer is fresh."""
    import json as json_lib
    from pathlib import Path

    from mirrortalk_jax.convert import pirenderer as convert_pir
    from mirrortalk_jax.models.pirenderer import renderer as pirenderer
    from mirrortalk_jax.train import mesh as mesh_lib, warm_start
    from mirrortalk_jax.train.compiled import compile_training

    fixture = Path(__file__).parent / "fixtures" / "dreamtalk_renderer"
    conf = json_lib.loads((fixture / "config.json").read_text())["renderer_conf"]
    released = convert_pir.convert_renderer(fixture / "weights.safetensors", tmp_path / "pir",
                                            pirenderer.model_config(conf, image_size=(64, 64)))
    config = _config(tiny_dataset, "tiny,pirenderer", batch_size=8)
    loss = config.model.loss
    config.model = pirenderer.model_config({**conf, "mapping_net": {**conf["mapping_net"], "coeff_nc": 0}},
                                           image_size=(64, 64))
    config.model.loss, config.model.perceptual_net = loss, ""
    subtrees = ("warping_net", "editing_net", "mapping_net/encoder")
    config.train.init_from = tuple((s, str(released), s) for s in subtrees)
    recipe = loader.recipe(config.model, SYNTHTALK_SPEC)
    setup = compile_training(config, recipe.factory, mesh_lib.create_mesh(config.mesh))
    fresh = setup.init(jax.random.key(0))
    state = fresh
    for subtree, run, source_subtree in setup.training.init_from:
        state = warm_start.load_subtree(state, subtree, run, setup.shardings, source_subtree)
    source = nnx.state(loader.load_model(released).model, nnx.Param)
    for subtree in subtrees:
        want, got = source, state.params
        for key in subtree.split("/"):
            want, got = want[key], got[key]
        chex.assert_trees_all_equal(jax.tree.leaves(want), jax.tree.leaves(got))
    first = state.params["mapping_net"]["first"]["kernel"]
    assert first.shape[1] == 18  # fresh, on the dataset's motion width
    np.testing.assert_array_equal(np.asarray(first), np.asarray(fresh.params["mapping_net"]["first"]["kernel"]))
    with pytest.raises(KeyError, match="nothing named 'nothing'"):
        warm_start.load_subtree(fresh, "warping_net", released, setup.shardings, "warping_net/nothing")
    config.train.init_from = (("warping_net",),)
    with pytest.raises(ValueError, match="train.init_from entries are"):
        compile_training(config, recipe.factory, mesh_lib.create_mesh(config.mesh))
