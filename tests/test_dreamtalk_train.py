"""DreamTalk: the cached sampler == the original's loop at other sizes, DDPM, the trainable wrapper on SynthTalk.

(The port's numbers against the original, the converter and the tools: tests/test_dreamtalk.py.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mirrortalk_jax.data.windows import centred_windows
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from mirrortalk_jax.models.dreamtalk import denoiser as dreamtalk
from mirrortalk_jax.models import registry
from mirrortalk_jax.models.registry import create_model
from mirrortalk_jax.objectives.dreamtalk import variance_schedule
from mirrortalk_jax.sample import compiled
from mirrortalk_jax.sample import dreamtalk as dt
from mirrortalk_jax.runs import loader
from mirrortalk_jax.train import trainer
from mirrortalk_jax.train.metrics import read_metrics
from tests.test_trainer import _load_config

# ----- Fast sampler == the original's loop -----


def _random_config(decoder_layers=3, d=16):
    config = _load_config("mirrortalk_jax/configs/dreamtalk.py", "tiny").model
    config.update(d_model=d, win_size=2, style_max_len=12, dropout=0.0)
    for stack in (config.content_encoder, config.style_encoder, config.decoder):
        stack.update(num_heads=2, num_layers=1, ffn_dim=24)
    config.decoder.num_layers = decoder_layers  # the cached path treats the first, middle and last layers apart
    config.content_encoder.pos_embed_len = config.decoder.pos_embed_len = 5
    config.style_encoder.pos_embed_len = 12
    config.decoder.tail_hidden = 8
    return config


def _perturbed(model):
    """Random weights with non-trivial LayerNorm / bias values, so a wrong fast path cannot hide."""
    state = nnx.state(model, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(7), len(jax.tree.leaves(state))))
    nnx.update(model, jax.tree.map(lambda p: p + 0.2 * jax.random.normal(next(keys), p.shape), state))
    return model


def _inputs(b=2, length=7, style_frames=(9, 12)):
    rows = jax.random.normal(jax.random.key(1), (b, length, 320))
    clip = jax.random.normal(jax.random.key(2), (b, 12, 18))
    mask = jnp.arange(12)[None] >= jnp.array(style_frames)[:, None]  # True = padded
    return rows, centred_windows(rows, 2, num_frames=length, axis=1), clip, mask, jax.random.normal(jax.random.key(3),
                                                                                           (b, length, 18))


@pytest.mark.parametrize("layers,scales", [(3, (2.5,)), pytest.param(1, (0.0, None), marks=pytest.mark.slow)])
def test_fast_sampler_equals_the_original_loop(layers, scales):
    """Cached content, shared memory projections, cached first self-attention, middle-token last layer, skipped
    and batched guidance branches, frame blocks: the same numbers as the original's loop (DDIM, 3 steps)."""
    net = _perturbed(dreamtalk.DreamTalk(_random_config(layers), SYNTHTALK_SPEC, nnx.Rngs(0))).net
    rows, windows, clip, mask, x_T = _inputs()
    schedule = variance_schedule(1000)
    for scale in scales:
        ref = dt.ddim_sample_reference(net, windows, clip, mask, x_T, schedule, 4, scale is not None,
                                       1.0 if scale is None else scale)
        fast = dt.sample(net, windows, clip, mask, x_T=x_T, guidance_scale=scale, num_steps=4)
        np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=2e-5 * float(jnp.abs(ref).max()), err_msg=str(scale))
    # frames in blocks of 3, windows built per block from the feature rows (slow: the fixture test covers it)
    if layers == 1:
        chunked = dt.sample(net, rows, clip, mask, x_T=x_T, guidance_scale=scales[-1], raw_features=(2, 1),
                            chunk_frames=3, num_steps=4)
        np.testing.assert_allclose(chunked, fast, rtol=1e-5, atol=2e-5 * float(jnp.abs(fast).max()))
    # guidance scale 1 is the conditional pass: the very program (and numbers) of guidance off
    one = dt.sample(net, windows, clip, mask, x_T=x_T, guidance_scale=1.0, num_steps=4)
    off = dt.sample(net, windows, clip, mask, x_T=x_T, guidance_scale=None, num_steps=4)
    np.testing.assert_array_equal(one, off)
    assert dt.guidance_branches(1.0) == dt.guidance_branches(None) == ("cond",)
    assert dt.guidance_branches(0.0) == ("uncond",) and dt.guidance_branches(2.0) == ("cond", "uncond")


