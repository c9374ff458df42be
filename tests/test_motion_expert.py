"""The motion expert (lip-sync expert on motion) and the SyncNet offset / confidence procedure."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mirrortalk_jax.data import audio_features
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from mirrortalk_jax.data.sources import ClipSource
from mirrortalk_jax.data.windows import sliding_windows
from mirrortalk_jax.evaluate import sync
from mirrortalk_jax.models.registry import create_model
from mirrortalk_jax.train import trainer
from mirrortalk_jax.train.mesh import DEFAULT_RULES
from mirrortalk_jax.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 5


def _config(arg="tiny"):
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, "mirrortalk_jax/configs/motion_expert.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def _model(seed=0):
    return create_model(_config().model, SYNTHTALK_SPEC, nnx.Rngs(seed))


# ----- The SyncNet procedure -----

def _reference_calc_pdist(video, audio, vshift):
    """A line-by-line transcription of syncnet_python's calc_pdist + evaluate, as the oracle."""
    win = 2 * vshift + 1
    padded = np.concatenate([np.zeros((vshift, audio.shape[1])), audio, np.zeros((vshift, audio.shape[1]))])
    dists = [np.linalg.norm(np.repeat(video[[i]], win, 0) - padded[i:i + win] + 1e-6, axis=1)
             for i in range(len(video))]
    mdist = np.mean(np.stack(dists, 1), 1)
    minidx = int(np.argmin(mdist))
    return vshift - minidx, float(np.median(mdist) - mdist[minidx]), float(mdist[minidx]), mdist


def _delayed(video, d, rng):
    """audio[t] = video[t - d] (audio delayed by d frames); rows with no source get fresh random vectors."""
    audio = rng.normal(size=video.shape)
    t = np.arange(len(video))
    src = t - d
    ok = (src >= 0) & (src < len(video))
    audio[ok] = video[src[ok]]
    return audio


@pytest.mark.parametrize("delay", [-9, -4, -1, 0, 2, 5, 12])
def test_sync_offset_sign_convention(delay):
    rng = np.random.default_rng(delay + 100)
    video = rng.normal(size=(80, 16))
    audio = _delayed(video, delay, rng)
    result = sync.sync_offset_confidence(video, audio, vshift=15)
    assert result.offset == -delay  # audio delayed by d frames -> offset -d (documented in evaluate/sync.py)
    assert result.confidence > 0.5 and result.mean_dists.shape == (31,)
    assert result.min_dist == pytest.approx(result.mean_dists.min())
    offset, conf, min_dist, mdist = _reference_calc_pdist(video, audio, 15)
    assert result.offset == offset
    assert result.confidence == pytest.approx(conf) and result.min_dist == pytest.approx(min_dist)
    np.testing.assert_allclose(result.mean_dists, mdist, rtol=1e-12)


def test_identical_streams_give_offset_zero_and_batch_helpers():
    video = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    result = sync.sync_offset_confidence(video, video, vshift=6)
    assert result.offset == 0 and result.confidence > 0 and result.min_dist < 1e-4
    results = sync.batch_offsets([video, video[:20]], [video, video[:20]], vshift=6)
    assert [r.offset for r in results] == [0, 0]
    summary = sync.summarize(results)
    assert summary["offset_zero_fraction"] == 1.0 and summary["lse_d"] < 1e-4 and summary["lse_c"] > 0
    with pytest.raises(ValueError, match="same"):
        sync.sync_offset_confidence(video, video[:30], vshift=6)


def test_every_param_is_annotated_with_known_logical_axes():
    known = {name for name, _ in DEFAULT_RULES}
    params = nnx.state(nnx.eval_shape(_model), nnx.Param)  # abstract: the metadata without the init cost
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    assert len(leaves) > 10
    for var in leaves:
        axes = var.get_metadata().get("out_sharding")
        assert axes is not None, var
        assert len(axes) == var.get_value().ndim and set(axes) <= known, (axes, var.get_value().shape)


