"""Nothing is silently replicated: every parameter of every config's model has logical axes the rules table
knows, and the trainer refuses big unannotated parameters on meshes that shard parameters."""

import ast
import functools
import glob
import os
import re

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from mirrortalk_jax import base_config
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC, MotionSpec
from mirrortalk_jax.models import registry
from mirrortalk_jax.models.nn import layers
from mirrortalk_jax.train import mesh as mesh_lib
from mirrortalk_jax.train import sharding_guard, state as state_lib, trainer
from tests.test_trainer import ROOT, _config


def _variants(path):
    """Every variant a config file accepts, read from the error it raises for an unknown one."""
    try:
        base_config.load_config_file(path, "__no_such_variant__")
    except ValueError as e:
        found = re.search(r"use one of (\[.*\])", str(e))
        if found:
            return ast.literal_eval(found.group(1))
        raise
    return [None]


CONFIG_FILES = sorted(glob.glob(os.path.join(ROOT, "mirrortalk_jax", "configs", "**", "[!_]*.py"), recursive=True))
CONFIGS = [(os.path.relpath(path, ROOT), variant) for path in CONFIG_FILES
           for variant in _variants(path)]


def _spec(config):
    """SynthTalk's motion space, or one of the width a config fixes (e.g. 64 BFM coefficients, PIRenderer's 73)."""
    dim = int(config.model.get("motion_dim", 0) or config.model.get("coeff_nc", 0) or 0)
    if not dim or dim == SYNTHTALK_SPEC.dim:
        return SYNTHTALK_SPEC
    channels = tuple(f"c{i}" for i in range(dim))
    quarter = dim // 4
    groups = {"lower": channels[:quarter], "upper": channels[quarter:2 * quarter],
              "eyes": channels[2 * quarter:3 * quarter], "pose": channels[3 * quarter:]}
    return MotionSpec(f"test_{dim}", channels, groups)


def _rules(config):
    return dict(mesh_lib.logical_rules(config.mesh.get("logical_axis_rules") if "mesh" in config else None))


def _abstract_training(config):
    spec = _spec(config)
    return state_lib.make_training(lambda rngs: registry.create_model(config.model, spec, rngs), config.train)


@functools.lru_cache(maxsize=None)
def _abstract_state(path, variant):
    config = base_config.load_config_file(os.path.join(ROOT, path), variant)
    return config, jax.eval_shape(_abstract_training(config).init, jax.random.key(0))


def test_every_config_variant_is_walked():
    assert ("mirrortalk_jax/configs/mirrortalk.py", "large") in CONFIGS
    assert ("mirrortalk_jax/configs/synthtalk_regression.py", "tiny") in CONFIGS
    assert len({path for path, _ in CONFIGS}) == len(CONFIG_FILES) > 10


@pytest.mark.parametrize("path, variant", CONFIGS)
def test_every_parameter_has_logical_axes_the_rules_know(path, variant):
    config = base_config.load_config_file(os.path.join(ROOT, path), variant)
    model = nnx.eval_shape(lambda: registry.create_model(config.model, _spec(config), nnx.Rngs(0)))
    rules = _rules(config)
    missing, unknown = [], set()
    for name, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        axes = var.get_metadata().get("out_sharding")
        if axes is None or len(axes) != len(var.shape):
            missing.append(f"{'/'.join(map(str, name))} {var.shape}: {axes}")
            continue
        unknown |= {a for a in axes if a is not None and a not in rules}
    assert not missing, f"{path}:{variant} parameters without logical axes for every dimension: {missing}"
    assert not unknown, f"{path}:{variant} uses logical axes the rules table does not map: {sorted(unknown)}"


def _trained(path, variant):
    config = base_config.load_config_file(os.path.join(ROOT, path), variant)
    return "train" in config and "mesh" in config


