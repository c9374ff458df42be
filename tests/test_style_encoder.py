"""SDSE (MirrorTalk's style encoder) and the disentanglement objectives: math, masking, sharding metadata,
and a short training run whose style codes cluster by speaker on held-out sentences."""

import importlib.util
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx

from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from mirrortalk_jax.data.sources import ClipSource
from mirrortalk_jax.models.nn import layers
from mirrortalk_jax.models.mirrortalk import style_encoder as se
from mirrortalk_jax.models import registry
from mirrortalk_jax.models.registry import create_model
from mirrortalk_jax.objectives import disentangle as dis
from mirrortalk_jax.train import mesh as mesh_lib
from mirrortalk_jax.train import trainer
from mirrortalk_jax.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**model):
    spec = importlib.util.spec_from_file_location("style_cfg", os.path.join(ROOT, "mirrortalk_jax/configs/style_encoder.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("tiny")
    config.model.update(model)
    return config


# ----- Objectives -----


def _hsic_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Slow textbook HSIC: 1/(n-1)^2 tr(K H L H), Gaussian kernels with median-distance bandwidths."""
    n = len(x)

    def gram(a):
        d = np.sqrt(((a[:, None, :] - a[None, :, :]) ** 2).sum(-1))
        sigma = np.median(d[np.triu_indices(n, 1)])
        return np.exp(-d ** 2 / (2 * sigma ** 2))

    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(gram(x) @ h @ gram(y) @ h) / (n - 1) ** 2)


_hsic = jax.jit(dis.hsic)


def test_hsic_detects_dependence_and_matches_reference():
    rng = np.random.default_rng(0)
    n = 128
    x = rng.normal(size=(n, 3)).astype(np.float32)
    independent = rng.normal(size=(n, 2)).astype(np.float32)
    nonlinear = (np.stack([np.sin(2 * x[:, 0]), x[:, 1] ** 2], 1) + 0.1 * rng.normal(size=(n, 2))).astype(np.float32)
    h_ind, h_dep = float(_hsic(x, independent)), float(_hsic(x, nonlinear))
    assert 0 <= h_ind < 0.003  # the biased estimator's O(1/n) offset, about 1e-3 here
    assert h_dep > 5 * h_ind
    for a, b in [(x, independent), (x, nonlinear)]:
        np.testing.assert_allclose(float(_hsic(a, b)), _hsic_reference(a, b), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(float(_hsic(x + 5.0, nonlinear - 3.0)), h_dep, rtol=1e-4)
    # Finite gradients even with coinciding points (zero distances on and off the diagonal).
    grad = jax.jit(jax.grad(dis.hsic))(np.repeat(x[:8], 2, axis=0), nonlinear[:16])
    assert np.all(np.isfinite(grad))
    assert np.isfinite(float(_hsic(np.zeros((16, 3), np.float32), np.zeros((16, 2), np.float32))))  # guarded


def test_orthogonality():
    # Columns of a Sylvester-Hadamard matrix (all but the constant one) are centred and mutually orthogonal,
    # and every row has the same norm, so row normalisation keeps them orthogonal.
    h = np.array([[1.0]])
    for _ in range(3):
        h = np.block([[h, h], [h, -h]])
    a, b = h[:, 1:4], h[:, 4:8]
    assert float(dis.orthogonality(a, b)) < 1e-10
    assert float(dis.orthogonality(a + 3.0, 2.0 * b)) < 1e-10  # offsets and scales do not matter
    x = np.random.default_rng(1).normal(size=(32, 6))
    same = float(dis.orthogonality(x, x))
    assert 0.1 < same <= 1.0
    assert float(dis.orthogonality(x, x @ np.random.default_rng(2).normal(size=(6, 4)))) > 0.05


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_triplet_is_zero_when_the_margin_holds(metric):
    anchor = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    positive = jnp.array([[0.9, 0.1], [0.1, 0.9]])
    negative = jnp.array([[-1.0, 0.2], [0.3, -1.0]])
    assert float(dis.triplet(anchor, positive, negative, margin=0.2, metric=metric)) == 0.0
    # Swapping positive and negative violates it by d(a, n) - d(a, p) + margin.
    violated = float(dis.triplet(anchor, negative, positive, margin=0.2, metric=metric))
    gap = dis.distance(anchor, negative, metric) - dis.distance(anchor, positive, metric)
    np.testing.assert_allclose(violated, float(jnp.mean(gap + 0.2)), rtol=1e-6)
    # Weights mask out samples.
    assert float(dis.triplet(anchor, negative, positive, 0.2, metric, weights=jnp.array([0, 0]))) == 0.0


def test_batch_negatives():
    rng = np.random.default_rng(0)
    negatives = jax.jit(dis.batch_negatives)
    for seed in range(20):
        speakers = jnp.asarray(rng.integers(0, 3, size=8), jnp.int32)
        neg = np.asarray(negatives(jax.random.key(seed), speakers))
        has = np.asarray(dis.has_negative(speakers))
        assert neg.dtype == np.int32 and neg.shape == (8,)
        assert np.all(np.asarray(speakers)[neg][has] != np.asarray(speakers)[has])
        assert np.all(neg[~has] != np.arange(8)[~has])  # a single-speaker batch: another element, not itself
    same = jnp.zeros(4, jnp.int32)
    assert not np.any(np.asarray(dis.has_negative(same)))
    assert np.all(np.asarray(dis.batch_negatives(jax.random.key(0), same)) != np.arange(4))
    # Hardest negative: the closest element of another speaker.
    speakers = jnp.array([0, 0, 1, 1], jnp.int32)
    dist = jnp.array([[0, 0, 5, 1], [0, 0, 1, 5], [2, 9, 0, 0], [9, 2, 0, 0]], jnp.float32)
    np.testing.assert_array_equal(dis.batch_negatives(jax.random.key(0), speakers, dist), [3, 2, 0, 1])


# ----- Encoder -----


def _tiny_encoder(seed=0):
    return se.StyleEncoder(motion_dim=18, hidden=32, num_layers=1, num_heads=4, mlp_dim=64, num_slots=4,
                           style_dim=16, content_dim=8, max_frames=40, rngs=nnx.Rngs(seed))


def test_encoder_shapes_and_mask():
    enc = nnx.jit(_tiny_encoder)()  # one compiled initialisation instead of many eager ops
    rng = np.random.default_rng(0)
    motion = rng.normal(size=(3, 40, 18)).astype(np.float32)
    lengths = np.array([40, 25, 7])
    mask = np.arange(40)[None] < lengths[:, None]
    clean = np.where(mask[..., None], motion, 0.0)
    garbage = np.where(mask[..., None], motion, 100.0 * rng.normal(size=motion.shape)).astype(np.float32)
    garbage[1, 30] = np.nan  # even NaN behind the mask must not leak

    @nnx.jit
    def run(enc, m, k):
        return enc.encode(m, k)

    code, content = run(enc, clean, mask)
    assert code.shape == (3, 16) and content.shape == (3, 8)
    code_garbage, _ = run(enc, garbage, mask)
    np.testing.assert_allclose(code_garbage, code, rtol=1e-5, atol=1e-6)
    # The same clip without its padding gives the same code.
    short, _ = run(enc, jnp.asarray(motion[2:, :7]), jnp.ones((1, 7), bool))
    np.testing.assert_allclose(short, code[2:], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="max_frames"):
        enc(jnp.zeros((1, 41, 18)), jnp.ones((1, 41), bool))


def test_every_param_has_logical_axes():
    config = _config()
    model = nnx.eval_shape(lambda: create_model(config.model, SYNTHTALK_SPEC, nnx.Rngs(0)))
    known = {name for name, _ in mesh_lib.DEFAULT_RULES}
    params = nnx.state(model, nnx.Param)
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    assert len(leaves) > 20
    for path, var in jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]:
        axes = var.get_metadata().get("out_sharding")
        assert axes is not None and len(axes) == var.get_value().ndim, (path, axes)
        assert set(axes) <= known, (path, axes)
        mesh_axes = [mesh_lib.DEFAULT_RULES[[n for n, _ in mesh_lib.DEFAULT_RULES].index(a)][1] for a in axes]
        used = [m for m in mesh_axes if m is not None]
        assert len(used) == len(set(used)), (path, axes)  # no mesh axis twice: a valid PartitionSpec
    # The default content encoder is fixed: not a Param anywhere.
    assert "content_encoder" not in params
    assert isinstance(model.content_encoder.projection, layers.Frozen)


class _ParamContentEncoder(nnx.Module):
    """A content encoder with trainable-looking weights, as a loaded motion expert has."""

    def __init__(self, rngs):
        self.proj = nnx.Linear(320, 32, rngs=rngs)

    def content_embedding(self, audio_features, mask):
        return self.proj(audio_features.mean(axis=1))


def test_content_encoder_part_is_kept_as_params_and_frozen():
    """A content encoder part (a motion expert run, built by runs.loader) stays Params, so the run loader can fill
    them, and is frozen; without one, the fixed random projection is not a Param at all."""
    config = _config()
    model = nnx.eval_shape(lambda: create_model(config.model, SYNTHTALK_SPEC, nnx.Rngs(0),
                                                content_encoder=_ParamContentEncoder(nnx.Rngs(1))))
    assert "content_encoder" in nnx.state(model, nnx.Param)
    assert registry.frozen_subtrees(model) == ("content_encoder",)
    batch = {"audio_features": jnp.ones((2, 4, 320)), "motion_mask": jnp.ones((2, 4), bool)}
    assert nnx.eval_shape(lambda m: m.content_features(batch), model).shape == (2, 32)
    plain = nnx.eval_shape(lambda: create_model(config.model, SYNTHTALK_SPEC, nnx.Rngs(0)))
    assert "content_encoder" not in nnx.state(plain, nnx.Param) and registry.frozen_subtrees(plain) == ()
    with pytest.raises(TypeError, match="no content_embedding"):
        create_model(config.model, SYNTHTALK_SPEC, nnx.Rngs(0), content_encoder=nnx.Linear(2, 2, rngs=nnx.Rngs(0)))


# ----- Training -----


@nnx.jit
def _encode(encoder, motion, mask):
    return encoder(motion, mask)


def _clips(source: ClipSource, frames: int):
    """The first `frames` frames of every clip, padded: (N, frames, D), masks (N, frames), speakers (N,),
    style_params (N, 9)."""
    motions, masks, speakers, styles = [], [], [], []
    for i in range(len(source)):
        record = source[i]
        m = record["motion"][:frames]
        motions.append(np.pad(m, ((0, frames - len(m)), (0, 0))))
        masks.append(np.arange(frames) < len(m))
        speakers.append(int(record["speaker_index"]))
        styles.append(record["style_params"])
    return np.stack(motions), np.stack(masks), np.array(speakers), np.stack(styles)


def _separation(codes, speakers):
    """Mean cosine distance between clips of different speakers / between clips of the same speaker."""
    d = _cosine_distances(codes, codes)
    same = speakers[:, None] == speakers[None]
    return float(d[~same].mean() / d[same & ~np.eye(len(codes), dtype=bool)].mean())


def _cosine_distances(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1.0 - a @ b.T


def test_training_clusters_speakers(tiny_dataset, tmp_path):
    config = _config(num_layers=1)
    config.data.dataset_dir = str(tiny_dataset)
    config.train.update(dict(batch_size=8, num_steps=30, log_every=1, eval_every=0, checkpoint_every=1000,
                             warmup_steps=5))
    start = time.time()
    state = trainer.train_and_evaluate(config, tmp_path)
    seconds = time.time() - start
    metrics = read_metrics(tmp_path)
    losses = np.array([m["train/loss"] for m in metrics])
    assert len(losses) == 30 and np.all(np.isfinite(losses))
    assert losses[-5:].mean() < 0.6 * losses[:5].mean()
    for key in ("train/triplet", "train/hsic", "train/ortho", "train/cls", "train/code_norm", "train/retrieval_acc"):
        assert key in metrics[-1]

    # The content encoder is held fixed: in the model state, never among the optimised parameters.
    assert "content_encoder" not in state.params and "content_encoder" in state.model_state
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: create_model(config.model, SYNTHTALK_SPEC, nnx.Rngs(0))))
    model = nnx.merge(graphdef, jax.device_get(state.params), jax.device_get(state.model_state))

    frames = config.data.reference_frames
    g_motion, g_mask, gallery_spk, _ = _clips(ClipSource(tiny_dataset, "train"), frames)
    q_motion, q_mask, query_spk, query_style = _clips(ClipSource(tiny_dataset, "heldout_sentences"), frames)
    assert len(set(query_spk)) == 4
    # One batch (one compilation) for gallery and queries, trained and fresh encoders.
    motion, mask = np.concatenate([g_motion, q_motion]), np.concatenate([g_mask, q_mask])
    codes = np.asarray(_encode(model.encoder, motion, mask))
    gallery, query = codes[:len(g_motion)], codes[len(g_motion):]
    # Held-out sentences of the 4 training speakers: nearest training clip's speaker (chance: 1/4).
    nn_acc = float(np.mean(gallery_spk[_cosine_distances(query, gallery).argmin(1)] == query_spk))
    # SynthTalk styles are so distinct that even a random encoder clusters these 4 speakers; what training
    # adds is separation: clips of one speaker move together relative to clips of different speakers.
    fresh = nnx.merge(graphdef, jax.jit(lambda: nnx.state(create_model(config.model, SYNTHTALK_SPEC,
                                                                       nnx.Rngs(config.train.seed))))())
    separation = _separation(query, query_spk)
    separation_fresh = _separation(np.asarray(_encode(fresh.encoder, motion, mask))[len(g_motion):], query_spk)
    # Style geometry: code distances vs distances of the standardised ground-truth style parameters,
    # over the pairs of held-out clips of different speakers.
    iu = np.triu_indices(len(query), 1)
    z = (query_style - query_style.mean(0)) / (query_style.std(0) + 1e-6)
    code_d = _cosine_distances(query, query)[iu]
    style_d = np.linalg.norm(z[:, None] - z[None], axis=-1)[iu]
    other = (query_spk[:, None] != query_spk[None])[iu]
    # Ties matter: all clip pairs of one speaker pair share a style distance (scipy averages tied ranks).
    spearman = float(scipy.stats.spearmanr(code_d[other], style_d[other])[0])
    pearson = float(np.corrcoef(code_d[other], style_d[other])[0, 1])
    print(f"\nSDSE tiny, {len(losses)} steps in {seconds:.1f} s: loss {losses[:5].mean():.3f} -> "
          f"{losses[-5:].mean():.3f}; held-out-sentence NN speaker accuracy {nn_acc:.2f}; inter/intra-speaker "
          f"distance {separation_fresh:.1f} at init -> {separation:.1f}; code vs style distance (different "
          f"speakers) spearman {spearman:.2f} pearson {pearson:.2f}")
    assert nn_acc >= 0.75
    assert separation > 1.5 * separation_fresh
    assert spearman > 0.0


def _load_expert_config(arg):
    spec = importlib.util.spec_from_file_location("expert_cfg", os.path.join(ROOT, "mirrortalk_jax/configs/motion_expert.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.mark.slow
def test_trained_motion_expert_as_content_encoder(tiny_dataset, tmp_path):
    expert_config = _load_expert_config("tiny")
    expert_config.data.dataset_dir = str(tiny_dataset)
    expert_config.train.update(dict(num_steps=5, log_every=1, eval_every=0, checkpoint_every=1000))
    expert_state = trainer.train_and_evaluate(expert_config, tmp_path / "expert")

    config = _config(num_layers=1, content_encoder_workdir=str(tmp_path / "expert"),
                     content_dim=expert_config.model.embed_dim)
    config.data.dataset_dir = str(tiny_dataset)
    config.train.update(dict(batch_size=8, num_steps=5, log_every=1, eval_every=0, checkpoint_every=1000))
    state = trainer.train_and_evaluate(config, tmp_path / "sdse")
    losses = [m["train/loss"] for m in read_metrics(tmp_path / "sdse")]
    assert len(losses) == 5 and np.all(np.isfinite(losses))
    # The expert's trained weights were loaded into the content encoder and not changed by training.
    want = jax.tree.leaves(jax.device_get(expert_state.params))
    got = jax.tree.leaves(jax.device_get(state.params["content_encoder"]))
    assert len(want) == len(got) > 0
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
