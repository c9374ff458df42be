"""What DreamTalk never released, trained here: the style-aware lip expert and the diffusion style predictor."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mirrortalk_jax import base_config
from mirrortalk_jax.data import audio_features, pipeline
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from mirrortalk_jax.data.sources import ClipSource
from mirrortalk_jax.data.windows import sliding_windows
from mirrortalk_jax.models.dreamtalk import lip_expert as lip
from mirrortalk_jax.models.dreamtalk import style_predictor as predictor_lib
from mirrortalk_jax.models import registry
from mirrortalk_jax.models.registry import create_model
from mirrortalk_jax.runs import loader
from mirrortalk_jax.sample import dreamtalk_style
from mirrortalk_jax.train import trainer
from mirrortalk_jax.train.mesh import DEFAULT_RULES
from mirrortalk_jax.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 5


def _config(name, variant="tiny"):
    return base_config.load_config_file(base_config.config_path(name), variant)


def _model(config, seed=0):
    return create_model(config.model, SYNTHTALK_SPEC, nnx.Rngs(seed))


def _normal(rng, *shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)


# ----- Configs and shapes -----


@pytest.mark.parametrize("name", ["dreamtalk_lip_expert", "dreamtalk_style_predictor"])
def test_configs_build_every_variant_with_annotated_params(name):
    known = {rule for rule, _ in DEFAULT_RULES}
    for variant in ("tiny", "default", "real"):
        config = _config(name, variant)
        assert config.model.name == name and config.train.num_steps > 0
        model = nnx.eval_shape(lambda c=config: _model(c))  # abstract: the structure without the init cost
        params = nnx.to_flat_state(nnx.state(model, nnx.Param))
        assert len(params) > 10
        for path, var in params:
            axes = var.get_metadata().get("out_sharding")
            assert axes is not None and len(axes) == len(var.shape) and set(axes) - {None} <= known, (path, axes)


@pytest.mark.parametrize("kind", ["dreamtalk", "sdse"])
def test_lip_expert_style_sources_and_unconditional_variant(kind):
    if kind == "dreamtalk":
        pytest.importorskip("mirrortalk_jax.models.dreamtalk.denoiser")
    config = _config("dreamtalk_lip_expert")
    config.model.style_encoder.kind = kind
    model = nnx.eval_shape(lambda: _model(config))
    names = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert any(n.startswith("style_source/") for n in names)
    assert registry.frozen_subtrees(model) == ()  # trained jointly
    config.model.conditional = False
    model = nnx.eval_shape(lambda: _model(config))
    names = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert not any(n.startswith(("style_source/", "motion_style/", "audio_style/")) for n in names)
    config.model.style_encoder.kind = "nope"
    config.model.conditional = True
    with pytest.raises(ValueError, match="unknown style encoder kind"):
        _model(config)


def test_lip_expert_shapes_and_sync_loss_gradient():
    model = _model(_config("dreamtalk_lip_expert"))
    rng = np.random.default_rng(0)
    ref, ref_mask = _normal(rng, 3, 48, 18), jnp.asarray(np.arange(48)[None] < np.array([[48], [30], [10]]))
    motion_w, audio_w = _normal(rng, 3, 4, K, 18), _normal(rng, 3, 4, K, 320)

    @nnx.jit
    def forward(m, motion_w, audio_w, ref, ref_mask):
        code = m.style_code(ref, ref_mask)
        return code, m.embed_motion(motion_w, code), m.embed_audio(audio_w, code), m.sync_probability(
            motion_w, audio_w, code)

    code, em, ea, p = forward(model, motion_w, audio_w, ref, ref_mask)
    assert code.shape == (3, 32) and em.shape == ea.shape == (3, 4, 32) and p.shape == (3, 4)
    np.testing.assert_allclose(np.linalg.norm(em, axis=-1), 1.0, rtol=1e-5)
    cos = np.sum(np.asarray(em) * np.asarray(ea), -1)
    np.testing.assert_allclose(p, (cos + 1) / 2, rtol=1e-5)  # "affine": P = (cos + 1) / 2
    # The style code changes the judgement: the same windows under another style give other probabilities.
    _, _, _, p_other = forward(model, motion_w, audio_w, ref[::-1], ref_mask[::-1])
    assert np.abs(np.asarray(p_other) - np.asarray(p)).max() > 1e-4
    with pytest.raises(ValueError, match="18"):
        model.embed_motion(motion_w[..., :6], code)
    config = _config("dreamtalk_lip_expert")
    config.model.similarity = "relu"  # Wav2Lip's form: non-negative embeddings, P = cos
    _, em, ea, p = forward(_model(config), motion_w, audio_w, ref, ref_mask)
    assert np.all(np.asarray(em) >= 0) and np.all(np.asarray(ea) >= 0)
    np.testing.assert_allclose(p, np.clip(np.sum(np.asarray(em) * np.asarray(ea), -1), 1e-6, 1 - 1e-6), rtol=1e-5)

    motion, audio = _normal(rng, 3, 16, 18), _normal(rng, 3, 16, 320)
    mask = jnp.asarray(np.arange(16)[None] < np.array([[16], [10], [16]]))
    loss, grad = jax.jit(jax.value_and_grad(lambda x: lip.sync_loss(model, x, audio, code, mask)))(motion)
    grad = np.asarray(grad)
    lower = SYNTHTALK_SPEC.group_mask("lower")
    assert np.abs(grad[..., lower]).sum() > 0 and np.all(grad[..., ~lower] == 0)  # the mouth only
    assert np.all(grad[1, 10:] == 0)  # padded frames do not contribute
    # The oracle: -log P over the valid windows, from the expert's probability of explicitly cut windows.
    windows = [(sliding_windows(motion[i], K), sliding_windows(audio[i], K)) for i in range(3)]
    probs = np.asarray(nnx.jit(lambda m, x, a, c: m.sync_probability(x, a, c))(
        model, jnp.stack([w[0] for w in windows]), jnp.stack([w[1] for w in windows]), code))
    valid = np.stack([sliding_windows(np.asarray(mask[i]), K).all(-1) for i in range(3)])
    assert valid.sum() == 12 + 6 + 12
    assert float(loss) == pytest.approx(-np.log(probs[valid]).mean(), rel=1e-5)


def test_style_predictor_pieces():
    rng = np.random.default_rng(1)
    lm = _normal(rng, 2, 68, 3)
    moved = 2.5 * lm + jnp.asarray([0.3, -1.0, 4.0])
    np.testing.assert_allclose(predictor_lib.identity_descriptor(moved), predictor_lib.identity_descriptor(lm),
                               rtol=1e-4, atol=1e-5)  # position and scale do not matter, shape does
    x = jnp.arange(2 * 7 * 3, dtype=jnp.float32).reshape(2, 7, 3)
    mask = jnp.asarray([[True] * 7, [True] * 5 + [False] * 2])
    pooled, valid = predictor_lib.pool_frames(x, mask, 4)
    assert pooled.shape == (2, 2, 3) and valid.tolist() == [[True, True], [True, True]]
    np.testing.assert_allclose(pooled[0, 1], x[0, 4:7].mean(0))
    np.testing.assert_allclose(pooled[1, 1], x[1, 4])  # only the valid frame of the last group

    model = _model(_config("dreamtalk_style_predictor"))
    b, length = 3, 32
    batch = {"motion": _normal(rng, b, length, 18), "motion_mask": jnp.ones((b, length), bool),
             "audio_features": _normal(rng, b, length, 320) - 7.5, "reference_landmarks": _normal(rng, b, 68, 3)}
    loss, metrics = nnx.jit(lambda m, x, r: m.loss(x, r, True))(model, batch, jax.random.key(0))
    assert np.isfinite(loss) and set(metrics) >= {"denoise", "x0_mse", "x0_cosine"}
    # Padded audio frames do not change the sampled code (one compiled sampler for both calls).
    padded_audio = batch["audio_features"].at[:, 20:].set(99.0)
    half = batch["motion_mask"].at[:, 20:].set(False)
    codes = [dreamtalk_style.predict_style_code(model, a, half, batch["reference_landmarks"], jax.random.key(2),
                                              num_steps=4) for a in (batch["audio_features"], padded_audio)]
    assert codes[0].shape == (b, model.style_dim) and np.all(np.isfinite(codes[0]))
    np.testing.assert_allclose(codes[0], codes[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="reference_landmarks"):
        model.loss({k: v for k, v in batch.items() if k != "reference_landmarks"}, jax.random.key(0), True)


def test_style_code_of_needs_a_style_encoder():
    with pytest.raises(TypeError, match="no style encoder"):
        lip.style_code_of(_model(_config("motion_expert")), jnp.zeros((1, 8, 18)), jnp.ones((1, 8), bool))


# ----- The pipeline's cross-clip identity input -----


def test_pipeline_reference_landmarks_come_from_another_clip_of_the_speaker(tiny_dataset):
    source = ClipSource(tiny_dataset, "train")
    firsts = {i: source[i]["landmarks_3d"][0] for i in range(len(source))}
    speakers = {i: int(source[i]["speaker_index"]) for i in range(len(source))}
    plain = pipeline.WindowSampler(source, pipeline.WindowConfig(audio_feature="none"))
    with_id = pipeline.WindowSampler(source, pipeline.WindowConfig(audio_feature="none", reference_landmarks=True))
    for i in range(len(source)):
        a = plain.random_map((i, source[i]), np.random.default_rng(i))
        b = with_id.random_map((i, source[i]), np.random.default_rng(i))
        assert "reference_landmarks" not in a and b["reference_landmarks"].shape == (68, 3)
        for key in a:  # the same random stream: everything else is unchanged
            np.testing.assert_array_equal(a[key], b[key])
        match = [j for j, lm in firsts.items() if np.array_equal(lm, b["reference_landmarks"])]
        assert len(match) == 1 and match[0] != i and speakers[match[0]] == speakers[i], (i, match)


# ----- Training through the shared trainer -----


def _clip(source, index):
    record = source[index]
    feats = audio_features.audio_frame_features(record["audio"], record["motion"].shape[0], kind="log_mel",
                                                fps=float(record["fps"]))
    return record["motion"], feats.astype(np.float32)


@pytest.fixture(scope="module")
def lip_run(tiny_dataset, tmp_path_factory):
    """The tiny lip-expert config, shortened: 80 steps of 8 windows x 16 pairs."""
    workdir = tmp_path_factory.mktemp("lip_expert")
    config = _config("dreamtalk_lip_expert")
    config.data.dataset_dir = str(tiny_dataset)
    config.train.update(dict(batch_size=8, num_steps=80, log_every=1, eval_every=0, checkpoint_every=1000,
                             warmup_steps=10))
    trainer.train_and_evaluate(config, workdir)
    return workdir


def test_lip_expert_separates_in_sync_from_shifted_on_heldout_sentences(tiny_dataset, lip_run):
    metrics = read_metrics(lip_run)
    losses = [m["train/loss"] for m in metrics]
    assert len(losses) == 80 and all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.85 * np.mean(losses[:10])
    model = loader.load_model(lip_run).model
    train, heldout = ClipSource(tiny_dataset, "train"), ClipSource(tiny_dataset, "heldout_sentences")
    # Style of each held-out clip: a training clip of the same speaker (as the pipeline's reference).
    reference = {int(train[i]["speaker_index"]): train[i]["motion"][:48] for i in range(len(train))}
    shift, motion_w, audio_w, refs, lengths = 8, [], [], [], []
    for i in range(len(heldout)):
        motion, feats = _clip(heldout, i)
        mw, aw = sliding_windows(motion, K), sliding_windows(feats, K)
        motion_w += [mw[:-shift]] * 2
        audio_w += [aw[:-shift], aw[shift:]]  # in sync; the audio 8 frames late
        refs += [reference[int(heldout[i]["speaker_index"])]] * 2
        lengths += [len(mw) - shift] * 2
    n = max(lengths)  # one padded batch: one compilation instead of one per clip length

    def pad(w):
        return np.concatenate([w, np.zeros((n - len(w),) + w.shape[1:], w.dtype)])

    @nnx.jit
    def probabilities(m, motion_w, audio_w, ref, ref_mask):
        return m.sync_probability(motion_w, audio_w, m.style_code(ref, ref_mask))

    ref_mask = np.stack([np.arange(48) < len(r) for r in refs])
    refs = np.stack([np.concatenate([r, np.zeros((48 - len(r), r.shape[1]), r.dtype)]) for r in refs])
    p = np.asarray(probabilities(model, np.stack([pad(w) for w in motion_w]), np.stack([pad(w) for w in audio_w]),
                                 refs, ref_mask))
    means = [p[j, :lengths[j]].mean() for j in range(len(lengths))]
    aligned, shifted = means[0::2], means[1::2]
    # Seen: 0.43-0.57 in sync vs 0.28-0.42 with the audio 8 frames late, on every held-out clip, with either
    # style encoder kind (training accuracy about 0.8; an untrained expert gives 0.5 for both).
    assert np.mean(aligned) > np.mean(shifted) + 0.1, (aligned, shifted)
    assert sum(a > s for a, s in zip(aligned, shifted)) >= 0.75 * len(aligned), (aligned, shifted)


def test_style_predictor_trains_on_a_frozen_style_encoder(tiny_dataset, lip_run, tmp_path):
    """The tiny config with the lip expert run as the frozen style source: loaded, never updated, loss falls."""
    config = _config("dreamtalk_style_predictor")
    config.data.dataset_dir = str(tiny_dataset)
    config.model.style_encoder_workdir = str(lip_run)
    config.train.update(dict(batch_size=8, num_steps=30, log_every=1, eval_every=0, checkpoint_every=1000,
                             warmup_steps=5))
    state = trainer.train_and_evaluate(config, tmp_path)
    losses = [m["train/loss"] for m in read_metrics(tmp_path)]
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert np.mean(losses[-8:]) < 0.6 * np.mean(losses[:8]), losses
    expert = nnx.state(loader.load_model(lip_run).model, nnx.Param)
    got = jax.tree.leaves(state.params["style_source"])
    assert len(got) == len(jax.tree.leaves(expert)) > 0
    for a, b in zip(got, jax.tree.leaves(expert)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ----- Generation without a reference clip -----


def test_generation_without_reference_feeds_the_denoiser_a_predicted_code():
    pytest.importorskip("mirrortalk_jax.models.dreamtalk.denoiser")
    from mirrortalk_jax.sample import dreamtalk as dreamtalk_sampling

    dt_config = _config("dreamtalk")
    d = 32
    dt_config.model.d_model = d
    for stack in ("content_encoder", "style_encoder", "decoder"):
        dt_config.model[stack].update(num_layers=1, ffn_dim=64)
    dt_config.model.decoder.tail_hidden = 16
    denoiser = _model(dt_config)
    config = _config("dreamtalk_style_predictor")
    config.model.style_encoder.update(kind="dreamtalk", hidden=d, num_heads=4, mlp_dim=64)
    predictor = _model(config)
    assert predictor.style_dim == d
    rng = np.random.default_rng(3)
    b, length = 2, 24
    audio = _normal(rng, b, length, 320) - 7.5  # per-frame log-mel, as both models' batches carry it
    mask, landmarks = jnp.ones((b, length), bool), _normal(rng, b, 68, 3)
    motion, code = dreamtalk_style.generate_without_reference(predictor, denoiser, audio, mask, landmarks,
                                                            jax.random.key(0), style_steps=4, num_steps=5)
    assert motion.shape == (b, length, 18) and code.shape == (b, d)
    assert np.all(np.isfinite(motion)) and np.all(np.isfinite(code))
    # The motion is the denoiser's DDIM output for exactly that code; another code gives other motion.
    k_motion = jax.random.split(jax.random.key(0))[1]
    rows = (audio - dt_config.model.audio_mean) / dt_config.model.audio_std

    def sample(c):
        return dreamtalk_sampling.sample(denoiser.net, rows, ready_style_code=c, rng=k_motion, num_steps=5,
                                         raw_features=(dt_config.model.win_size, 1), guidance_scale=1.0)
    np.testing.assert_allclose(motion, sample(code), rtol=1e-6, atol=1e-6)
    assert np.abs(np.asarray(sample(code[::-1])) - np.asarray(motion)).max() > 1e-4
    config.model.style_encoder.update(hidden=16)
    with pytest.raises(ValueError, match="16-d style codes"):
        dreamtalk_style.generate_without_reference(_model(config), denoiser, audio, mask, landmarks, jax.random.key(0))
