"""The diffusion objective (schedules, parametrisations, weights, CFG drops) and the samplers."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from mirrortalk_jax.objectives import diffusion as dif
from mirrortalk_jax.sample import diffusion as smp

B, L, D = 2, 12, 6
SCHED = dif.linear_schedule(1000)
X_STAR = jnp.asarray(np.random.default_rng(0).normal(size=(B, L, D)), jnp.float32)


# ----------------------------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_shapes_and_monotone(kind):
    sched = dif.make_schedule(kind, 1000)
    ac = np.asarray(sched.alphas_cumprod)
    assert sched.num_steps == 1000 and ac.shape == (1000,)
    assert np.all(np.diff(ac) < 0) and np.all((ac > 0) & (ac < 1))
    assert np.all(np.diff(np.asarray(sched.log_snr)) < 0)
    np.testing.assert_allclose(np.asarray(sched.alphas_cumprod_prev)[1:], ac[:-1])
    np.testing.assert_allclose(np.asarray(sched.sqrt_alphas_cumprod) ** 2 +
                               np.asarray(sched.sqrt_one_minus_alphas_cumprod) ** 2, 1.0, rtol=1e-6)


def test_schedule_endpoints_and_cosine_closed_form():
    lin = dif.linear_schedule(1000, 1e-4, 0.02)
    np.testing.assert_allclose(np.asarray(lin.betas)[[0, -1]], [1e-4, 0.02], rtol=1e-6)
    np.testing.assert_allclose(float(lin.alphas_cumprod[0]), 1 - 1e-4, rtol=1e-7)
    cos = dif.cosine_schedule(1000, s=0.008)
    t = np.arange(1, 1001)
    closed = np.cos((t / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2 / np.cos(0.008 / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(np.asarray(cos.alphas_cumprod)[:-1], closed[:-1], rtol=1e-5)
    assert float(cos.betas[-1]) == pytest.approx(0.999) and np.all(np.asarray(cos.betas) <= 0.999 + 1e-7)
    with pytest.raises(ValueError, match="unknown diffusion schedule"):
        dif.make_schedule("sigmoid", 10)


# ------------------------------------------------------------------------------------- parametrisations


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_parametrisation_round_trips(kind):
    sched = dif.make_schedule(kind, 1000)
    rng = np.random.default_rng(1)
    t = jnp.asarray(np.arange(0, 1000, 37, dtype=np.int32))
    n = t.shape[0]
    x0 = jnp.asarray(rng.normal(size=(n, 5, 3)), jnp.float32)
    eps = jnp.asarray(rng.normal(size=(n, 5, 3)), jnp.float32)
    x_t = dif.q_sample(sched, x0, t, eps)
    a = np.asarray(sched.sqrt_alphas_cumprod)[np.asarray(t)][:, None, None]
    s = np.asarray(sched.sqrt_one_minus_alphas_cumprod)[np.asarray(t)][:, None, None]
    # Conversions to x0 divide by a_t and those from x0 by s_t, so float32 rounding of x_t (~1e-7) grows like
    # 1e-7 / a_t or 1e-7 / s_t: exact to 1e-5 where a_t, s_t >= 0.1, tolerance scaled by 1 / a_t (1 / s_t)
    # beyond (the last cosine steps have a_t ~ 1e-4, the first s_t ~ 0.006).
    tol_a = 1e-5 / np.minimum(a / 0.1, 1.0)
    tol_s = 1e-5 / np.minimum(s / 0.1, 1.0)
    v = dif.target_for("v", x0, eps, sched, t)
    for name, pred in (("x0", x0), ("eps", eps), ("v", v)):
        assert np.all(np.abs(dif.predict_x0(sched, x_t, t, pred, name) - x0) <= tol_a), name
        assert np.all(np.abs(dif.predict_eps(sched, x_t, t, pred, name) - eps) <= tol_s), name
        tol_v = {"x0": tol_s, "eps": tol_a, "v": 0.0}[name]
        assert np.all(np.abs(dif.predict_v(sched, x_t, t, pred, name) - v) <= tol_v), name
    both = (a[:, 0, 0] >= 0.1) & (s[:, 0, 0] >= 0.1)
    assert both.sum() > 10
    e_from_x0 = dif.predict_eps(sched, x_t, t, x0, "x0")
    np.testing.assert_allclose(dif.predict_x0(sched, x_t, t, e_from_x0, "eps")[both], x0[both], atol=1e-5)
    v_from_x0 = dif.predict_v(sched, x_t, t, x0, "x0")
    np.testing.assert_allclose(dif.predict_x0(sched, x_t, t, v_from_x0, "v")[both], x0[both], atol=1e-5)
    v_from_eps = dif.predict_v(sched, x_t, t, eps, "eps")
    np.testing.assert_allclose(dif.predict_eps(sched, x_t, t, v_from_eps, "v")[both], eps[both], atol=1e-5)
    with pytest.raises(ValueError, match="unknown prediction"):
        dif.predict_x0(sched, x_t, t, x0, "score")


def test_q_sample_statistics():
    t = jnp.full((20000,), 400, jnp.int32)
    x0 = jnp.full((20000, 1, 1), 1.5)
    noise = jnp.asarray(np.random.default_rng(0).normal(size=x0.shape), jnp.float32)
    x = np.asarray(dif.q_sample(SCHED, x0, t, noise)).ravel()
    a, s = float(SCHED.sqrt_alphas_cumprod[400]), float(SCHED.sqrt_one_minus_alphas_cumprod[400])
    assert abs(x.mean() - 1.5 * a) < 4 * s / np.sqrt(x.size)
    assert abs(x.std() - s) < 0.02 * s


def test_loss_weights_consistent_across_parametrisations():
    t = jnp.asarray([0, 100, 300, 600, 999], jnp.int32)
    snr = np.asarray(dif.snr(SCHED, t))
    for weighting, lam in (("snr", snr), ("min_snr", np.minimum(snr, 5.0))):
        for pred, factor in (("x0", 1.0), ("eps", snr), ("v", snr + 1.0)):
            # weight x (error in that parametrisation) must equal lam x (x0 error), the same objective.
            np.testing.assert_allclose(dif.loss_weight(SCHED, t, pred, weighting) * factor, lam, rtol=1e-5)
    np.testing.assert_allclose(dif.loss_weight(SCHED, t, "v", "none"), 1.0)
    with pytest.raises(ValueError, match="unknown loss weighting"):
        dif.loss_weight(SCHED, t, "x0", "p2")


def test_diffusion_targets_and_masked_loss():
    x0 = jnp.ones((4, 8, 3))
    tg = jax.jit(dif.diffusion_targets, static_argnums=3)(SCHED, x0, jax.random.key(0), "v")
    assert tg.t.dtype == jnp.int32 and np.all((tg.t >= 0) & (tg.t < 1000))
    np.testing.assert_allclose(tg.x_t, dif.q_sample(SCHED, x0, tg.t, tg.noise), atol=1e-6)
    np.testing.assert_allclose(tg.target, dif.target_for("v", x0, tg.noise, SCHED, tg.t), atol=1e-6)
    mask = jnp.asarray(np.arange(8)[None, :] < np.array([8, 4, 2, 0])[:, None])
    pred = tg.target + 1.0 * (~mask)[..., None] + 2.0 * mask[..., None]  # error 2 on valid, 1 on padding
    assert float(dif.diffusion_loss(pred, tg, mask)) == pytest.approx(4.0)
    w = jnp.asarray([1.0, 0.0, 3.0, 5.0])
    expected = 4.0 * (8 * 1.0 + 4 * 0.0 + 2 * 3.0) / 14
    assert float(dif.diffusion_loss(pred, tg, mask, w)) == pytest.approx(expected, rel=1e-6)
    assert float(dif.diffusion_loss(pred, tg, jnp.zeros((4, 8), bool))) == 0.0


def test_condition_drop_masks():
    # Probabilities are traced arguments: one compilation serves both draws.
    draw = jax.jit(dif.condition_drop_masks, static_argnums=1)
    da, ds = draw(jax.random.key(3), 40000, 0.1, 0.2, 0.05)
    da, ds = np.asarray(da), np.asarray(ds)
    assert da.dtype == bool and da.shape == (40000,)
    assert da.mean() == pytest.approx(1 - 0.9 * 0.95, abs=0.01)
    assert ds.mean() == pytest.approx(1 - 0.8 * 0.95, abs=0.01)
    assert (da & ds).mean() == pytest.approx(0.05 + 0.95 * 0.1 * 0.2, abs=0.01)
    none = draw(jax.random.key(3), 40000, 0.0, 0.0, 0.0)
    assert not np.any(none[0]) and not np.any(none[1])
    with pytest.raises(ValueError, match="p_drop_style"):
        dif.condition_drop_masks(jax.random.key(0), 4, 0.1, 1.5, 0.0)


# --------------------------------------------------------------------------------------------- samplers
# XLA compiles each jitted sampler in about a second on a small CPU (mostly the threefry noise), so the tests
# below put several sampler runs into one jitted function where they can.


def oracle(prediction, sched=SCHED, calls=None):
    """A denoiser that knows the data is X_STAR: returns it (or the implied eps / v) for every branch."""

    def denoise(x_t, t, cond, drop_audio, drop_style):
        if calls is not None:
            calls.append(x_t.shape[0])
        x0 = jnp.concatenate([X_STAR] * (x_t.shape[0] // B))
        if prediction == "x0":
            return x0
        return dif.predict_eps(sched, x_t, t, x0, "x0") if prediction == "eps" else \
            dif.predict_v(sched, x_t, t, x0, "x0")
    return denoise


def fuzzy(x_t, t, cond, drop_audio, drop_style):
    """A non-oracle denoiser (x0 mode) that depends on x_t, t, cond and both drop flags."""
    tf = (t.astype(jnp.float32) / 1000.0)[:, None, None]
    out = 0.5 * jnp.tanh(x_t) * (1 - tf) + cond
    return out + 0.3 * (~drop_audio)[:, None, None] + 0.7 * (~drop_style)[:, None, None] * jnp.sin(cond)


COND = jnp.asarray(np.random.default_rng(5).normal(size=(B, L, D)), jnp.float32)
GUIDED = smp.Guidance(2.0, smp.region_scale_vector(SYNTHTALK_SPEC, {"lower": 3.0})[:D])


@pytest.mark.parametrize("sampler,num_steps,extra", [
    ("ddim", 10, dict(guidance=GUIDED, eta=0.5, spacing="leading")),
    ("ddim", 50, dict(guidance=GUIDED, spacing="trailing")),
    ("ddpm", None, dict(guidance=GUIDED, num_steps=20)),
    ("dpm_solver", 10, dict(guidance=GUIDED, spacing="uniform")),
])
def test_oracle_recovers_data(sampler, num_steps, extra):
    """Every sampler and parametrisation returns x* (DDIM with eta = 0, DDPM with all 1000 steps); the extra
    run adds guidance (all three branches agree, so x* again), a respaced / other grid and noise."""
    fn = smp.SAMPLERS[sampler]

    @jax.jit
    def run(key):
        outs = [fn(oracle(p), SCHED, (B, L, D), key, num_steps, prediction=p) for p in ("x0", "eps", "v")]
        extra_kw = {"num_steps": num_steps, **extra}
        return outs + [fn(oracle("v"), SCHED, (B, L, D), key, prediction="v", **extra_kw)]

    for out in run(jax.random.key(7)):
        np.testing.assert_allclose(out, X_STAR, atol=1e-4)


def test_samplers_draw_from_gaussian_data():
    """Data x0 ~ N(mu, sd^2) per element has the exact denoiser E[x0 | x_t] = mu + a sd^2 / (a^2 sd^2 + s^2)
    (x_t - a mu): every sampler must then produce samples with that mean and standard deviation."""
    mu, sd, shape = 0.7, 0.5, (256, 4, 4)

    def exact(x_t, t, cond, drop_audio, drop_style):
        a = SCHED.sqrt_alphas_cumprod[t][:, None, None]
        s = SCHED.sqrt_one_minus_alphas_cumprod[t][:, None, None]
        return mu + a * sd ** 2 / (a ** 2 * sd ** 2 + s ** 2) * (x_t - a * mu)

    # Few-step DDIM under-disperses (each coarse deterministic step shrinks the spread, by Cauchy-Schwarz on
    # (a, s)); the step counts below keep every sampler's discretisation error under the tolerance.
    @jax.jit
    def run(key):
        return (smp.sample_ddpm(exact, SCHED, shape, key), smp.sample_ddim(exact, SCHED, shape, key, 250),
                smp.sample_ddim(exact, SCHED, shape, key, 250, eta=1.0),
                smp.sample_dpm_solver(exact, SCHED, shape, key, 20))

    for name, out in zip(("ddpm", "ddim", "ddim_eta1", "dpm_solver"), run(jax.random.key(0))):
        out = np.asarray(out)
        assert abs(out.mean() - mu) < 0.03, name
        assert abs(out.std() / sd - 1) < 0.03, (name, out.std())


def test_timestep_grids():
    np.testing.assert_array_equal(smp.timestep_grid(1000, 5, "uniform"), [999, 749, 500, 250, 0])
    np.testing.assert_array_equal(smp.timestep_grid(1000, 5, "leading"), [800, 600, 400, 200, 0])
    np.testing.assert_array_equal(smp.timestep_grid(1000, 5, "trailing"), [999, 799, 599, 399, 199])
    assert list(smp.timestep_grid(1000, 30, "leading")) == list(range(0, 1000, 33))[:30][::-1]
    lam100 = np.asarray(dif.linear_schedule(100).log_snr)
    for spacing in smp.SPACINGS:
        np.testing.assert_array_equal(smp.timestep_grid(100, 100, spacing, lam100), np.arange(99, -1, -1))
    lam = np.asarray(SCHED.log_snr)
    for n in (1, 5, 20, 200, 1000):
        g = smp.timestep_grid(1000, n, "logsnr", lam)
        assert len(g) == n and g[0] == 999 and g[-1] == (0 if n > 1 else 999) and np.all(np.diff(g) < 0)
    steps = np.diff(lam[smp.timestep_grid(1000, 10, "logsnr", lam)])
    assert steps.max() / steps.min() < 1.5  # even steps in log-SNR
    with pytest.raises(ValueError, match="log_snr"):
        smp.timestep_grid(1000, 10, "logsnr")
    with pytest.raises(ValueError, match="num_steps"):
        smp.timestep_grid(100, 101)
    with pytest.raises(ValueError, match="spacing"):
        smp.timestep_grid(100, 10, "karras")


# --------------------------------------------------------------------------------------------- guidance


def test_guidance_branches_static():
    ones = np.ones(D)
    assert smp.guidance_branches(1.0, ones) == ("audio_style",)
    assert smp.guidance_branches(1.0, 2.0) == ("audio", "audio_style")
    assert smp.guidance_branches(2.0, 1.0) == ("uncond", "audio", "audio_style")
    assert smp.guidance_branches(2.0, 2.0) == ("uncond", "audio_style")
    assert smp.guidance_branches(0.0, 0.0) == ("uncond",)
    assert smp.guidance_branches(1.0, 0.0) == ("audio",)
    assert smp.guidance_branches(1.0, np.array([1.0, 0, 1, 1, 1, 1])) == ("audio", "audio_style")
    vec = smp.region_scale_vector(SYNTHTALK_SPEC, {"lower": 1.0, "upper": 2.0}, default=0.5)
    assert vec.shape == (18,) and vec[SYNTHTALK_SPEC.index("brow_raise")] == 2.0
    assert vec[SYNTHTALK_SPEC.index("jaw_open")] == 1.0 and vec[SYNTHTALK_SPEC.index("yaw")] == 0.5
    with pytest.raises(KeyError, match="no group"):
        smp.region_scale_vector(SYNTHTALK_SPEC, {"mouth": 2.0})
    with pytest.raises(TypeError, match="static"):
        jax.jit(lambda w: smp.guidance_branches(w, 1.0))(jnp.float32(2.0))
    g = smp.Guidance(2.0, vec)  # hashable and compared by value: usable as a static jit argument
    assert g == smp.Guidance(2, tuple(vec)) and hash(g) == hash(smp.Guidance(2.0, list(vec)))


@pytest.mark.parametrize("w_a,w_s,n_branches", [(1.0, 1.0, 1), (1.0, 2.0, 2), (3.0, 1.0, 3), (2.5, "vec", 3)])
def test_guided_prediction_matches_hand_computation(w_a, w_s, n_branches):
    w_s = np.linspace(0.5, 3.0, D) if isinstance(w_s, str) else w_s
    x_t = jnp.asarray(np.random.default_rng(2).normal(size=(B, L, D)), jnp.float32)
    t = jnp.asarray([10, 500], jnp.int32)
    seen = []

    def recording(x, tt, cond, da, ds):
        seen.append((x.shape[0], np.asarray(da), np.asarray(ds)))
        np.testing.assert_array_equal(cond, jnp.concatenate([COND] * (x.shape[0] // B)))  # tiled branch-major
        np.testing.assert_array_equal(tt, jnp.concatenate([t] * (x.shape[0] // B)))
        return fuzzy(x, tt, cond, da, ds)

    got = smp.guided_prediction(recording, x_t, t, COND, smp.Guidance(w_a, w_s))
    (n, da, ds), = seen  # exactly one (batched) call
    assert n == B * n_branches
    flags = lambda a, s: (np.full(B, a), np.full(B, s))  # noqa: E731
    u = fuzzy(x_t, t, COND, *flags(True, True))
    a = fuzzy(x_t, t, COND, *flags(False, True))
    s = fuzzy(x_t, t, COND, *flags(False, False))
    np.testing.assert_allclose(got, u + w_a * (a - u) + np.asarray(w_s) * (s - a), atol=1e-5)
    if w_a == 1.0:  # the uncond branch has coefficient 0: never evaluated
        assert not np.any(da & ds)
    if n_branches == 1:
        assert not np.any(da) and not np.any(ds)
        np.testing.assert_array_equal(got, s)  # exactly the plain conditional pass


def test_sampler_calls_denoiser_with_branch_batch():
    for g, n in ((None, B), (smp.Guidance(1.0, 2.0), 2 * B), (smp.Guidance(2.0, np.full(D, 1.5)), 3 * B)):
        calls = []  # tracing is enough to see the batch sizes (values: test_oracle_recovers_data)
        jax.make_jaxpr(lambda k: smp.sample_ddpm(oracle("x0", calls=calls), SCHED, (B, L, D), k, 4, guidance=g)
                       )(jax.random.key(0))
        assert calls == [n]  # one batched call per step (the scan body is traced once), N = B * branches
    with pytest.raises(ValueError, match="style_scale"):
        smp.guided_prediction(fuzzy, COND, jnp.zeros(B, jnp.int32), COND, smp.Guidance(1.0, np.ones(D + 1)))


# ------------------------------------------------------------------------------------ inpainting, long


def test_stochastic_samplers_inpainting_and_determinism():
    known = jnp.asarray(np.random.default_rng(3).normal(size=(B, L, D)), jnp.float32)
    mask = jnp.asarray(np.arange(L)[None, :] < np.array([4, 7])[:, None])

    @jax.jit
    def run(key):
        kw = dict(cond=COND, known=known, known_mask=mask)
        inpainted = [smp.sample_ddim(fuzzy, SCHED, (B, L, D), key, 10, eta=1.0, **kw),
                     smp.sample_ddpm(fuzzy, SCHED, (B, L, D), key, 10, **kw),
                     smp.sample_dpm_solver(fuzzy, SCHED, (B, L, D), key, 10, **kw)]
        free = smp.sample_ddim(fuzzy, SCHED, (B, L, D), key, 10, eta=1.0, cond=COND)
        no_known = smp.sample_ddim(fuzzy, SCHED, (B, L, D), key, 10, eta=1.0, cond=COND, known=known,
                                   known_mask=jnp.zeros((B, L), bool))
        return inpainted, free, no_known

    (ddim, ddpm, dpm), free, no_known = first = run(jax.random.key(4))
    m = np.asarray(mask)
    for out in (ddim, ddpm, dpm):
        np.testing.assert_array_equal(np.asarray(out)[m], np.asarray(known)[m])
        assert np.all(np.isfinite(out)) and np.abs(np.asarray(out)[~m] - np.asarray(known)[~m]).min() > 0
    # An all-False mask changes nothing: the keys do not depend on whether `known` is given.
    np.testing.assert_allclose(no_known, free, atol=1e-6)
    # DDIM with eta = 1 is DDPM's ancestral step on the same grid, and both draw their noise from the same
    # keys: the two must agree (a check of both update rules); the deterministic DPM-Solver differs.
    np.testing.assert_allclose(ddim, ddpm, atol=1e-5)
    assert np.abs(np.asarray(ddim) - np.asarray(dpm)).max() > 1e-3
    # Deterministic for a key, different for another.
    again, other = run(jax.random.key(4)), run(jax.random.key(5))
    for a, b, c in zip(jax.tree.leaves(first), jax.tree.leaves(again), jax.tree.leaves(other)):
        np.testing.assert_array_equal(a, b)
        assert np.abs(np.asarray(a)[:, 7:] - np.asarray(c)[:, 7:]).max() > 1e-3
    with pytest.raises(ValueError, match="known"):
        smp.sample_ddim(fuzzy, SCHED, (B, L, D), jax.random.key(0), 2, known=known)


def test_sample_long():
    C, O = 12, 4
    traces, outs = [], []

    @jax.jit
    def sample_chunk(cond, known, known_mask, rng):
        traces.append(1)  # Python side effect: runs only while tracing
        return smp.sample_ddim(fuzzy, SCHED, (B, C, D), rng, 6, eta=1.0, cond=cond["feat"], known=known,
                               known_mask=known_mask)

    def recording(cond_chunk, known, known_mask, rng):
        outs.append(np.asarray(sample_chunk(cond_chunk, known, known_mask, rng)))
        return jnp.asarray(outs[-1])

    feat = jnp.asarray(np.random.default_rng(7).normal(size=(B, 40, D)), jnp.float32)
    rng = jax.random.key(2)

    # chunk_frames >= T: one chunk, identical to single-shot sampling with the same key.
    out = smp.sample_long(sample_chunk, {"feat": feat}, C, chunk_frames=32, overlap_frames=O, rng=rng,
                          motion_dim=D)
    single = jax.jit(lambda k: smp.sample_ddim(fuzzy, SCHED, (B, C, D), k, 6, eta=1.0, cond=feat[:, :C]))(rng)
    assert out.shape == (B, C, D)
    np.testing.assert_allclose(out, single, atol=1e-6)

    T = 37
    for last_chunk in ("pad", "shift"):
        outs.clear()
        out = np.asarray(smp.sample_long(recording, {"feat": feat[:, :T]}, T, C, O, rng, motion_dim=D,
                                         last_chunk=last_chunk))
        plan = smp.chunk_plan(T, C, O, last_chunk)
        assert len(outs) == len(plan) == 5 and out.shape == (B, T, D)
        for k in range(1, len(plan)):
            (s0, _), (s1, n_known) = plan[k - 1], plan[k]
            assert n_known == (O if last_chunk == "pad" or k < len(plan) - 1 else s0 + C - s1)
            # chunk k's first known frames are exactly chunk k-1's frames at the same times (its last O).
            np.testing.assert_array_equal(outs[k][:, :n_known], outs[k - 1][:, s1 - s0:s1 - s0 + n_known])
        for k, (start, _) in enumerate(plan):  # each chunk's real frames appear verbatim in the output
            end = min(start + C, T)
            np.testing.assert_array_equal(out[:, start:end], outs[k][:, :end - start])
        np.testing.assert_array_equal(outs[0], single)  # chunk 0 uses `rng` itself
        assert np.abs(outs[1][:, O:] - outs[2][:, O:]).max() > 1e-3
    assert len(traces) == 1  # every chunk (first, padded last, shifted last) reused one compilation
    with pytest.raises(ValueError, match="overlap_frames"):
        smp.sample_long(sample_chunk, {"feat": feat}, T, C, C, rng, motion_dim=D)
