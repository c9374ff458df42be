"""Scan over layers, rematerialisation and activation sharding constraints change nothing numerically: a scanned
model given an unscanned model's weights (converted) computes the same outputs and gradients, remat the same
loss and gradients, and constraints the same outputs; and each is really in the compiled program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mirrortalk_jax.models  # noqa: F401  (eager sharding off)
from mirrortalk_jax import base_config
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from mirrortalk_jax.models.mirrortalk.dit import DiTDenoiser
from mirrortalk_jax.models.mirrortalk.style_encoder import StyleEncoder
from mirrortalk_jax.models.nn import layer_stack, sharding
from mirrortalk_jax.train import mesh as mesh_lib
from tests.test_trainer import ROOT

B, L, F, S, LAYERS = 2, 8, 12, 8, 3


def _dit(scan_layers=False, remat="none"):
    return DiTDenoiser(SYNTHTALK_SPEC, audio_dim=F, style_dim=S, hidden=16, num_layers=LAYERS, num_heads=2,
                       audio_radius=2, scan_layers=scan_layers, remat=remat, rngs=nnx.Rngs(0))


def _randomized(model):
    """Leaves the adaLN-Zero start (zero outputs) so every path of every block carries signal."""
    rng = np.random.default_rng(1)  # numpy: jax draws would compile one XLA program per shape (seconds on CPU)
    state = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda p: p + 0.3 * rng.standard_normal(p.shape, np.float32), state))
    return model


def _inputs(batch=B):
    k = jax.random.split(jax.random.key(0), 3)
    mask = jnp.arange(L)[None] < jnp.array([L, L - 3] * (batch // 2))[:, None]
    return (jax.random.normal(k[0], (batch, L, SYNTHTALK_SPEC.dim)), jnp.arange(batch) * 97 % 1000,
            jax.random.normal(k[1], (batch, L, F)), jax.random.normal(k[2], (batch, S)), mask)


def _with_weights_of(source, target):
    """`target` (another layer layout) holding `source`'s parameters, converted."""
    params = layer_stack.convert_layer_layout(nnx.state(source, nnx.Param), nnx.state(target, nnx.Param))
    nnx.update(target, params)
    return target


def _call(model, inputs):
    x, t, audio, style, mask = inputs
    return model(x, t, audio, style, mask=mask)


def _forward(model, inputs):
    graphdef, state = nnx.split(model)
    return jax.jit(lambda state, inputs: _call(nnx.merge(graphdef, state), inputs))(state, inputs)


def _loss_and_grads(model, inputs):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
        return jnp.mean(jnp.square(_call(nnx.merge(graphdef, params, rest), inputs)))
    return jax.jit(jax.value_and_grad(loss))(params)


def _flat(state):
    return {path: np.asarray(v.get_value() if isinstance(v, nnx.Variable) else v)
            for path, v in nnx.to_flat_state(state)}


@pytest.fixture(scope="module")
def dit_pair():
    plain = _randomized(_dit())
    return plain, _with_weights_of(plain, _dit(scan_layers=True))


@pytest.fixture(scope="module")
def reference_grads(dit_pair):
    """(loss, gradients) of the unscanned and the scanned model without remat, computed once."""
    return {scan: _loss_and_grads(model, _inputs()) for scan, model in zip((False, True), dit_pair)}


def test_layouts_convert_both_ways_exactly(dit_pair):
    plain, scanned = dit_pair
    stacked = _flat(nnx.state(scanned, nnx.Param))
    assert stacked[("blocks", "ada", "kernel")].shape == (LAYERS, 16, 9 * 16)
    assert not any(isinstance(p, int) for path in stacked if path[0] == "blocks" for p in path)
    back = layer_stack.convert_layer_layout(nnx.state(scanned, nnx.Param), nnx.state(plain, nnx.Param))
    original = _flat(nnx.state(plain, nnx.Param))
    assert set(_flat(back)) == set(original)
    for path, value in _flat(back).items():
        np.testing.assert_array_equal(value, original[path], err_msg=str(path))
    # Same number of parameters either way.
    count = lambda m: sum(v.size for v in _flat(nnx.state(m, nnx.Param)).values())
    assert count(plain) == count(scanned)


def test_plain_dicts_convert_too():
    """Checkpoints restored as pure dicts (`nnx.to_pure_dict`) convert the same way; other lists are kept."""
    plain = {"blocks": {0: {"k": np.ones((2, 3))}, 1: {"k": np.zeros((2, 3))}}, "embed_in": {0: {"w": np.ones(4)}}}
    stacked = {"blocks": {"k": np.ones((2, 2, 3))}, "embed_in": {0: {"w": np.ones(4)}}}
    out = nnx.to_pure_dict(layer_stack.convert_layer_layout(plain, stacked))
    np.testing.assert_array_equal(out["blocks"]["k"], np.stack([np.ones((2, 3)), np.zeros((2, 3))]))
    assert list(out["embed_in"]) == [0]
    back = nnx.to_pure_dict(layer_stack.convert_layer_layout(out, plain))
    np.testing.assert_array_equal(back["blocks"][1]["k"], np.zeros((2, 3)))


