"""The runs layer: one loader for training runs and converted checkpoints, composite models assembled from the
runs their parts come from (also nested parts), runs that load without their parts' folders, and the
parameters-only restore."""

import json
import shutil

import chex
import jax
import numpy as np
import pytest
from flax import nnx

from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from mirrortalk_jax.models import registry
from mirrortalk_jax.models.registry import create_model
from mirrortalk_jax.runs import converted, loader
from mirrortalk_jax.train import state as state_lib
from mirrortalk_jax.train import trainer
from tests.test_trainer import _load_config


@pytest.fixture(scope="module")
def expert_dir(tmp_path_factory):
    """A motion expert stored as a converted checkpoint (what tools/convert_*.py write): a part's run."""
    config = _load_config("mirrortalk_jax/configs/motion_expert.py", "tiny")
    model = create_model(config.model, SYNTHTALK_SPEC, nnx.Rngs(7))
    return converted.save(tmp_path_factory.mktemp("expert") / "expert", nnx.state(model, nnx.Not(nnx.RngState)),
                          model_config=config.model, motion_spec=SYNTHTALK_SPEC)


def _sdse_config(expert_dir, **model):
    config = _load_config("mirrortalk_jax/configs/style_encoder.py", "tiny")
    config.model.update(dict(content_encoder_workdir=str(expert_dir), **model))
    return config


def test_a_part_from_a_run_is_built_from_its_stored_config_and_listed_for_loading(expert_dir):
    config = _sdse_config(expert_dir)
    recipe = loader.recipe(config.model, SYNTHTALK_SPEC)
    assert recipe.init_from == (("content_encoder", str(expert_dir)),)
    assert recipe.parts["content_encoder"]["model"]["name"] == "motion_expert"
    model = nnx.eval_shape(lambda: recipe.factory(nnx.Rngs(0)))
    assert type(model.content_encoder).__name__ == "MotionExpert"
    training = state_lib.make_training(recipe.factory, config.train, init_from=recipe.init_from)
    assert training.param_groups[0] == ("content_encoder/.*", 0.0)  # frozen
    assert ("content_encoder", str(expert_dir)) in training.init_from
    # The registry refuses to build it without the part: only the run loader reads runs.
    with pytest.raises(ValueError, match="part 'content_encoder' comes from the run .*build it with runs.loader.recipe"):
        create_model(config.model, SYNTHTALK_SPEC, nnx.Rngs(0))


def test_nested_parts_of_a_part_built_from_its_sub_config(expert_dir):
    """MirrorTalk builds its SDSE from model.style_encoder; that SDSE's content encoder comes from a run: the
    recipe loads it under style_encoder/content_encoder and keeps it frozen while the SDSE trains."""
    config = _load_config("mirrortalk_jax/configs/mirrortalk.py", "tiny")
    config.model.style_encoder_workdir = ""
    config.model.motion_expert_workdir = str(expert_dir)
    config.model.style_encoder.content_encoder_workdir = str(expert_dir)
    recipe = loader.recipe(config.model, SYNTHTALK_SPEC)
    assert sorted(recipe.init_from) == [("motion_expert", str(expert_dir)),
                                        ("style_encoder/content_encoder", str(expert_dir))]
    model = nnx.eval_shape(lambda: recipe.factory(nnx.Rngs(0)))
    assert sorted(registry.frozen_subtrees(model)) == ["motion_expert", "style_encoder/content_encoder"]
    assert recipe.parts["style_encoder"]["parts"]["content_encoder"]["model"]["name"] == "motion_expert"


def test_part_spaces_and_missing_runs_are_refused(expert_dir, tmp_path):
    other = SYNTHTALK_SPEC.to_json().replace('"synthtalk_v1"', '"another_space"')
    meta = converted.load_meta(expert_dir)
    copy = tmp_path / "expert_other_space"
    shutil.copytree(expert_dir, copy)
    meta["motion_spec"] = other
    (copy / converted.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="trained on motion space 'another_space'"):
        loader.recipe(_sdse_config(copy).model, SYNTHTALK_SPEC)
    with pytest.raises(FileNotFoundError, match=r"model\.content_encoder_workdir .*gone: no such folder"):
        loader.recipe(_sdse_config(tmp_path / "gone").model, SYNTHTALK_SPEC)
    with pytest.raises(ValueError, match="holds a 'motion_expert' model; expected a 'pirenderer'"):
        loader.load_model(expert_dir, expect="pirenderer", what="--renderer")