@pytest.mark.parametrize("path, variant", [c for c in CONFIGS if c[1] != "tiny" and _trained(*c)])
@pytest.mark.parametrize("mesh_shape", [(1, 8, 1), (1, 4, 2)])  # the meshes that shard parameters: FSDP (+TP)
def test_real_models_pass_the_guard(path, variant, mesh_shape):
    config, abstract = _abstract_state(path, variant)
    mesh = mesh_lib.create_mesh(dict(zip(("ici_data", "ici_fsdp", "ici_tensor"), mesh_shape)))
    shardings = state_lib.state_shardings(abstract, mesh, tuple(_rules(config).items()))
    sharding_guard.check_parameters_sharded(abstract.params, shardings.params, mesh,
                                            max_replicated_mb=config.train.max_replicated_param_mb)


class _Unannotated(nnx.Module):
    """A regression model plus one big parameter without logical axes (a forgotten annotation)."""

    def __init__(self, config, spec, rngs):
        from mirrortalk_jax.models.baselines.regression import AudioMotionRegressor
        self.inner = AudioMotionRegressor(320, spec.dim, 16, 1, 3, rngs)
        self.table = nnx.Param(jnp.zeros((1024, 1024)))  # 4 MiB, no nnx.with_partitioning
        self.small = layers.param(rngs, nnx.initializers.zeros, (1024, 1024), ("embed", "mlp"))

    def loss(self, batch, rng, train):
        loss, metrics = self.inner.loss(batch, rng, train)
        return loss + 0.0 * (self.table[...].sum() + self.small[...].sum()), metrics


def _shardings(mesh_shape):
    config = _config("unused")
    config.model.name = "unannotated_test_model"
    if "unannotated_test_model" not in registry._ENTRIES:
        registry.register("unannotated_test_model")(_Unannotated)
    abstract = jax.eval_shape(_abstract_training(config).init, jax.random.key(0))
    mesh = mesh_lib.create_mesh(dict(zip(("ici_data", "ici_fsdp", "ici_tensor"), mesh_shape)))
    return abstract, state_lib.state_shardings(abstract, mesh, mesh_lib.DEFAULT_RULES), mesh


def test_guard_names_the_unannotated_parameter():
    abstract, shardings, mesh = _shardings((2, 2, 2))
    found = sharding_guard.replicated_parameters(abstract.params, shardings.params, mesh, min_bytes=2**20)
    assert [(p.name, p.shape, p.nbytes) for p in found] == [("table", (1024, 1024), 4 * 2**20)]
    with pytest.raises(sharding_guard.ReplicatedParameterError, match=r"table: shape \(1024, 1024\), 4.00 MiB"):
        sharding_guard.check_parameters_sharded(abstract.params, shardings.params, mesh, max_replicated_mb=2.0)
    # Below the limit, on a pure data-parallel mesh (replication is the plan there), or disabled: no error.
    sharding_guard.check_parameters_sharded(abstract.params, shardings.params, mesh, max_replicated_mb=8.0)
    sharding_guard.check_parameters_sharded(abstract.params, shardings.params, mesh, max_replicated_mb=0)
    abstract, shardings, mesh = _shardings((8, 1, 1))
    sharding_guard.check_parameters_sharded(abstract.params, shardings.params, mesh, max_replicated_mb=2.0)


def test_guard_counts_axes_of_size_one_as_replicated():
    # `small` maps to (fsdp, tensor): sharded on a (1, 4, 2) mesh, but whole on every device of a (8, 1, 1) one.
    abstract, shardings, mesh = _shardings((1, 4, 2))
    assert [p.name for p in sharding_guard.replicated_parameters(abstract.params, shardings.params, mesh,
                                                                 min_bytes=2**20)] == ["table"]
    abstract, shardings, mesh = _shardings((8, 1, 1))
    assert {p.name for p in sharding_guard.replicated_parameters(abstract.params, shardings.params, mesh,
                                                                 min_bytes=2**20)} == {"table", "small"}


def test_trainer_refuses_before_allocating(micro_dataset, tmp_path):
    if "unannotated_test_model" not in registry._ENTRIES:
        registry.register("unannotated_test_model")(_Unannotated)
    config = _config(micro_dataset, num_steps=2)
    config.model.name = "unannotated_test_model"
    config.mesh.ici_data, config.mesh.ici_fsdp = 4, 2
    with pytest.raises(sharding_guard.ReplicatedParameterError, match="table"):
        trainer.train_and_evaluate(config, tmp_path)
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())