def test_stacked_parameters_carry_the_layers_axis(dit_pair):
    _, scanned = dit_pair
    blocks = [(path, var) for path, var in nnx.to_flat_state(nnx.state(scanned, nnx.Param)) if path[0] == "blocks"]
    assert blocks
    for path, var in blocks:
        axes = var.get_metadata()["out_sharding"]
        assert axes[0] == "layers" and len(axes) == var.ndim, (path, axes, var.shape)
    with nnx.logical_axis_rules(mesh_lib.DEFAULT_RULES):
        spec = nnx.get_partition_spec(nnx.state(scanned, nnx.Param))
    assert tuple(spec["blocks"]["ada"]["kernel"].get_value()) == (None, "fsdp", "tensor")


def test_scanned_dit_matches_the_unscanned_one(dit_pair, reference_grads):
    plain, scanned = dit_pair
    inputs = _inputs()
    want = _forward(plain, inputs)
    assert np.abs(want).max() > 0.1  # real signal through the blocks
    np.testing.assert_allclose(_forward(scanned, inputs), want, atol=1e-5, rtol=1e-5)
    loss, grads = reference_grads[False]
    scanned_loss, scanned_grads = reference_grads[True]
    np.testing.assert_allclose(scanned_loss, loss, rtol=1e-5)
    unstacked = _flat(layer_stack.convert_layer_layout(scanned_grads, grads))
    for path, g in _flat(grads).items():
        np.testing.assert_allclose(unstacked[path], g, atol=1e-5, rtol=1e-4, err_msg=str(path))


@pytest.mark.parametrize("scan_layers, remat", [(True, "full"), (True, "dots"), (False, "full")])
def test_remat_gives_the_same_loss_and_gradients(dit_pair, reference_grads, scan_layers, remat):
    reference = dit_pair[int(scan_layers)]
    model = _with_weights_of(reference, _dit(scan_layers=scan_layers, remat=remat))
    inputs = _inputs()
    loss, grads = reference_grads[scan_layers]
    remat_loss, remat_grads = _loss_and_grads(model, inputs)
    np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
    got = _flat(remat_grads)
    for path, g in _flat(grads).items():
        np.testing.assert_allclose(got[path], g, atol=1e-6, rtol=1e-5, err_msg=str(path))
    # The recomputation is really in the backward pass: the remat primitive is in the jaxpr.
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: _call(nnx.merge(graphdef, p, rest), inputs).sum()))(params)
    assert "checkpoint" in str(jaxpr) or "remat" in str(jaxpr)


def test_scanned_model_compiles_one_block_in_a_loop(dit_pair):
    plain, scanned = dit_pair
    inputs = _inputs()

    def hlo(model):
        graphdef, state = nnx.split(model)
        return jax.jit(lambda s, *a: _call(nnx.merge(graphdef, s), a)).lower(state, *inputs).as_text()

    unrolled, looped = hlo(plain), hlo(scanned)
    assert "stablehlo.while" in looped and "stablehlo.while" not in unrolled
    # One block body instead of three: the program shrinks by about two blocks' worth of ops.
    count = lambda text: sum(1 for line in text.splitlines() if " = stablehlo." in line)
    assert count(looped) < 0.6 * count(unrolled), (count(looped), count(unrolled))


def test_scanned_style_encoder_matches():
    def encoder(scan_layers, remat="none"):
        return StyleEncoder(motion_dim=SYNTHTALK_SPEC.dim, hidden=16, num_layers=LAYERS, num_heads=2, mlp_dim=32,
                            num_slots=4, style_dim=S, content_dim=S, max_frames=L, rngs=nnx.Rngs(0),
                            scan_layers=scan_layers, remat=remat)
    plain = _randomized(encoder(False))
    scanned = _with_weights_of(plain, encoder(True, "dots"))
    assert _flat(nnx.state(scanned, nnx.Param))[("layers", "mlp_in", "kernel")].shape == (LAYERS, 16, 32)
    motion, mask = _inputs()[0], _inputs()[4]
    run = lambda m: jax.jit(lambda s: nnx.merge(nnx.graphdef(m), s)(motion, mask))(nnx.state(m))
    np.testing.assert_allclose(run(scanned), run(plain), atol=1e-5, rtol=1e-5)


def test_unknown_remat_is_refused():
    with pytest.raises(ValueError, match="remat='some'"):
        _dit(remat="some")