def test_trained_composite_run_loads_without_its_parts_folders(micro_dataset, expert_dir, tmp_path):
    """The part's weights are loaded at the start and never trained; the run stores the part's config, so it
    loads after the part's folder is gone; EMA weights are what load_model returns by default."""
    part = tmp_path / "expert"
    shutil.copytree(expert_dir, part)
    config = _sdse_config(part, num_layers=1)
    config.data.dataset_dir = str(micro_dataset)
    config.data.window_frames, config.data.reference_frames = 16, 16
    config.train.update(dict(batch_size=8, num_steps=3, log_every=1, eval_every=0, checkpoint_every=3,
                             warmup_steps=1, ema_decay=0.5))
    state = trainer.train_and_evaluate(config, tmp_path / "run")
    expert = loader.load_model(part).model
    want = jax.tree.leaves(nnx.state(expert, nnx.Param))
    got = jax.tree.leaves(state.params["content_encoder"])
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    shutil.rmtree(part)
    run = loader.load_model(tmp_path / "run")
    assert run.step == 3 and run.model_config.name == "style_encoder"
    chex.assert_trees_all_equal(jax.tree.leaves(nnx.state(run.model, nnx.Param)), jax.tree.leaves(state.ema_params))
    raw = loader.load_model(tmp_path / "run", use_ema=False)
    chex.assert_trees_all_equal(jax.tree.leaves(nnx.state(raw.model, nnx.Param)), jax.tree.leaves(state.params))


def test_restore_reads_only_the_fields_asked_for(micro_dataset, tmp_path):
    """Inference restores never touch the optimizer moments: restore_fields returns just what it was asked."""
    config = _load_config("mirrortalk_jax/configs/synthtalk_regression.py", "tiny")
    config.data.dataset_dir = str(micro_dataset)
    config.data.window_frames = 16
    config.train.update(dict(batch_size=8, num_steps=2, log_every=1, eval_every=0, checkpoint_every=2,
                             warmup_steps=1))
    state = trainer.train_and_evaluate(config, tmp_path)
    ckpt = loader._open(tmp_path)
    try:
        params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state.params)  # as the loader asks
        fields = ckpt.restore_fields(2, {"params": params, "ema_params": params})
    finally:
        ckpt.close()
    assert set(fields) == {"params", "ema_params"} and fields["ema_params"] is None  # EMA off in this config
    chex.assert_trees_all_equal(jax.tree.leaves(fields["params"]), jax.tree.leaves(state.params))


def test_a_part_from_a_run_leaves_the_composites_own_initialisation_unchanged(expert_dir):
    """Parts from runs draw their (replaced) initial weights after the composite's own layers, so a seeded
    composite starts from the same weights with or without its expert, and the stream moves on as far."""
    config = _load_config("mirrortalk_jax/configs/mimictalk_a2m.py", "tiny")

    def build(expert: str):
        config.model.motion_expert_workdir = expert
        rngs = nnx.Rngs(3)
        model = loader.recipe(config.model, SYNTHTALK_SPEC).factory(rngs)
        own = {path: value[...] for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param))
               if path[0] != "motion_expert"}
        return model, own, int(rngs.default.count[...])

    with_expert, own_with, count_with = build(str(expert_dir))
    _, own_without, count_without = build("")
    assert with_expert.motion_expert is not None
    assert own_with.keys() == own_without.keys()
    for path in own_with:
        np.testing.assert_array_equal(own_with[path], own_without[path], err_msg=str(path))
    assert count_with > count_without  # the expert's draws are counted after the composite's own