def test_ddpm_sampler_follows_the_original_update():
    net = _perturbed(dreamtalk.DreamTalk(_random_config(1), SYNTHTALK_SPEC, nnx.Rngs(0))).net
    _, windows, clip, mask, x_T = _inputs(b=1, length=4, style_frames=(12,))
    b, length = 1, 4
    args = (12, 1e-3, 0.2)  # a short schedule: the loop below runs every step
    out = dt.sample(net, windows, clip, mask, x_T=x_T, rng=jax.random.key(5), sampler="ddpm", guidance_scale=2.0,
                    schedule_args=args, flexibility=0.3)
    s = variance_schedule(*args)
    _, loop_key = jax.random.split(jax.random.key(5))
    forward = jax.jit(lambda x, t, c, m: net(x, t, windows, c, m))
    x = x_T
    for t in range(12, 0, -1):
        tt = jnp.full((b,), t, jnp.float32)
        cond = forward(x, tt, clip, mask)
        uncond = forward(x, tt, *dt.null_style(net, b))
        x0 = uncond + 2.0 * (cond - uncond)
        sigma = s.sigmas_flex[t] * 0.3 + s.sigmas_inflex[t] * 0.7
        d0 = np.sqrt(s.alphas[t]) * (1 - s.alpha_bars[t - 1]) / (1 - s.alpha_bars[t])
        d1 = np.sqrt(s.alpha_bars[t - 1]) * (1 - s.alphas[t]) / (1 - s.alpha_bars[t])
        key = jax.random.fold_in(loop_key, t)
        z = jnp.stack([jax.random.normal(jax.random.fold_in(key, i), (b, 18)) for i in range(length)], 1)
        x = d0 * x + d1 * x0 + (sigma * z if t > 1 else 0.0)
    np.testing.assert_allclose(out, x, rtol=1e-4, atol=1e-4 * float(jnp.abs(x).max()))


# ----- Training on SynthTalk -----


def _small_config(dataset=None, **train):
    """The tiny config at half width, one layer per stack, 16-frame windows."""
    config = _load_config("mirrortalk_jax/configs/dreamtalk.py", "tiny")
    if dataset is not None:
        config.data.dataset_dir = str(dataset)
    config.data.window_frames = 16
    config.train.update({"batch_size": 8, "num_steps": 30, "log_every": 1, "eval_every": 0, "checkpoint_every": 1000,
                             "warmup_steps": 5, "learning_rate": 3e-3})
    config.train.update(train)
    config.model.update(d_model=32, dropout=0.0)
    for stack in (config.model.content_encoder, config.model.style_encoder, config.model.decoder):
        stack.update(num_layers=1, ffn_dim=64)
    config.model.decoder.tail_hidden = 16
    return config


def test_tiny_training_lowers_the_loss(tiny_dataset, tmp_path):
    config = _small_config(tiny_dataset)
    trainer.train_and_evaluate(config, tmp_path)
    losses = [m["train/denoise"] for m in read_metrics(tmp_path)]
    assert len(losses) == 30 and np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    nulls = [m["train/null_style_fraction"] for m in read_metrics(tmp_path)]
    assert 0.0 < np.mean(nulls) < 0.3  # the null style clip is drawn at about null_prob = 0.1


# ----- Lip-sync loss of a frozen lip expert -----


@pytest.fixture(scope="module")
def lip_expert_run(tiny_dataset, tmp_path_factory):
    """A few steps of the tiny lip expert config: weights to load and freeze (not a good expert yet)."""
    workdir = tmp_path_factory.mktemp("dt_lip_expert")
    config = _load_config("mirrortalk_jax/configs/dreamtalk_lip_expert.py", "tiny")
    config.data.dataset_dir = str(tiny_dataset)
    config.data.window_frames = 16
    config.train.update({"batch_size": 8, "num_steps": 3, "log_every": 1, "eval_every": 0, "checkpoint_every": 1000,
                             "warmup_steps": 1})
    trainer.train_and_evaluate(config, workdir)
    return workdir