def test_configs_scan_and_remat_base_and_large_only():
    path = f"{ROOT}/mirrortalk_jax/configs/mirrortalk.py"
    for variant, scan, remat in (("tiny", False, "none"), ("base", True, "dots"), ("large", True, "full")):
        m = base_config.load_config_file(path, variant).model
        assert (m.scan_layers, m.remat, m.style_encoder.scan_layers, m.style_encoder.remat) == (scan, remat, scan,
                                                                                                 remat)
    m = base_config.load_config_file(f"{ROOT}/mirrortalk_jax/configs/style_encoder.py", "default").model
    assert (m.scan_layers, m.remat) == (False, "none")


# ----- Activation sharding constraints -----


def test_constrain_is_a_no_op_without_a_mesh_and_rules():
    x = jnp.ones((8, 4, 16))
    assert sharding.constrain(x, ("batch", "length", "embed")) is x
    with nnx.logical_axis_rules(mesh_lib.DEFAULT_RULES):  # rules but no mesh
        assert sharding.constrain(x, ("batch", "length", "embed")) is x
    mesh = mesh_lib.create_mesh({"ici_data": 4, "ici_fsdp": 2})
    with jax.set_mesh(mesh):  # a mesh but no rules
        assert sharding.constrain(x, ("batch", "length", "embed")) is x
    with pytest.raises(ValueError, match="do not match"):
        sharding.constrain(x, ("batch", "embed"))


def test_logical_spec_uses_each_mesh_axis_once_and_skips_what_does_not_divide():
    shape = {"data": 4, "fsdp": 2, "tensor": 1}
    P = jax.sharding.PartitionSpec
    # batch takes data and fsdp, so embed (-> fsdp) stays whole; regions (None) are whole.
    assert sharding.logical_spec((8, 6, 4, 16), ("batch", "length", None, "embed"), mesh_lib.DEFAULT_RULES,
                                 shape) == P(("data", "fsdp"), None, None, None)
    # A batch of 2 does not divide over 8 devices: left to the compiler rather than refused.
    assert sharding.logical_spec((2, 16), ("batch", "mlp"), mesh_lib.DEFAULT_RULES, shape) == P(
        P.UNCONSTRAINED, "tensor")


@pytest.mark.parametrize("scan_layers", [False, True])
def test_constraints_apply_under_a_mesh_and_change_no_output(dit_pair, scan_layers):
    plain, scanned = dit_pair
    model = scanned if scan_layers else plain
    inputs = _inputs(batch=8)
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, *a: _call(nnx.merge(graphdef, s), a))
    want = forward(state, *inputs)
    assert "sharding_constraint" not in forward.lower(state, *inputs).as_text()
    mesh = mesh_lib.create_mesh({"ici_data": 4, "ici_fsdp": 2})
    with sharding.activation_sharding(mesh, mesh_lib.DEFAULT_RULES):
        forward = jax.jit(lambda s, *a: _call(nnx.merge(graphdef, s), a))
        text = forward.lower(state, *inputs).as_text()
        got = forward(state, *inputs)
    constraints = [line for line in text.splitlines() if "sharding_constraint" in line]
    # The tokens before the blocks and after each block (once inside the loop body when scanned).
    assert len(constraints) == (2 if scan_layers else 1 + LAYERS), constraints
    assert all('[{"data", "fsdp"}, {}, {}, {}]' in line for line in constraints), constraints
    # Outputs are O(5): a few ulp of float32 where the sharded program orders reductions differently.
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("constrain", [True, False])
def test_the_trainer_traces_its_steps_under_the_rules(constrain):
    """compile_training's train step (what training, the benchmarks and the AOT tool run) carries the models'
    activation constraints, unless mesh.constrain_activations is off."""
    from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
    from mirrortalk_jax.runs import loader
    from mirrortalk_jax.train import aot
    from mirrortalk_jax.train.compiled import compile_training
    from tests.test_trainer import _load_config

    config = _load_config("mirrortalk_jax/configs/mirrortalk.py", "tiny")
    config.mesh.ici_data, config.mesh.ici_fsdp = 4, 2
    config.mesh.constrain_activations = constrain
    config.train.batch_size = 8
    mesh = mesh_lib.create_mesh(config.mesh)
    setup = compile_training(config, loader.recipe(config.model, SYNTHTALK_SPEC).factory, mesh)
    rng = jax.eval_shape(lambda: jax.random.key(0))
    text = setup.train_step.lower(setup.abstract_state(), aot.abstract_batch(config, SYNTHTALK_SPEC, mesh),
                                  jax.ShapeDtypeStruct(rng.shape, rng.dtype, sharding=setup.replicated)).as_text()
    constraints = [line for line in text.splitlines() if "sharding_constraint" in line]
    assert bool(constraints) == constrain
    assert all('{"data", "fsdp"}' in line for line in constraints)
