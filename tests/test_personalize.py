"""Personalization (`mirrortalk personalize`) of both renderers on real material: a base renderer trained on a
talking video of scikit-image's astronaut (espeak speech), adapted to a second, longer video of her."""

import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mirrortalk_jax import base_config, cli
from mirrortalk_jax.configs import renderer as renderer_configs
from mirrortalk_jax.data import video
from mirrortalk_jax.data.prepare import builders, dataset, motion_space
from mirrortalk_jax.data.sources import ClipSource
from mirrortalk_jax.export import runtime
from mirrortalk_jax.models import registry
from mirrortalk_jax.models.nn import layers, lora
from mirrortalk_jax.models.renderer import personalized
from mirrortalk_jax.runs import loader
from mirrortalk_jax.train import personalize, trainer
from tests import real_videos

SPEC = motion_space.motion_spec("test_mesh", 4, 2)
KINDS = {"ours": "renderer", "pirenderer": "pirenderer"}


def _random_frame(seed: int = 0) -> np.ndarray:
    return (np.random.RandomState(seed).rand(64, 64, 3) * 255).astype(np.uint8)


@pytest.mark.parametrize("option", ["tiny", "tiny,pirenderer"])
def test_adapters_start_at_the_base_and_merging_changes_no_output(option):
    base_config_ = renderer_configs.get_config(option).model
    base = registry.create_model(base_config_, SPEC, nnx.Rngs(0))
    config = personalized.default_config(base_config_, rank=2, static=False)
    model = registry.create_model(config, SPEC, nnx.Rngs(1), renderer=registry.create_model(base_config_, SPEC,
                                                                                          nnx.Rngs(0)))
    source = jnp.asarray(_random_frame())[None].repeat(3, 0) / 127.5 - 1.0
    motion = jnp.asarray(np.random.RandomState(1).randn(30, SPEC.dim), jnp.float32)
    driving = model.driving(motion, 0, 3)
    start = model.render_frames(source, motion[:3], driving)
    np.testing.assert_allclose(start, base.render_frames(source, motion[:3], driving), atol=1e-6)  # B = 0
    # Trainable: only the adapters (the base's weights are Frozen: no gradient, no optimizer state).
    trainable = {p[0] for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert trainable == {"lora"}
    assert all(isinstance(v, layers.Frozen) for p, v in nnx.to_flat_state(nnx.state(model.renderer))
               if p[-1] == "kernel" and p[0] not in ("losses", "perceptual_net"))
    for adapter in model.lora:
        adapter.lora_b[...] = 0.02 * jnp.ones_like(adapter.lora_b[...])
    adapted = model.render_frames(source, motion[:3], driving)
    assert float(jnp.abs(adapted - start).max()) > 1e-3  # the adapters change the output ...
    merged, merged_config = personalized.merged(model, config)
    assert merged_config.name == base_config_.name and type(merged) is type(base)  # ... a plain renderer again
    np.testing.assert_allclose(merged.render_frames(source, motion[:3], driving), adapted, atol=1e-5)
    for path, var in nnx.to_flat_state(nnx.state(base)):  # the base module itself is untouched
        if path[-1] == "kernel" and path[0] != "losses":
            np.testing.assert_array_equal(var.get_value(), dict(nnx.to_flat_state(nnx.state(model.renderer)))[
                path].get_value())


def test_lora_targets_select_kernels_and_a_bad_pattern_is_refused():
    base_config_ = renderer_configs.get_config("tiny").model
    base = registry.create_model(base_config_, SPEC, nnx.Rngs(0))
    flow_only = lora.kernel_paths(base, ("flow/.*",), exclude=("losses",))
    assert flow_only and all(p[0] == "flow" for p in flow_only)
    everything = lora.kernel_paths(base, (".*",), exclude=("losses",))
    assert set(flow_only) < set(everything)
    config = personalized.default_config(base_config_, targets=("no_such_layer/.*",))
    with pytest.raises(ValueError, match="match no kernel"):
        registry.create_model(config, SPEC, nnx.Rngs(1), renderer=base)


def test_the_static_appearance_is_the_one_shot_encoding_and_replaces_the_portrait():
    base_config_ = renderer_configs.get_config("tiny").model
    base = registry.create_model(base_config_, SPEC, nnx.Rngs(0))
    config = personalized.default_config(base_config_, rank=0, static=True)
    model = registry.create_model(config, SPEC, nnx.Rngs(1), renderer=registry.create_model(base_config_, SPEC,
                                                                                          nnx.Rngs(0)))
    frame, motion = _random_frame(), np.random.RandomState(2).randn(8, SPEC.dim).astype(np.float32)
    model.set_appearance(frame, motion[0])
    portrait = jnp.asarray(frame)[None].repeat(8, 0) / 127.5 - 1.0
    one_shot = base.render_frames(portrait, jnp.repeat(jnp.asarray(motion[:1]), 8, 0), jnp.asarray(motion))
    other = jnp.asarray(_random_frame(5))[None].repeat(8, 0) / 127.5 - 1.0  # ignored: the person is drawn
    np.testing.assert_allclose(model.render_frames(other, jnp.zeros((8, SPEC.dim)), jnp.asarray(motion)), one_shot,
                               atol=1e-5)
    with pytest.raises(ValueError, match="anchor frame"):
        model.set_appearance(frame[:32], motion[0])


# ----- end to end on real material -----

def _talking(path: Path, seconds: float, **kwargs) -> Path:
    speech = real_videos.sentence()
    audio = np.tile(speech, 3)[:round(seconds * 16000)]
    video.write_mp4(path, real_videos.frames(round(seconds * 25), **kwargs), 25.0, audio, 16000)
    return path


class Bases:
    """Ours and the PIRenderer port trained briefly on a prepared video of the astronaut (each on first use), and
    a longer video of her to personalize them with."""

    def __init__(self, root: Path):
        self.root = root
        base_video = _talking(root / "base.mp4", 3.2, face_scale=0.85)
        settings = dataset.PrepareSettings(options=dataset.clips.Options(image_size=64, min_seconds=0.8,
                                                                         max_seconds=1.6), runner="local")
        builders.prepare([str(base_video)], root / "data", settings, log=lambda line: None)
        self.person = _talking(root / "her talking.mp4", 4.0)
        self._runs: dict[str, Path] = {}

    def run(self, kind: str) -> Path:
        if kind not in self._runs:
            config = base_config.load_config_file(base_config.config_path("real_corpus"),
                                                  f"hdtf,{KINDS[kind]},tiny")
            config.data.dataset_dir, config.data.eval_split = str(self.root / "data"), "train"
            config.train.update(num_steps=2, batch_size=8, log_every=1, eval_every=0, checkpoint_every=1000,
                                warmup_steps=1, learning_rate=1e-4)
            trainer.train_and_evaluate(config, self.root / kind)
            self._runs[kind] = self.root / kind
        return self._runs[kind]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return Bases(tmp_path_factory.mktemp("personalize"))


def _personalize(base: Path, video_path, out: Path, *extra: str) -> int:
    return cli.main(["personalize", "--renderer", str(base), "--video", str(video_path), "--out", str(out),
                     "--tail_seconds", "1", "--eval_every", "2", "--batch_size", "8", *extra])


def _kernels(model: nnx.Module) -> dict:
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model))
            if p[-1] == "kernel" and p[0] not in ("losses", "perceptual_net")}


