"""The MirrorTalk paper's ablations as config options: each removes exactly what it names."""

import jax
import numpy as np
import pytest
from flax import nnx

import mirrortalk_jax.models  # noqa: F401  (eager sharding off)
from mirrortalk_jax import base_config
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from mirrortalk_jax.models.registry import create_model


def _config(path):
    return base_config.load_config_file(path)


def _get(config, dotted):
    for key in dotted.split("."):
        config = config[key]
    return config


def test_options_set_the_named_fields_only():
    plain = _config("mirrortalk_jax/configs/style_encoder.py:tiny")
    for option, overrides in base_config.STYLE_ENCODER_ABLATIONS.items():
        ablated = _config(f"mirrortalk_jax/configs/style_encoder.py:tiny,{option}")
        changed = {k for k in ("num_slots", "loss_weights.hsic", "loss_weights.triplet")
                   if _get(ablated.model, k) != _get(plain.model, k)}
        assert changed == set(overrides), option
    generator = _config("mirrortalk_jax/configs/mirrortalk.py:tiny,no_hier_mod,no_triplet")
    assert generator.model.hierarchical_modulation is False
    assert generator.model.style_encoder.loss_weights.triplet == 0.0
    with pytest.raises(ValueError, match="unknown config option"):
        _config("mirrortalk_jax/configs/mirrortalk.py:tiny,no_such_thing")


def test_no_memory_bank_has_no_memory_parameters():
    config = _config("mirrortalk_jax/configs/style_encoder.py:tiny,no_memory_bank").model
    model = create_model(config, SYNTHTALK_SPEC, nnx.Rngs(0))
    paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert not any("memory" in p for p in paths)
    motion = jax.random.normal(jax.random.key(0), (2, 20, SYNTHTALK_SPEC.dim))
    style, _ = model.encoder.encode(motion, np.ones((2, 20), bool))
    assert style.shape == (2, config.style_dim) and np.isfinite(style).all()


def test_no_hierarchical_modulation_fixes_the_gates_at_one():
    config = _config("mirrortalk_jax/configs/mirrortalk.py:tiny,no_hier_mod").model
    model = create_model(config, SYNTHTALK_SPEC, nnx.Rngs(0))
    assert model.denoiser.gates is None
    gates = np.asarray(model.denoiser.modulation_gates(np.array([1, 500, 999])))
    np.testing.assert_array_equal(gates, 1.0)
    with_gates = create_model(_config("mirrortalk_jax/configs/mirrortalk.py:tiny").model, SYNTHTALK_SPEC, nnx.Rngs(0))
    assert not np.allclose(with_gates.denoiser.modulation_gates(np.array([1, 500, 999])), 1.0)
