"""MimicTalk ICS-A2M: exact port against the original's dumps, converter, infilling task, flow matching, ODE
samplers, and training on SynthTalk with the shared trainer."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from mirrortalk_jax.models.abstract import abstract_variables, builder
from mirrortalk_jax import fixtures
from mirrortalk_jax.fixtures import mimictalk as fixture_mimictalk
from mirrortalk_jax.convert import mimictalk, name_map, pipeline, foreign
from mirrortalk_jax.runs import loader
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from mirrortalk_jax.models.mimictalk import icl_transformer
from mirrortalk_jax.models.registry import create_model
from mirrortalk_jax.objectives import flow_matching, infill_masks
from mirrortalk_jax.evaluate import training_samples
from mirrortalk_jax.sample import compiled
from mirrortalk_jax.sample import mimictalk as a2m_sampling
from mirrortalk_jax.sample import ode
from mirrortalk_jax.train import trainer
from mirrortalk_jax.train.metrics import read_metrics
from tests.test_trainer import ROOT, _load_config

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "mimictalk_icl_a2m")


def _manifest(variant):
    with open(os.path.join(FIXTURE, "manifest_full.json")) as f:
        return json.load(f)["variants"][variant]["keys"]


def _fixture_config():
    with open(os.path.join(FIXTURE, "config.json")) as f:
        return json.load(f)


# ----- Exact port -----

def test_fixture_outputs_match_the_original():
    """Every io.npz case: velocities (two shapes, both guidance branches), encoded audio, prompt layout, grid,
    call times, one midpoint step from each reference state, free-running sampling with and without guidance."""
    kind, results = fixtures.check(FIXTURE)
    print("\n" + fixtures.table(kind, results))
    assert kind.name == "mimictalk_icl_a2m" and len(results) == 24
    assert all(r.passed for r in results), [r for r in results if not r.passed]
    got = {r.output: r for r in results}
    for exact in ("m_cond_prompt", "m_cond_mask", "m_grid_t", "m1_nfe_times", "m2_nfe_times"):
        assert got[exact].max_abs == 0.0
    for tight in ("v2_v_cond", "v2_v_null", "v2_v_cfg1.5", "m_cond_audio_feat"):  # well-conditioned cases
        assert got[tight].max_rel < 5e-6, got[tight]
    for step in ("m1_one_step_states", "m2_one_step_states", "m1_first_v_cond", "m1_first_v_null"):
        assert got[step].max_rel < 3e-5, got[step]


def _small_fixture(tmp_path, perturb=False):
    """The fixture with only its velocity cases (fast), optionally with one reference output perturbed."""
    folder = tmp_path / ("perturbed" if perturb else "small")
    folder.mkdir()
    for name in ("config.json", "weights.safetensors"):
        shutil.copy(os.path.join(FIXTURE, name), folder / name)
    with np.load(os.path.join(FIXTURE, "io.npz")) as npz:
        io = {k: npz[k] for k in npz.files if k.startswith("v2_")}
    if perturb:
        io["v2_v_cond"] = io["v2_v_cond"] + 1e-3 * np.abs(io["v2_v_cond"]).max()
    np.savez(folder / "io.npz", **io)
    return folder


def test_check_fixture_tool_exit_codes(tmp_path):
    tool = os.path.join(ROOT, "tools", "check_fixture.py")
    good = subprocess.run([sys.executable, tool, str(_small_fixture(tmp_path))], check=False, capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert good.returncode == 0, good.stdout + good.stderr[-2000:]
    assert "mimictalk_icl_a2m: 3/3 outputs within tolerance" in good.stdout
    bad = subprocess.run([sys.executable, tool, str(_small_fixture(tmp_path, perturb=True))], check=False,
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert bad.returncode == 1 and "v2_v_cond" in bad.stdout and "NO" in bad.stdout


# ----- Converter -----

@pytest.mark.parametrize("variant,config_variant", [("use_aux_features=False", "released"),
                                                    ("use_aux_features=True", "released_aux")])
def test_full_size_manifest_fills_the_released_configs(variant, config_variant):
    """The released layout (both aux settings, both backbone prefixes) fills our eval_shape tree exactly."""
    manifest = _manifest(variant)
    config = _load_config("mirrortalk_jax/configs/mimictalk_a2m.py", config_variant).model
    abstract = abstract_variables(builder(config, None))
    name_map.check_manifest(manifest, mimictalk.rules(config), abstract)
    n_params = sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(abstract) if v.type is nnx.Param)
    assert n_params == {"released": 34_946_624, "released_aux": 34_968_736}[config_variant]
    # Mode icl_transformer keeps the transformer directly under `backbone.`.
    flat = [dict(e, key=e["key"].replace(mimictalk.FLOW_PREFIX, mimictalk.TRANSFORMER_PREFIX)) for e in manifest]
    name_map.check_manifest(flat, mimictalk.rules(config), abstract)
    inferred = mimictalk.config_from_tensors(name_map.placeholders(manifest))
    for field in ("use_aux_features", "dim", "depth", "heads", "dim_head", "motion_dim", "audio_width", "ff_mult"):
        assert inferred[field] == config[field], field
    assert mimictalk.config_from_tensors(name_map.placeholders(flat)).mode == "icl_transformer"


def test_corrupted_and_mismatched_checkpoints_raise(tmp_path):
    weights = os.path.join(FIXTURE, "weights.safetensors")
    with open(weights, "rb") as f:
        data = f.read()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(foreign.ConversionError, match="truncated.safetensors: not a readable safetensors"):
        mimictalk.read_checkpoint(tmp_path / "truncated.safetensors")

    tensors = load_file(weights)
    config = fixture_mimictalk.fixture_model_config(_fixture_config())
    wider = config.copy_and_resolve_references()
    wider.dim_head = 32  # a config that does not fit the file
    with pytest.raises(foreign.ConversionError, match=r"[qk]_norm.gamma of shape \(2, 1, 16\) cannot be laid out"):
        pipeline.convert_model(tensors, mimictalk.rules(wider), wider, source="fixture")
    resized = dict(tensors)  # a file with a tensor of the wrong size
    resized["backbone.icl_transformer_model.to_pred.weight"] = np.zeros((65, 48), np.float32)
    with pytest.raises(foreign.ConversionError, match="shape mismatches") as e:
        pipeline.convert_model(resized, mimictalk.rules(config), config, source="fixture")
    assert "to_pred.weight -> velocity/to_pred/kernel: (48, 65) vs expected (48, 64)" in str(e.value)
    missing = dict(tensors)
    del missing["backbone.icl_transformer_model.transformer.layers.1.3.to_out.weight"]
    missing["sync_expert.weight"] = np.zeros(3, np.float32)
    with pytest.raises(foreign.ConversionError) as e:
        pipeline.convert_model(missing, mimictalk.rules(config), config, source="fixture")
    assert "velocity/layers/1/attn/wo" in str(e.value) and "sync_expert.weight" in str(e.value)
    # A RoPE buffer made with another theta is refused.
    other = dict(tensors)
    other["backbone.icl_transformer_model.transformer.rotary_emb.inv_freq"] = mimictalk.icl_transformer.rope_inv_freq(
        config.dim_head, 10000.0)
    with pytest.raises(foreign.ConversionError, match="buffer rotary_emb.inv_freq differs"):
        pipeline.convert_model(other, mimictalk.rules(config), config)


def test_convert_tool_writes_a_loadable_checkpoint(tmp_path):
    """`model.`-prefixed keys (the loader's flat form) convert; the architecture is read from the file."""
    tensors = {f"model.{k}": v for k, v in load_file(os.path.join(FIXTURE, "weights.safetensors")).items()}
    save_file(tensors, tmp_path / "flat.safetensors")
    tool = os.path.join(ROOT, "tools", "convert_mimictalk.py")
    out = subprocess.run([sys.executable, tool, f"--checkpoint={tmp_path / 'flat.safetensors'}",
                          f"--out={tmp_path / 'conv'}", "--audio_rate=2"], check=False, capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = loader.load_model(tmp_path / "conv")
    model, config = loaded.model, loaded.model_config
    assert config.use_aux_features and config.dim == 48 and config.depth == 2
    with np.load(os.path.join(FIXTURE, "io.npz")) as npz:
        io = {k: npz[k] for k in npz.files if k.startswith("v2_")}
    v = model.forward(*(jnp.asarray(io[f"v2_{n}"]) for n in ("x", "times", "cond_audio", "cond")))
    np.testing.assert_allclose(v, io["v2_v_cond"], atol=1e-4 * np.abs(io["v2_v_cond"]).max())
    again = subprocess.run([sys.executable, tool, f"--checkpoint={tmp_path / 'flat.safetensors'}",
                            f"--out={tmp_path / 'conv'}"], check=False, capture_output=True, text=True, cwd=ROOT,
                           timeout=300)
    assert again.returncode == 2 and "not empty" in again.stderr


# ----- Training task -----

def test_infill_masks_have_the_specified_statistics():
    _b, length, draws = 16, 40, 200
    lengths = np.array([40, 40, 33, 17] * 4)
    valid = jnp.asarray(np.arange(length)[None] < lengths[:, None])
    keys = jax.random.split(jax.random.key(0), draws)
    masks, modes = jax.jit(jax.vmap(lambda k: infill_masks.infill_mask(k, valid, (0.6, 1.0), return_mode=True)))(keys)
    masks, modes, valid = np.asarray(masks), np.asarray(modes), np.asarray(valid)
    assert not (masks & ~valid).any()  # padding is never predicted
    assert 0.35 < (modes == infill_masks.SPAN).mean() < 0.65  # both modes, by a fair coin per batch
    frac = masks.sum(-1) / valid.sum(-1)  # (draws, B)
    span, iid = masks[modes == infill_masks.SPAN], masks[modes == infill_masks.IID]
    span_frac, iid_frac = frac[modes == infill_masks.SPAN], frac[modes == infill_masks.IID]
    assert span_frac.min() >= 0.6 and span_frac.max() <= 1.0
    runs = (np.diff(span.astype(np.int8), axis=-1, prepend=0) == 1).sum(-1)
    assert (runs == 1).all()  # exactly one contiguous span
    starts = np.argmax(span, -1)[:, :4]
    assert len(np.unique(starts[:, 0])) > 5  # spans start at varied positions
    assert 0.75 < iid_frac.mean() < 0.85 and iid_frac.min() > 0.2  # p ~ U(0.6, 1) per batch
    iid_runs = (np.diff(iid.astype(np.int8), axis=-1, prepend=0) == 1).sum(-1)
    assert iid_runs.mean() > 2  # scattered frames
    batch_p = iid_frac.mean(-1)  # one p per batch: batch means spread over [0.6, 1]
    assert batch_p.min() < 0.7 and batch_p.max() > 0.9
    with pytest.raises(ValueError, match="frac_range"):
        infill_masks.infill_mask(keys[0], valid, (0.0, 1.0))


def test_flow_matching_objective():
    x1 = jax.random.normal(jax.random.key(0), (3, 5, 4))
    tg = flow_matching.flow_targets(x1, jax.random.key(1))
    t = tg.t[:, None, None]
    np.testing.assert_allclose(tg.x_t, (1 - t) * tg.x0 + t * x1, atol=1e-6)
    np.testing.assert_allclose(tg.target, x1 - tg.x0, atol=1e-6)
    np.testing.assert_allclose(flow_matching.predict_x1(tg.x_t, tg.t, tg.target), x1, atol=1e-5)
    for sigma in (0.0, 0.1):  # the one-step estimate inverts the path for any sigma_min
        xt = flow_matching.interpolate(tg.x0, x1, tg.t, sigma)
        u = flow_matching.target_velocity(tg.x0, x1, sigma)
        np.testing.assert_allclose(flow_matching.predict_x1(xt, tg.t, u, sigma), x1, atol=1e-5)
    pred = tg.target + 1.0
    mask = jnp.asarray([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    # per example: masked mean over frames of the channel-mean error; example 3 has no frame and adds 0
    np.testing.assert_allclose(flow_matching.flow_loss(pred, tg.target, mask), (1 + 1 + 0) / 3, rtol=1e-6)


def test_ode_methods_and_guidance():
    grid = ode.time_grid(11)
    assert grid[0] == 0 and grid[-1] == 1 and grid.dtype == np.float32
    y0 = jnp.ones((2, 3))
    fn = lambda y, t: y * (1.0 + t)
    errors = {m: float(jnp.abs(ode.integrate(fn, y0, grid, m) - np.exp(1.5)).max()) for m in ode.METHODS}
    assert errors["rk4"] < 1e-4 < errors["heun"] < errors["euler"] and errors["midpoint"] < errors["euler"] / 10
    assert errors["rk4"] < errors["midpoint"] / 10
    y, states, times = ode.integrate(fn, y0, grid, "rk4", return_trajectory=True)
    assert states.shape == (11, 2, 3) and times.shape == (40,) and np.array_equal(states[-1], y)

    seen = []

    def branch(x, t, drop):
        seen.append(None if drop is None else np.asarray(drop).tolist())
        offset = 0.0 if drop is None else jnp.where(drop, 0.0, 1.0)[:, None]
        return x * 0 + jnp.where(drop is None, 1.0, offset)

    assert float(ode.guided(branch, 1.0)(jnp.zeros((2, 3)), 0.0)[0, 0]) == 1.0 and seen == [None]
    seen.clear()
    v = ode.guided(branch, 2.5)(jnp.zeros((2, 3)), 0.0)  # null 0, cond 1 -> 0 + (1 - 0) * 2.5
    assert seen == [[False, False, True, True]] and np.allclose(v, 2.5)


def test_attention_in_query_blocks_equals_one_block():
    k = jax.random.split(jax.random.key(0), 4)
    q, key, v = (jax.random.normal(k[i], (2, 3, 50, 8)) for i in range(3))
    mask = jnp.arange(50)[None] < jnp.array([[50], [37]])
    one = icl_transformer.attend(q, key, v, mask, 10.0)
    for chunk in (16, 25, 64):  # padded last block, exact blocks, one block
        np.testing.assert_allclose(icl_transformer.attend(q, key, v, mask, 10.0, chunk), one, rtol=1e-6, atol=1e-6)


def _tiny(**model):
    config = _load_config("mirrortalk_jax/configs/mimictalk_a2m.py", "tiny")
    config.model.update({"dim": 32, "depth": 2, "heads": 2, "dim_head": 16, "audio_width": 32,
                         "time_hidden_dim": 64}, **model)
    return config


def test_sampling_prepends_the_prompt_and_compiles_once():
    config = _tiny()
    model = create_model(config.model, SYNTHTALK_SPEC, nnx.Rngs(0))
    audio = jax.random.normal(jax.random.key(0), (2, 12, 320)) - 7.5
    prompt = jax.random.normal(jax.random.key(1), (2, 4, 18))
    prompt_audio = jax.random.normal(jax.random.key(2), (2, 4, 320)) - 7.5
    kw = {"steps": 3, "guidance_scale": 1.5, "temperature": 0.5}
    a = a2m_sampling.generate(model, audio, jax.random.key(3), prompt_motion=prompt, prompt_audio=prompt_audio, **kw)
    assert a.shape == (2, 12, 18) and np.isfinite(np.asarray(a)).all()
    b = a2m_sampling.generate(model, audio, jax.random.key(3), prompt_motion=prompt + 1.0, prompt_audio=prompt_audio,
                              **kw)
    assert not np.allclose(a, b)  # the prompt steers the generated frames
    eager = a2m_sampling.sample(model, audio, rng=jax.random.key(3), prompt_motion=prompt, prompt_audio=prompt_audio,
                                **kw)
    np.testing.assert_allclose(eager["motion"], a, atol=1e-5)
    assert eager["x_recon"].shape == (2, 16, 18)
    assert compiled.jitted(a2m_sampling._motion, nnx.graphdef(model), **kw)._cache_size() == 1  # one program


def test_sync_loss_reaches_the_velocity_field():
    from mirrortalk_jax.models.mirrortalk.motion_expert import MotionExpert

    config = _tiny()
    config.model.task.sync_weight = 0.5
    config.model.task.sync_min_t = 0.0
    model = create_model(config.model, SYNTHTALK_SPEC, nnx.Rngs(0))
    model.motion_expert = MotionExpert(SYNTHTALK_SPEC, hidden=16, embed_dim=8, audio_dim=320, rngs=nnx.Rngs(1))
    batch = {"motion": jax.random.normal(jax.random.key(0), (2, 16, 18)), "motion_mask": jnp.ones((2, 16), bool),
             "audio_features": jax.random.normal(jax.random.key(1), (2, 16, 320)) - 7.5}
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def loss_and_sync_grad(params):
        def loss(params):
            return nnx.merge(graphdef, params, rest, copy=True).loss(batch, jax.random.key(2), True)

        return loss(params), jax.grad(lambda p: loss(p)[1]["sync"])(params)

    (total, metrics), grads = loss_and_sync_grad(params)
    np.testing.assert_allclose(total, metrics["flow"] + 0.5 * metrics["sync"], rtol=1e-6)
    # the expert's verdict on the one-step estimate x1_hat trains the velocity field
    assert float(jnp.abs(grads["velocity"]["to_pred"]["kernel"][...]).sum()) > 0


def test_tiny_config_trains_with_the_shared_trainer(tiny_dataset, tmp_path):
    config = _tiny()
    config.data.dataset_dir = str(tiny_dataset)
    config.data.window_frames = 24
    config.data.reference_frames = 16
    config.train.update({"batch_size": 8, "num_steps": 40, "log_every": 1, "eval_every": 40, "eval_batches": 1,
                             "checkpoint_every": 1000, "warmup_steps": 5, "learning_rate": 3e-3})
    config.model.eval_sampling.steps = 3
    seen = []

    def on_samples(samples):  # the command line's hook, recording what the trainer hands it
        seen.append(samples)
        return training_samples.errors_and_preview(samples)

    trainer.train_and_evaluate(config, tmp_path, on_samples=on_samples)
    metrics = read_metrics(tmp_path)
    flow = [m["train/flow"] for m in metrics if "train/flow" in m]
    print("flow loss, first and last 8 steps:", np.round(flow[:8], 3), np.round(flow[-8:], 3))
    assert len(flow) == 40 and np.isfinite(flow).all()
    assert np.mean(flow[-8:]) < 0.75 * np.mean(flow[:8])
    evals = [m for m in metrics if "eval/loss" in m]  # periodic evaluation sampled held-out windows
    assert evals and np.isfinite(evals[-1]["eval/loss"]) and np.isfinite(evals[-1]["eval/sample/mse/lower"])
    assert [s.step for s in seen] == [40] and seen[0].generated.shape == seen[0].target.shape == (8, 24, 18)
    assert (tmp_path / "previews" / "step_0000040.mp4").is_file()
    from tests.test_trainer import _events

    preview = _events(tmp_path)["eval/preview"]  # the same preview in TensorBoard
    assert preview[0][0] == 40 and 1 <= len(preview[0][1]) <= 24  # GIF merges repeated frames
    assert preview[0][1][0].shape == (128, 256, 3)  # ground truth | generated


@pytest.mark.slow
def test_sharded_training_step(tiny_dataset, tmp_path):
    """Two steps on a (2, 2, 2) data/fsdp/tensor mesh: attention and feed-forward weights are sharded."""
    assert jax.device_count() == 8
    config = _tiny(dim=48, time_hidden_dim=192)  # feed-forward inner width 128: divides over the tensor axis
    config.data.dataset_dir = str(tiny_dataset)
    config.data.window_frames = 16
    config.data.reference_frames = 16
    config.train.update({"batch_size": 8, "num_steps": 2, "log_every": 1, "eval_every": 0, "warmup_steps": 1})
    config.mesh.update(ici_data=2, ici_fsdp=2, ici_tensor=2)
    state = trainer.train_and_evaluate(config, tmp_path)
    layer = state.params["velocity"]["layers"][0]
    assert layer["attn"]["wqkv"].value.sharding.spec == jax.sharding.PartitionSpec("fsdp", None, "tensor", None)
    assert layer["ff"]["up"].value.sharding.spec == jax.sharding.PartitionSpec("fsdp", None, "tensor")
    assert all(np.isfinite(m["train/loss"]) for m in read_metrics(tmp_path))