@pytest.mark.parametrize("kind", ["ours", pytest.param("pirenderer", marks=pytest.mark.slow)])
def test_personalize_adapts_a_renderer_and_writes_one_that_loads_like_any(bases, kind, tmp_path, capsys):
    out = tmp_path / "her"
    assert _personalize(bases.run(kind), bases.person, out, "--steps", "3") == 0
    printed = capsys.readouterr().out
    assert "one-shot" in printed and "personalized" in printed and "PSNR" in printed
    report = json.loads((out / "data" / "prepare_report.json").read_text())
    assert report["counts"]["ok"] + report["counts"].get("partial", 0) == 1
    tail, train = ClipSource(out / "data", "heldout_tail"), ClipSource(out / "data", "train")
    assert sum(len(tail[i]["motion"]) for i in range(len(tail))) == 25  # the last second, held out
    kept = round(report["seconds"] * 25)
    assert sum(len(train[i]["motion"]) for i in range(len(train))) == kept - 25  # the rest: adapted on
    assert tail.spec.channels == loader.stored_model(bases.run(kind)).spec.channels  # the base's motion space

    run = loader.load_model(out / "run")
    base = loader.load_model(bases.run(kind)).model
    # The base's weights are untouched; the adapters and the appearance were trained.
    for path, value in _kernels(base).items():
        np.testing.assert_array_equal(_kernels(run.model.renderer)[path], value, err_msg=str(path))
    assert any(float(np.abs(np.asarray(a.lora_b[...])).max()) > 0 for a in run.model.lora)
    init = loader.load_model(out / "init").model
    assert not np.allclose(np.asarray(run.model.appearance[0][...]), np.asarray(init.appearance[0][...]))

    # The result (LoRA merged) renders exactly what the run's adapters do, through the renderer interface.
    result = loader.load_model(out / "renderer", what="--renderer").model
    assert result.lora_paths == () and len(run.model.lora_paths) > 0
    clip = tail[0]
    motion = np.asarray(clip["motion"], np.float32)
    portrait = jnp.asarray(np.asarray(real_videos.frames(1, 64))[0])[None].repeat(4, 0) / 127.5 - 1.0
    frames = [m.render_frames(portrait, jnp.repeat(jnp.asarray(motion[:1]), 4, 0), m.driving(motion, 0, 4))
              for m in (run.model, result)]
    np.testing.assert_allclose(frames[1], frames[0], atol=1e-5)
    chex.assert_shape(frames[1], (4, 64, 64, 3))
    chex.assert_tree_all_finite(frames[1])

    # ... and exports: the artifact alone renders the same frames.
    assert cli.main(["export", "renderer", "--checkpoint", str(out / "renderer"), "--out", str(tmp_path / "exp")]) == 0
    artifact = runtime.load(tmp_path / "exp")
    inputs = {"source_image": np.asarray(portrait), "source_motion": np.repeat(motion[:1], 4, 0),
              "driving_motion": motion[:4], "driving_source": np.asarray(result.driving(motion, 0, 4))}
    exported = artifact(**{name: inputs[name] for name in artifact.input_names})
    np.testing.assert_allclose(list(exported.values())[0], frames[1], atol=1e-4)