def test_shapes():
    model = _model()
    rng = np.random.default_rng(0)
    motion = jnp.asarray(rng.normal(size=(3, 4, K, 18)), jnp.float32)
    audio = jnp.asarray(rng.normal(size=(3, 4, K, 320)), jnp.float32)
    # Jitted: eager dispatch of every small op costs seconds on a loaded 2-core machine.
    em, ea, logits = nnx.jit(lambda m, x, a: (m.embed_motion(x), m.embed_audio(a), m.sync_logit(x, a)))(
        model, motion, audio)
    assert em.shape == ea.shape == (3, 4, 32) and logits.shape == (3, 4)
    np.testing.assert_allclose(np.linalg.norm(em, axis=-1), 1.0, rtol=1e-5)
    mask = np.ones((3, 20), bool)
    mask[1, 12:] = False
    mask[2, 3:] = False  # no full window: zeros
    content = nnx.jit(lambda m, a, k: m.content_embedding(a, k))(
        model, jnp.asarray(rng.normal(size=(3, 20, 320)), jnp.float32), jnp.asarray(mask))
    assert content.shape == (3, 32) and np.all(content[2] == 0) and np.all(np.isfinite(content))
    with pytest.raises(ValueError, match="D=18"):
        model.embed_motion(motion[..., :6])


def test_sync_loss_has_gradient_wrt_lower_face_motion_only():
    model = _model()
    rng = np.random.default_rng(1)
    motion = jnp.asarray(rng.normal(size=(2, 16, 18)), jnp.float32)
    audio = jnp.asarray(rng.normal(size=(2, 16, 320)), jnp.float32)
    mask = jnp.asarray(np.arange(16)[None] < np.array([[16], [10]]))
    grad = np.asarray(jax.jit(jax.grad(lambda m: model.sync_loss(m, audio, mask)))(motion))
    lower = SYNTHTALK_SPEC.group_mask("lower")
    assert np.abs(grad[..., lower]).sum() > 0 and np.all(grad[..., ~lower] == 0)
    assert np.all(grad[1, 10:] == 0)  # padded frames do not contribute


def test_training_pairs_respect_categories_and_valid_frames():
    """Channel 0 of motion/audio holds the frame index, channel 1 the clip: read the pairs back."""
    bsz, length = 8, 32
    n = np.array([32, 32, 20, 9, 32, 6, 32, 32])  # valid lengths; element 5 is too short to shift
    frame = np.broadcast_to(np.arange(length, dtype=np.float32)[None], (bsz, length))
    clip = np.broadcast_to(np.arange(bsz, dtype=np.float32)[:, None], (bsz, length))
    motion = np.zeros((bsz, length, 18), np.float32)
    audio = np.zeros((bsz, length, 320), np.float32)
    motion[..., 0], motion[..., 1], audio[..., 0], audio[..., 1] = frame, clip, frame, clip
    batch = {"motion": jnp.asarray(motion), "audio_features": jnp.asarray(audio),
             "motion_mask": jnp.asarray(np.arange(length)[None] < n[:, None]),
             "speaker_index": jnp.asarray([0, 0, 1, 1, 2, 2, 3, 3], jnp.int32),
             "clip_index": jnp.arange(bsz, dtype=jnp.int32)}
    model = _model()
    sample = nnx.jit(lambda m, b, r: m._sample_pairs(b, r))  # eager dispatch of many small ops is slow
    mw, aw, labels, category, weight = jax.device_get(sample(model, batch, jax.random.key(3)))
    m_start, a_start = mw[..., 0, 0], aw[..., 0, 0]
    m_clip, a_clip = mw[..., 0, 1], aw[..., 0, 1]
    assert np.all(weight == 1)
    assert np.all(m_clip == np.arange(bsz)[:, None])
    assert np.all(m_start + K <= n[:, None]) and np.all(a_start + K <= n[a_clip.astype(int)])
    np.testing.assert_array_equal(np.diff(mw[..., 0], axis=-1), 1)  # consecutive frames
    same = category < 3
    assert np.all(a_clip[same] == m_clip[same]) and np.all(labels == (category == 0))
    shift = np.abs(a_start - m_start)
    assert np.all(shift[category == 0] == 0)
    assert np.all((shift[category == 1] >= 2) & (shift[category == 1] <= 5))
    far = (category == 2) & (n[:, None] >= 20)  # long enough not to be clipped
    assert np.all((shift[far] >= 5) & (shift[far] <= 10))
    assert np.all(shift[category == 2] >= 2)
    other = category == 3
    speakers = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    assert np.all(speakers[a_clip[other].astype(int)] != speakers[m_clip[other].astype(int)])
    assert np.all(category[5] % 3 == 0)  # 1 frame of room: only aligned or other-clip pairs
    counts = np.bincount(category.ravel(), minlength=4) / category.size
    assert counts[0] > 0.2 and counts[3] > 0.1


