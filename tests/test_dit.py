"""The hierarchically modulated DiT denoiser: shapes, adaLN-Zero start, gates, CFG nulls, masking, annotations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mirrortalk_jax.models  # noqa: F401  (eager sharding off)
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from mirrortalk_jax.models.mirrortalk.dit import DEFAULT_GATE_PRIOR, DiTDenoiser

B, L, F, S = 2, 12, 20, 8


def _model(num_layers=2, randomize=True):
    model = DiTDenoiser(SYNTHTALK_SPEC, audio_dim=F, style_dim=S, hidden=16, num_layers=num_layers, num_heads=2,
                        audio_radius=2, rngs=nnx.Rngs(0))
    if randomize:  # leave the adaLN-Zero start so every path carries signal
        state = nnx.state(model, nnx.Param)
        keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(state))))
        nnx.update(model, jax.tree.map(lambda p: p + 0.3 * jax.random.normal(next(keys), p.shape), state))
    return model


def _inputs(seed=0):
    k = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(k[0], (B, L, 18)), jnp.array([3, 700]), jax.random.normal(k[1], (B, L, F)),
            jax.random.normal(k[2], (B, S)))


def test_zero_output_at_init_and_prior_gates():
    model = _model(randomize=False)
    x, t, audio, style = _inputs()
    assert model(x, t, audio, style).shape == (B, L, 18)
    np.testing.assert_array_equal(model(x, t, audio, style), 0.0)
    gates = np.asarray(model.modulation_gates(t))
    for r, region in enumerate(model.regions):
        want = jax.nn.sigmoid(np.array(DEFAULT_GATE_PRIOR[region]))
        np.testing.assert_allclose(gates[:, r], np.broadcast_to(want, (B, 2)), rtol=1e-6)
    assert gates[0, 0, 0] > 0.8 and gates[0, 0, 1] < 0.2  # lower: audio-dominant
    assert gates[0, 1, 0] < 0.2 and gates[0, 1, 1] > 0.8  # upper: style-dominant


def test_gate_override_isolates_a_region():
    """In a 1-block model, closing a region's audio gate makes that region's channels deaf to audio."""
    model = _model(num_layers=1)
    x, t, audio, style = _inputs()
    other_audio = audio + 1.0
    lower = SYNTHTALK_SPEC.group_indices("lower")
    upper = SYNTHTALK_SPEC.group_indices("upper")
    override = np.full((4, 2), np.nan, np.float32)
    override[0, 0] = 0.0  # lower: no audio
    y1 = model(x, t, audio, style, gate_override=jnp.asarray(override))
    y2 = model(x, t, other_audio, style, gate_override=jnp.asarray(override))
    np.testing.assert_allclose(y1[..., lower], y2[..., lower], atol=1e-5)
    assert np.abs(y1[..., upper] - y2[..., upper]).max() > 1e-3  # upper still hears (a little) audio
    # And the style gate: closing every region's style gate removes the style code's influence entirely.
    no_style = np.full((4, 2), np.nan, np.float32)
    no_style[:, 1] = 0.0
    y3 = model(x, t, audio, style, gate_override=jnp.asarray(no_style))
    y4 = model(x, t, audio, style * 5.0, gate_override=jnp.asarray(no_style))
    np.testing.assert_allclose(y3, y4, atol=1e-5)


def test_dropped_conditions_use_the_null_embeddings():
    model = _model()
    x, t, audio, style = _inputs()
    drop = jnp.array([True, False])
    y1 = model(x, t, audio, style, drop_audio=drop, drop_style=drop)
    y2 = model(x, t, audio * 3.0, style * 3.0, drop_audio=drop, drop_style=drop)
    np.testing.assert_allclose(y1[0], y2[0], atol=1e-5)
    assert np.abs(y1[1] - y2[1]).max() > 1e-3


def test_padding_frames_do_not_leak_into_valid_frames():
    model = _model()
    x, t, audio, style = _inputs()
    mask = jnp.arange(L)[None, :] < jnp.array([[L], [7]])
    y1 = model(x, t, audio, style, mask=mask)
    x2 = x.at[1, 7:].set(100.0)
    audio2 = audio.at[1, 7:].set(-50.0)
    y2 = model(x2, t, audio2, style, mask=mask)
    np.testing.assert_allclose(y1[1, :7], y2[1, :7], atol=1e-4)
    np.testing.assert_allclose(y1[0], y2[0], atol=1e-5)


def test_every_parameter_is_annotated():
    state = nnx.state(_model(randomize=False), nnx.Param)
    for path, var in nnx.to_flat_state(state):
        sharding = var.get_metadata().get("out_sharding")
        assert sharding is not None and len(sharding) == var.ndim, path


def test_jit_and_grad():
    model = _model()
    x, t, audio, style = _inputs()
    graphdef, params = nnx.split(model)

    @jax.jit
    def loss(params):
        return jnp.mean(nnx.merge(graphdef, params)(x, t, audio, style) ** 2)

    grads = jax.grad(loss)(params)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    with pytest.raises(ValueError, match="must divide"):
        DiTDenoiser(SYNTHTALK_SPEC, audio_dim=F, style_dim=S, hidden=10, num_layers=1, num_heads=4,
                    rngs=nnx.Rngs(0))


def test_audio_standardisation():
    model = _model()
    x, t, audio, style = _inputs()
    model.audio_mean, model.audio_std = -7.5, 3.7
    standardised = model(x, t, audio * 3.7 - 7.5, style)
    model.audio_mean, model.audio_std = 0.0, 1.0
    np.testing.assert_allclose(standardised, model(x, t, audio, style), rtol=1e-4, atol=1e-5)