@pytest.mark.slow  # about 3 minutes on 2 cores; the default run adapts and merges through the same trainer
def test_personalization_resumes_exactly(bases, tmp_path):
    base = bases.run("ours")
    settings = dict(tail_seconds=1.0, eval_every=2, checkpoint_every=2)
    personalize.personalize(base, bases.person, tmp_path / "straight", personalize.Settings(steps=4, **settings))
    data = tmp_path / "straight" / "data"  # a prepared dataset is taken as it is
    personalize.personalize(base, data, tmp_path / "resumed", personalize.Settings(steps=2, **settings))
    personalize.personalize(base, data, tmp_path / "resumed", personalize.Settings(steps=4, **settings))
    straight, resumed = (loader.load_model(tmp_path / name / "run") for name in ("straight", "resumed"))
    assert straight.step == resumed.step == 4
    chex.assert_trees_all_close(jax.tree.leaves(nnx.state(straight.model, nnx.Param)),
                                jax.tree.leaves(nnx.state(resumed.model, nnx.Param)), rtol=1e-6, atol=1e-7)
    result = loader.stored_model(tmp_path / "resumed" / "renderer")
    assert converted_step(tmp_path / "resumed" / "renderer") == 4 and result.model_config.lora.rank == 0


def converted_step(path: Path) -> int:
    return json.loads((path / "model.json").read_text())["step"]


@pytest.mark.slow  # a second adaptation run; merging without the static part is checked by the adapter tests
def test_lora_only_becomes_a_plain_renderer_of_the_base_kind(bases, tmp_path):
    assert _personalize(bases.run("ours"), bases.person, tmp_path / "lora", "--steps", "2", "--no_static", "--rank", "1",
                        "--target", "flow/.*", "--target", "to_rgb/.*") == 0
    run = loader.load_model(tmp_path / "lora" / "run").model
    assert {p[0] for p in run.lora_paths} == {"flow", "to_rgb"} and not run.static
    assert loader.stored_model(tmp_path / "lora" / "renderer").model_config.name == "motion_renderer"


def test_bad_videos_and_renderers_are_refused_by_name(bases, tmp_path, capsys, tiny_dataset):
    base = bases.run("ours")
    faceless = tmp_path / "wall.mp4"
    video.write_mp4(faceless, np.full((50, 64, 64, 3), 120, np.uint8), 25.0, real_videos.sentence()[:32000], 16000)
    assert _personalize(base, faceless, tmp_path / "a", "--steps", "2") == 2
    err = capsys.readouterr().err
    assert "wall.mp4" in err and "no face" in err and "Traceback" not in err
    short = _talking(tmp_path / "short.mp4", 1.2)
    assert _personalize(base, short, tmp_path / "b", "--steps", "2", "--tail_seconds", "3") == 2
    assert "short.mp4" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x01not a video" * 100)
    assert _personalize(base, corrupt, tmp_path / "c", "--steps", "2") == 2
    assert "corrupt.mp4" in capsys.readouterr().err
    # A renderer trained on SynthTalk has no real-face basis to project the person's video with.
    synth = tmp_path / "synth_renderer"
    config = renderer_configs.get_config("tiny")
    config.data.dataset_dir = str(tiny_dataset)
    config.train.update(num_steps=1, batch_size=8, eval_every=0, checkpoint_every=1000, warmup_steps=1)
    trainer.train_and_evaluate(config, synth)
    assert _personalize(synth, faceless, tmp_path / "d", "--steps", "2") == 2
    assert "motion basis" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