# ----- Training -----

@nnx.jit
def _probabilities(model, motion_windows, audio_windows):
    return jax.nn.sigmoid(model.sync_logit(motion_windows, audio_windows))


def _clip(source, index):
    """(T, D) motion and (T, 320) log-mel features of a record, as the pipeline computes them."""
    record = source[index]
    t = record["motion"].shape[0]
    feats = audio_features.audio_frame_features(record["audio"], t, kind="log_mel", fps=float(record["fps"]))
    return record["motion"], feats.astype(np.float32)


def _clip_probabilities(model, source, indices, shift):
    """Mean sync probability of aligned windows and of windows whose audio is `shift` frames later."""
    windows = {"aligned": ([], []), "shifted": ([], [])}
    for i in indices:
        motion, feats = _clip(source, i)
        mw, aw = sliding_windows(motion, K), sliding_windows(feats, K)
        windows["aligned"][0].append(mw)
        windows["aligned"][1].append(aw)
        windows["shifted"][0].append(mw[:-shift])
        windows["shifted"][1].append(aw[shift:])
    # One call per condition: a jitted call per clip would compile once per clip length.
    return tuple(float(np.mean(_probabilities(model, np.concatenate(m), np.concatenate(a))))
                 for m, a in windows.values())


def _train(dataset, workdir, **train):
    config = _config("tiny")
    config.data.dataset_dir = str(dataset)
    config.data.window_frames = 32
    config.train.update(dict(batch_size=8, log_every=1, eval_every=0, checkpoint_every=1000, warmup_steps=10))
    config.train.update(train)
    state = trainer.train_and_evaluate(config, workdir)
    model = create_model(config.model, SYNTHTALK_SPEC, nnx.Rngs(0))
    nnx.update(model, state.params)
    return model, read_metrics(workdir)


def test_training_learns_sync(tiny_dataset, tmp_path):
    # 80 steps of 8 windows x 16 pairs: about 20 s on 2 cores. Seen: accuracy 0.85-0.88 over the last steps,
    # p(sync) 0.70-0.75 aligned vs 0.22-0.26 with the audio 8 frames late, offsets exact.
    model, metrics = _train(tiny_dataset, tmp_path, num_steps=80)
    losses = [m["train/loss"] for m in metrics]
    assert len(losses) == 80 and all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    assert np.mean([m["train/accuracy"] for m in metrics[-10:]]) > 0.7  # chance: 0.6 (all "not in sync")

    source = ClipSource(tiny_dataset, "train")
    aligned, shifted = _clip_probabilities(model, source, range(4), shift=8)
    assert aligned > shifted + 0.2, (aligned, shifted)

    # The offset search finds a 3-frame audio delay with the documented sign (offset -3), on most clips.
    offsets = []
    for i in range(4):
        motion, feats = _clip(source, i)
        delayed = np.concatenate([np.repeat(feats[:1], 3, 0), feats[:-3]])  # audio 3 frames late
        result = sync.expert_sync(model, motion, delayed, vshift=10)
        assert result.mean_dists.shape == (21,) and result.confidence > 0
        offsets.append(result.offset)
    assert offsets.count(-3) >= 3, offsets


@pytest.mark.slow
def test_tiny_config_generalises_to_heldout_sentences(tiny_dataset, tmp_path):
    """The `tiny` config as shipped (300 steps of 16 windows, about a minute): sync on unseen sentences."""
    model, metrics = _train(tiny_dataset, tmp_path, batch_size=16, num_steps=300, eval_every=300, warmup_steps=20)
    final = [m for m in metrics if "eval/accuracy" in m][-1]
    assert final["eval/accuracy"] > 0.75 and final["eval/pos_prob"] > final["eval/neg_prob"] + 0.3, final
    source = ClipSource(tiny_dataset, "heldout_sentences")
    aligned, shifted = _clip_probabilities(model, source, range(len(source)), shift=8)
    assert aligned > shifted + 0.25, (aligned, shifted)
    hits = 0
    for i in range(len(source)):
        motion, feats = _clip(source, i)
        for delay in (-4, 4):
            shifted_audio = np.roll(feats, delay, axis=0)  # delay > 0: audio late (wrapped rows at one end)
            hits += sync.expert_sync(model, motion, shifted_audio, vshift=10).offset == -delay
    assert hits >= 0.75 * 2 * len(source), hits