def _with_expert(config, run, weight=0.5):
    config.model.update(lip_expert_workdir=str(run), sync_weight=weight, sync_max_t=1000)  # every t is judged
    return config


def _part(name: str, rngs: nnx.Rngs = None):
    """A part as runs.loader builds it from a run: here from the named config ("mirrortalk_jax/configs/NAME.py:tiny")."""
    path, variant = name.split(":")
    return create_model(_load_config(path, variant).model, SYNTHTALK_SPEC, rngs or nnx.Rngs(1))


@pytest.mark.slow  # about a minute on 2 CPU cores: two short trainer runs
def test_sync_loss_trains_with_the_expert_loaded_and_frozen(tiny_dataset, lip_expert_run, tmp_path):
    config = _with_expert(_small_config(tiny_dataset, num_steps=4, warmup_steps=1), lip_expert_run)
    state = trainer.train_and_evaluate(config, tmp_path)
    metrics = read_metrics(tmp_path)
    sync = np.array([m["train/sync"] for m in metrics])
    assert len(sync) == 4 and np.isfinite(sync).all() and (sync > 0).all()
    np.testing.assert_allclose([m["train/loss"] for m in metrics],
                               [m["train/denoise"] + 0.5 * m["train/sync"] for m in metrics], rtol=1e-5)
    # the expert run's weights, loaded at the start and never updated
    expert = jax.tree.leaves(nnx.state(loader.load_model(lip_expert_run).model, nnx.Param))
    got = jax.tree.leaves(state.params["lip_expert"])
    assert len(got) == len(expert) > 0
    for a, b in zip(got, expert):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sync_term_reaches_the_denoiser_gradient():
    run = "mirrortalk_jax/configs/dreamtalk_lip_expert.py:tiny"
    model = create_model(_with_expert(_small_config(), run).model, SYNTHTALK_SPEC, nnx.Rngs(0),
                         lip_expert=_part(run))
    assert registry.frozen_subtrees(model) == ("lip_expert",)
    keys = jax.random.split(jax.random.key(0), 3)
    batch = {"motion": jax.random.normal(keys[0], (2, 16, 18)),
             "motion_mask": jnp.arange(16)[None] < jnp.array([[16], [11]]),
             "audio_features": jax.random.normal(keys[1], (2, 16, 320)) - 7.5,
             "reference_motion": jax.random.normal(keys[2], (2, 48, 18)), "reference_mask": jnp.ones((2, 48), bool)}
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def sync_and_loss(p):  # train=False: no null style clip, no dropout
        total, metrics = nnx.merge(graphdef, p, rest, copy=True).loss(batch, jax.random.key(3), False)
        return metrics["sync"], (total, metrics)

    (_, (total, metrics)), grads = jax.jit(jax.value_and_grad(sync_and_loss, has_aux=True))(params)
    np.testing.assert_allclose(total, metrics["denoise"] + 0.5 * metrics["sync"], rtol=1e-6)
    assert float(metrics["sync"]) > 0 and float(metrics["sync_fraction"]) == 1.0
    # d(total)/d(net) = d(denoise)/d(net) + sync_weight * d(sync)/d(net): the expert's verdict on the x0 estimate
    # trains the denoiser's lower-face (mouth) stack and the shared audio path, and nothing of the upper face
    net = {"/".join(map(str, k)): float(jnp.abs(v[...]).max()) for k, v in nnx.to_flat_state(grads["net"])}
    assert all(np.isfinite(list(net.values())))
    for name in ("decoder/lower_tail_fc/layers/2/kernel", "decoder/lower_decoder/layers/0/ffn/linear1/kernel",
                 "content_encoder/increase_embed_dim/kernel"):
        assert net[name] > 0, name
    assert all(g == 0 for n, g in net.items() if "/upper_" in n)
    # above sync_max_t nothing is judged: the loss is the denoising loss alone
    model.sync_max_t = 0
    total, metrics = nnx.jit(lambda m: m.loss(batch, jax.random.key(3), False))(model)
    assert float(metrics["sync"]) == 0.0 and float(metrics["sync_fraction"]) == 0.0
    assert float(total) == float(metrics["denoise"])


def test_lip_expert_must_read_the_denoisers_audio_features():
    def build(run, **model):
        config = _with_expert(_small_config(), run)
        config.model.update(model)
        return nnx.eval_shape(lambda: create_model(config.model, SYNTHTALK_SPEC, nnx.Rngs(0), lip_expert=_part(run)))

    build("mirrortalk_jax/configs/dreamtalk_lip_expert.py:tiny")  # 320-d log-mel per frame on both sides
    # 2 rows of 320 per frame: 640-d features, the expert reads 320
    with pytest.raises(ValueError, match=r"reads 320-d .*dreamtalk_lip_expert\.py.* carry 640 \(mirrortalk_jax/configs/dreamtalk\.py"):
        build("mirrortalk_jax/configs/dreamtalk_lip_expert.py:tiny", audio_stride=2)
    with pytest.raises(TypeError, match="not a mirrortalk_jax/configs/dreamtalk_lip_expert.py lip expert"):
        build("mirrortalk_jax/configs/motion_expert.py:tiny")


def test_style_code_interface_and_sampling_of_the_wrapper():
    config = _random_config(1)
    model = _perturbed(dreamtalk.DreamTalk(config, SYNTHTALK_SPEC, nnx.Rngs(0)))
    ref = jax.random.normal(jax.random.key(0), (2, 10, 18))
    valid = jnp.arange(10)[None] < jnp.array([[6], [10]])
    code = model.style_code(ref, valid)
    clip, pad = model.style_inputs(ref, valid)
    assert clip.shape == (2, 12, 18) and bool(pad[0, 6:].all()) and not bool(pad[1, :10].any())
    np.testing.assert_allclose(code, model.net.style_encoder(clip, pad), rtol=1e-6)
    # the padded frames of a reference do not change its code
    np.testing.assert_allclose(model.style_code(ref.at[0, 6:].set(5.0), valid)[0], code[0], rtol=1e-5, atol=1e-6)
    # per-frame features (B, L, stride * F) -> windows of the frame's rows: stride 2 here, as wav2vec2 at 50 Hz
    model.audio_stride, model.win_size = 2, 1
    feats = jnp.arange(2 * 3 * 2 * 4, dtype=jnp.float32).reshape(2, 3, 8)
    windows = (model.audio_windows(feats) * model.audio_std + model.audio_mean)
    rows = np.asarray(feats).reshape(2, 6, 4)
    np.testing.assert_allclose(windows[0, 1], rows[0, 1:4], rtol=1e-6)  # frame 1: rows 2 * 1 - 1 .. 2 * 1 + 1
    np.testing.assert_allclose(windows[1, 0, 0], np.full(4, model.audio_mean), rtol=1e-6)  # zero row before the start


def test_long_audio_memory_is_flat_in_length():
    """Compiled temporaries of the frame-block sampler do not grow with the audio (only its inputs do)."""
    net = nnx.eval_shape(lambda: dreamtalk.DreamTalk(_random_config(1), SYNTHTALK_SPEC, nnx.Rngs(0)).net)
    graphdef, state = nnx.split(net)

    def temp_bytes(frames, chunk):
        run = compiled.jitted(dt._sample_block, graphdef, sampler="ddim", num_steps=2, branches=("cond",),
                              guidance_scale=None, chunk_frames=chunk, raw_features=(2, 1),
                              schedule_args=(1000, 1e-4, 0.02), flexibility=0.0)
        args = (state, jax.ShapeDtypeStruct((1, frames, 320), jnp.float32),
                jax.ShapeDtypeStruct((1, frames, 18), jnp.float32), jax.ShapeDtypeStruct((1, 12, 18), jnp.float32),
                jax.ShapeDtypeStruct((1, 12), bool), None, jax.random.key(0), jnp.int32(0))
        return run.lower(*args).compile().memory_analysis().temp_size_in_bytes

    short, long = temp_bytes(64, 16), temp_bytes(1024, 16)
    assert long <= 1.1 * short + 4096, (short, long)
    assert temp_bytes(1024, None) > 4 * long  # all frames at once: temporaries grow with the length
