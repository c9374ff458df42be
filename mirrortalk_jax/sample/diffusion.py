"""Samplers for a motion diffusion model: DDPM, DDIM, DPM-Solver++(2M), with two-condition guidance,
RePaint-style inpainting of known frames, and chunked generation of long sequences.

Denoiser calling convention (what a model adapter must implement):

    denoise(x_t, t, cond, drop_audio, drop_style) -> raw output
      x_t: (N, L, D) float; t: (N,) int32; cond: the caller's conditioning pytree with leading axis N (or None);
      drop_audio, drop_style: (N,) bool, True = replace that condition by its learned null;
      returns (N, L, D) in the parametrisation the sampler is told (`prediction`).

The caller passes per-example conditioning `cond` with leading axis B; the sampler tiles it for the guidance
branches it needs and calls `denoise` ONCE per step with N = B * n_branches, branch-major: rows
[i * B, (i + 1) * B) belong to branch `guidance_branches(...)[i]`. Guidance combines the branches as

    x0 = u + w_a (a - u) + w_s[d] (s - a) = (1 - w_a) u + (w_a - w_s[d]) a + w_s[d] s,

u = no audio & no style, a = audio only, s = audio + style, w_s a scalar or a (D,) per-channel vector (see
`region_scale_vector`). The coefficients sum to 1 per channel and every parametrisation maps to x0 affinely
with the same coefficients for every branch, so combining raw outputs equals combining x0 (and keeps eps
models' eps exact). Scales are static: a branch whose coefficient is zero on every channel is never evaluated,
and w_a == 1, w_s == 1 is a single plain pass.

Key-splitting convention (all samplers): init_key, loop_key = split(rng); x_T ~ N(0, I) from init_key; the
step with index i (0 = noisiest) uses known_key, noise_key = split(fold_in(loop_key, i)): known_key for the
inpainting noise of the known frames, noise_key for the ancestral noise. The keys used do not depend on
whether `known` is given, so an all-False `known_mask` reproduces the unconditioned sample.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.objectives.diffusion import DiffusionSchedule, predict_eps, predict_x0

Denoiser = Callable[[jax.Array, jax.Array, Any, jax.Array, jax.Array], jax.Array]

# Branch name -> (drop_audio, drop_style), in the order branches are stacked along N.
BRANCHES = {"uncond": (True, True), "audio": (False, True), "audio_style": (False, False)}
SPACINGS = ("uniform", "leading", "trailing", "logsnr")


def _static(value, what: str) -> np.ndarray:
    try:
        return np.asarray(value, np.float64)
    except jax.errors.TracerArrayConversionError as e:
        raise TypeError(f"{what} must be static (Python floats / numpy), not a traced array: the guidance "
                        "branches are chosen at trace time") from e


@dataclasses.dataclass(frozen=True)
class Guidance:
    """Static guidance scales. audio_scale: w_a (float); style_scale: w_s, a float or a (D,) sequence / array.

    Stored as a float and a float or tuple of floats, so a Guidance is hashable (usable as a static jit
    argument) and compares by value.
    """

    audio_scale: float = 1.0
    style_scale: float | Sequence[float] | np.ndarray = 1.0

    def __post_init__(self):
        w_a = _static(self.audio_scale, "audio_scale")
        w_s = _static(self.style_scale, "style_scale")
        if w_a.ndim != 0 or w_s.ndim > 1:
            raise ValueError(f"audio_scale must be a scalar and style_scale a scalar or (D,); got shapes "
                             f"{w_a.shape}, {w_s.shape}")
        object.__setattr__(self, "audio_scale", float(w_a))
        object.__setattr__(self, "style_scale", float(w_s) if w_s.ndim == 0 else tuple(float(v) for v in w_s))


NO_GUIDANCE = Guidance()


def region_scale_vector(spec: MotionSpec, scales: Mapping[str, float], default: float = 1.0) -> np.ndarray:
    """Per-channel scale (D,) float32 from per-region scales, e.g. {"lower": 1.0, "upper": 2.0}; channels of
    regions not named get `default`."""
    unknown = [g for g in scales if g not in spec.groups]
    if unknown:
        raise KeyError(f"MotionSpec {spec.name!r} has no group(s) {unknown}; groups: {spec.group_names}")
    out = np.full(spec.dim, default, np.float32)
    for group, value in scales.items():
        out[spec.group_indices(group)] = value
    return out


def branch_coefficients(audio_scale, style_scale) -> dict[str, np.ndarray]:
    """{branch: coefficient}, each a scalar or (D,) float64 array: u: 1 - w_a, a: w_a - w_s, s: w_s."""
    w_a = _static(audio_scale, "audio_scale")
    w_s = _static(style_scale, "style_scale")
    if w_a.ndim != 0 or w_s.ndim > 1:
        raise ValueError(f"audio_scale must be a scalar and style_scale a scalar or (D,); got shapes "
                         f"{w_a.shape}, {w_s.shape}")
    return {"uncond": 1.0 - w_a, "audio": w_a - w_s, "audio_style": w_s}


def guidance_branches(audio_scale, style_scale) -> tuple[str, ...]:
    """The branches with a nonzero coefficient on some channel, in stacking order (static).

    (1, 1) -> ("audio_style",); (1, 2) -> ("audio", "audio_style"); (2, 1.5) -> all three.
    """
    coefs = branch_coefficients(audio_scale, style_scale)
    return tuple(b for b in BRANCHES if np.any(coefs[b] != 0.0))


def _tile(tree: Any, k: int) -> Any:
    return jax.tree.map(lambda c: jnp.concatenate([c] * k, axis=0) if k > 1 else c, tree)


def guided_prediction(denoise: Denoiser, x_t: jax.Array, t: jax.Array, cond: Any,
                      guidance: Guidance | None = None) -> jax.Array:
    """The guided raw output (B, L, D) from one batched `denoise` call over the needed branches.

    x_t: (B, L, D); t: (B,) int32; cond: pytree with leading axis B, or None.
    """
    guidance = NO_GUIDANCE if guidance is None else guidance
    coefs = branch_coefficients(guidance.audio_scale, guidance.style_scale)
    if np.ndim(coefs["audio_style"]) and coefs["audio_style"].shape != (x_t.shape[-1],):
        raise ValueError(f"style_scale has shape {coefs['audio_style'].shape}; expected a scalar or "
                         f"({x_t.shape[-1]},), one scale per motion channel")
    branches = guidance_branches(guidance.audio_scale, guidance.style_scale)
    k, b = len(branches), x_t.shape[0]
    # (k * B, 2) branch-major; broadcast, not np.repeat, so B may be symbolic (jax.export with a free batch).
    per_branch = jnp.asarray(np.array([BRANCHES[name] for name in branches], bool))
    flags = jnp.broadcast_to(per_branch[:, None, :], (k, b, 2)).reshape(k * b, 2)
    out = denoise(_tile(x_t, k), _tile(t, k), _tile(cond, k), flags[:, 0], flags[:, 1])
    if out.shape != (k * b,) + x_t.shape[1:]:
        raise ValueError(f"denoise returned shape {out.shape}; expected {(k * b,) + x_t.shape[1:]} "
                         f"({k} guidance branch(es) {branches} x batch {b})")
    if k == 1:
        return out  # the only nonzero coefficient is exactly 1: the plain conditional pass, bit for bit
    outs = out.reshape((k, b) + x_t.shape[1:])
    return sum(jnp.asarray(coefs[name], out.dtype) * outs[i] for i, name in enumerate(branches))


def timestep_grid(num_train_steps: int, num_steps: int, spacing: str = "uniform",
                  log_snr: np.ndarray | None = None) -> np.ndarray:
    """Descending int32 timesteps (num_steps,) in [0, T), all distinct.

    "uniform":  round(linspace(0, T - 1, n)) (starts at T - 1, ends at t = 0);
    "leading":  range(0, T, T // n) as in the original DDIM code, cut to n entries (the original keeps
                every entry, so it can take more than n steps when n does not divide T);
    "trailing": round(arange(T, 0, -T / n)) - 1 (starts at T - 1; the last step jumps to clean from T/n - 1);
    "logsnr":   nearest to n log-SNR values evenly spaced from t = T - 1 to t = 0 (needs the schedule's
                `log_snr`); the spacing DPM-Solver multistep is most stable on (even ratios of steps in lambda).
    """
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(f"num_steps must be in [1, {num_train_steps}], got {num_steps}")
    if spacing == "uniform":
        grid = np.round(np.linspace(0, num_train_steps - 1, num_steps))
    elif spacing == "leading":
        grid = np.arange(0, num_train_steps, num_train_steps // num_steps)[:num_steps]
    elif spacing == "trailing":
        grid = np.round(np.arange(num_train_steps, 0, -num_train_steps / num_steps)) - 1
    elif spacing == "logsnr":
        if log_snr is None or np.shape(log_snr) != (num_train_steps,):
            raise ValueError(f"spacing 'logsnr' needs the schedule's (T,) log_snr, got {np.shape(log_snr)}")
        lam = np.asarray(log_snr, np.float64)
        targets = np.linspace(lam[-1], lam[0], num_steps)
        picked = np.abs(lam[None, :] - targets[:, None]).argmin(axis=1)
        grid = np.empty(num_steps, np.int64)
        for i, t in enumerate(picked):  # noisy -> clean; keep distinct and leave room for the remaining steps
            t = num_train_steps - 1 if i == 0 else min(t, grid[i - 1] - 1)
            grid[i] = max(t, num_steps - 1 - i)
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {SPACINGS}")
    return np.sort(grid.astype(np.int32))[::-1].copy()


def _schedule_grid(sched: DiffusionSchedule, num_steps: int, spacing: str) -> np.ndarray:
    log_snr = None
    if spacing == "logsnr":
        try:
            log_snr = np.asarray(sched.log_snr)
        except jax.errors.TracerArrayConversionError as e:
            raise TypeError("spacing 'logsnr' needs a concrete schedule: close over it rather than passing "
                            "it as a traced argument") from e
    return timestep_grid(sched.num_steps, num_steps, spacing, log_snr)


# ---------------------------------------------------------------------------------------------------------
# Shared step machinery.


def _lookup(sched: DiffusionSchedule, t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(log abar, a, s) at a scalar int timestep; t = -1 means clean data (abar = 1, s = 0)."""
    valid = t >= 0
    i = jnp.maximum(t, 0)
    return (jnp.where(valid, sched.log_alphas_cumprod[i], 0.0),
            jnp.where(valid, sched.sqrt_alphas_cumprod[i], 1.0),
            jnp.where(valid, sched.sqrt_one_minus_alphas_cumprod[i], 0.0))


def _check_known(shape: tuple[int, ...], known, known_mask) -> None:
    if (known is None) != (known_mask is None):
        raise ValueError("give both `known` and `known_mask`, or neither")
    if known is not None and (tuple(known.shape) != tuple(shape) or tuple(known_mask.shape) != tuple(shape[:2])):
        raise ValueError(f"known {tuple(known.shape)} / known_mask {tuple(known_mask.shape)} must be "
                         f"{tuple(shape)} / {tuple(shape[:2])}")


class _Stepper:
    """Shared per-step work: key derivation, inpainting of known frames, the guided (x0, eps) prediction."""

    def __init__(self, denoise, sched, shape, rng, cond, guidance, known, known_mask, prediction):
        if len(shape) != 3:
            raise ValueError(f"shape must be (B, L, D), got {shape}")
        _check_known(shape, known, known_mask)
        self.denoise, self.sched, self.shape, self.cond = denoise, sched, tuple(shape), cond
        self.guidance, self.prediction = guidance, prediction
        self.known, self.mask = known, None if known_mask is None else known_mask.astype(bool)[..., None]
        init_key, self.loop_key = jax.random.split(rng)
        self.x_init = jax.random.normal(init_key, self.shape, jnp.float32)

    def keys(self, i: jax.Array) -> tuple[jax.Array, jax.Array]:
        known_key, noise_key = jax.random.split(jax.random.fold_in(self.loop_key, i))
        return known_key, noise_key

    def inpaint(self, x: jax.Array, t: jax.Array, known_key: jax.Array) -> jax.Array:
        """Replaces the known frames of x_t by q_sample(known, t) with fresh noise (RePaint)."""
        if self.known is None:
            return x
        _, a, s = _lookup(self.sched, t)
        noisy = a * self.known + s * jax.random.normal(known_key, self.shape, x.dtype)
        return jnp.where(self.mask, noisy.astype(x.dtype), x)

    def predict(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        tb = jnp.full((self.shape[0],), t, jnp.int32)
        raw = guided_prediction(self.denoise, x, tb, self.cond, self.guidance)
        return (predict_x0(self.sched, x, tb, raw, self.prediction),
                predict_eps(self.sched, x, tb, raw, self.prediction))

    def finish(self, x0: jax.Array) -> jax.Array:
        return x0 if self.known is None else jnp.where(self.mask, self.known.astype(x0.dtype), x0)


def _grid_xs(timesteps: np.ndarray) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(t, t_next, i) per step; t_next = -1 after the last grid point (clean)."""
    t_next = np.append(timesteps[1:], -1).astype(np.int32)
    return jnp.asarray(timesteps), jnp.asarray(t_next), jnp.arange(len(timesteps), dtype=jnp.int32)


# ---------------------------------------------------------------------------------------------------------
# Samplers. Each returns x0 (B, L, D) float32; jit them by closing over the static arguments.


def sample_ddim(denoise: Denoiser, sched: DiffusionSchedule, shape: tuple[int, int, int], rng: jax.Array,
                num_steps: int, eta: float = 0.0, *, cond: Any = None, guidance: Guidance | None = None,
                known: jax.Array | None = None, known_mask: jax.Array | None = None, prediction: str = "x0",
                spacing: str = "uniform") -> jax.Array:
    """DDIM (Song et al. 2021) on `timestep_grid(T, num_steps, spacing)`; eta = 0 deterministic, 1 ~ DDPM.

    x_prev = a_prev x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z,
    sigma^2 = eta^2 (1 - abar_prev) / (1 - abar_t) (1 - abar_t / abar_prev). The last step lands on x0.
    """
    st = _Stepper(denoise, sched, shape, rng, cond, guidance, known, known_mask, prediction)
    deterministic = isinstance(eta, (int, float)) and eta == 0

    def step(x, xs):
        t, t_prev, i = xs
        known_key, noise_key = st.keys(i)
        x = st.inpaint(x, t, known_key)
        x0, eps = st.predict(x, t)
        log_ab, _, s = _lookup(sched, t)
        log_ab_p, a_p, s_p = _lookup(sched, t_prev)
        var = eta ** 2 * jnp.square(s_p / s) * -jnp.expm1(log_ab - log_ab_p)
        x_prev = a_p * x0 + jnp.sqrt(jnp.maximum(s_p ** 2 - var, 0.0)) * eps
        if not deterministic:  # a static eta = 0 draws no noise (cheaper to compile and run)
            x_prev = x_prev + jnp.sqrt(var) * jax.random.normal(noise_key, x.shape, x.dtype)
        return x_prev, None

    x, _ = jax.lax.scan(step, st.x_init, _grid_xs(_schedule_grid(sched, num_steps, spacing)))
    return st.finish(x)


def sample_ddpm(denoise: Denoiser, sched: DiffusionSchedule, shape: tuple[int, int, int], rng: jax.Array,
                num_steps: int | None = None, *, cond: Any = None, guidance: Guidance | None = None,
                known: jax.Array | None = None, known_mask: jax.Array | None = None, prediction: str = "x0",
                spacing: str = "uniform") -> jax.Array:
    """DDPM ancestral sampling from the posterior q(x_prev | x_t, x0) with variance beta-tilde.

    num_steps None = all T steps (Ho et al. 2020); fewer steps respace the schedule (Nichol & Dhariwal 2021):
    beta' = 1 - abar_t / abar_prev between consecutive grid points.
    """
    st = _Stepper(denoise, sched, shape, rng, cond, guidance, known, known_mask, prediction)
    n = sched.num_steps if num_steps is None else num_steps

    def step(x, xs):
        t, t_prev, i = xs
        known_key, noise_key = st.keys(i)
        x = st.inpaint(x, t, known_key)
        x0, _ = st.predict(x, t)
        log_ab, _, s = _lookup(sched, t)
        log_ab_p, a_p, s_p = _lookup(sched, t_prev)
        beta = -jnp.expm1(log_ab - log_ab_p)  # 1 - abar_t / abar_prev
        coef_x0 = a_p * beta / s ** 2
        coef_xt = jnp.exp(0.5 * (log_ab - log_ab_p)) * s_p ** 2 / s ** 2
        var = beta * s_p ** 2 / s ** 2  # 0 on the last step (abar_prev = 1)
        x_prev = coef_x0 * x0 + coef_xt * x + jnp.sqrt(var) * jax.random.normal(noise_key, x.shape, x.dtype)
        return x_prev, None

    x, _ = jax.lax.scan(step, st.x_init, _grid_xs(_schedule_grid(sched, n, spacing)))
    return st.finish(x)


def sample_dpm_solver(denoise: Denoiser, sched: DiffusionSchedule, shape: tuple[int, int, int], rng: jax.Array,
                      num_steps: int = 10, *, cond: Any = None, guidance: Guidance | None = None,
                      known: jax.Array | None = None, known_mask: jax.Array | None = None, prediction: str = "x0",
                      spacing: str = "logsnr") -> jax.Array:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2: multistep, data prediction), deterministic.

    With lambda = log(a / s) and h_i = lambda_{t_i} - lambda_{t_{i-1}}:
        x_{t_i} = (s_{t_i} / s_{t_{i-1}}) x_{t_{i-1}} - a_{t_i} (exp(-h_i) - 1) D_i,
        D_1 = x0_0,   D_i = (1 + 1 / (2 r_i)) x0_{i-1} - 1 / (2 r_i) x0_{i-2},   r_i = h_{i-1} / h_i.
    The grid's num_steps timesteps are evaluated once each; the final step to clean data (s = 0, lambda = inf)
    is first order, i.e. returns the last x0 prediction (diffusers' "lower_order_final" with final sigma 0).
    The default "logsnr" grid (uniform in lambda, ending at t = 0) keeps the ratios r_i even. On "uniform" the
    last step is far longer in lambda than the one before (r_i << 1), 1 / (2 r_i) overshoots and samples come
    out too spread at 10-20 steps (measured on Gaussian data, whose exact denoiser is known); on "trailing" the
    final jump returns the posterior mean E[x0 | x_t] at t = T / n - 1, too smooth.
    """
    st = _Stepper(denoise, sched, shape, rng, cond, guidance, known, known_mask, prediction)

    def half_lambda(t):
        return 0.5 * sched.log_snr[jnp.maximum(t, 0)]

    def step(carry, xs):
        x, x0_prev, h_prev = carry
        t, t_next, i = xs
        known_key, _ = st.keys(i)
        x = st.inpaint(x, t, known_key)
        x0, _ = st.predict(x, t)
        _, _, s = _lookup(sched, t)
        _, a_n, s_n = _lookup(sched, t_next)
        last = t_next < 0
        h = jnp.where(last, 1.0, half_lambda(t_next) - half_lambda(t))  # dummy 1 on the last step
        inv_2r = jnp.where(i > 0, h / (2.0 * h_prev), 0.0)  # 1 / (2 r_i); 0 = first order on the first step
        d = (1.0 + inv_2r) * x0 - inv_2r * x0_prev
        x_next = (s_n / s) * x + a_n * -jnp.expm1(-h) * d
        return (jnp.where(last, x0, x_next), x0, h), None

    init = (st.x_init, jnp.zeros(shape, jnp.float32), jnp.ones((), jnp.float32))
    (x, _, _), _ = jax.lax.scan(step, init, _grid_xs(_schedule_grid(sched, num_steps, spacing)))
    return st.finish(x)


SAMPLERS = {"ddpm": sample_ddpm, "ddim": sample_ddim, "dpm_solver": sample_dpm_solver}


# ---------------------------------------------------------------------------------------------------------
# Long sequences.


@jax.jit
def _known_from_previous(prev: jax.Array, offset: jax.Array, n_known: jax.Array) -> tuple[jax.Array, jax.Array]:
    """known[:, j] = prev[:, offset + j] for j < n_known, else 0; mask (B, chunk) bool. offset and n_known are
    traced, so every chunk (the first, with n_known = 0, included) uses one compilation of this and of the
    caller's chunk function."""
    chunk = prev.shape[1]
    j = jnp.arange(chunk)
    gathered = jnp.take(prev, jnp.clip(j + offset, 0, chunk - 1), axis=1)
    valid = j < n_known
    known = jnp.where(valid[None, :, None], gathered, 0.0).astype(jnp.float32)
    return known, jnp.broadcast_to(valid[None], prev.shape[:2])


def chunk_plan(total_frames: int, chunk_frames: int, overlap_frames: int,
               last_chunk: str = "pad") -> list[tuple[int, int]]:
    """[(start, n_known)] per chunk; chunk length = min(chunk_frames, total_frames).

    "pad": starts 0, stride, 2 stride, ... (stride = chunk - overlap), the last chunk running past the end
    (its conditioning edge-padded, the extra frames dropped); "shift": the last chunk starts at T - chunk
    instead, so nothing is padded and it takes every frame it shares with the previous chunk as known.
    """
    if total_frames < 1:
        raise ValueError(f"total_frames must be >= 1, got {total_frames}")
    chunk = min(chunk_frames, total_frames)
    if chunk >= total_frames:
        return [(0, 0)]
    if not 0 <= overlap_frames < chunk:
        raise ValueError(f"overlap_frames must be in [0, chunk_frames) = [0, {chunk}), got {overlap_frames}")
    if last_chunk not in ("pad", "shift"):
        raise ValueError(f"last_chunk must be 'pad' or 'shift', got {last_chunk!r}")
    stride = chunk - overlap_frames
    plan = [(0, 0)]
    while plan[-1][0] + chunk < total_frames:
        plan.append((plan[-1][0] + stride, overlap_frames))
    if last_chunk == "shift" and plan[-1][0] + chunk > total_frames:
        prev_start = plan[-2][0]
        start = total_frames - chunk
        plan[-1] = (start, prev_start + chunk - start)
    return plan


def sample_long(sample_chunk: Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array], cond_frames: Any,
                total_frames: int, chunk_frames: int, overlap_frames: int, rng: jax.Array, *, motion_dim: int,
                last_chunk: str = "pad") -> jax.Array:
    """Generates (B, T, D) motion chunk by chunk, in memory independent of T (host loop, one compilation).

    sample_chunk(cond_chunk, known (B, C, D) float32, known_mask (B, C) bool, rng) -> (B, C, D): the caller's
    jitted sampler (e.g. `sample_ddim` closed over the model), C = min(chunk_frames, T). It is called with the
    same shapes for every chunk: the first chunk gets an all-zero `known` and an all-False mask.
    cond_frames: pytree of per-frame conditioning, leaves (B, >= T, ...); chunk k gets frames
    [start_k, start_k + C), edge-padded past T. Chunk k > 0 takes its first overlap frames as known from the
    end of chunk k - 1; the stitched output keeps, from each chunk, only the frames it did not take as known.

    Keys: chunk 0 uses `rng` itself and chunk k > 0 uses fold_in(rng, k), so when chunk_frames >= T the result
    is exactly sample_chunk(cond[:, :T], zeros, all-False mask, rng), i.e. single-shot sampling with `rng`.
    """
    leaves = jax.tree.leaves(cond_frames)
    if not leaves:
        raise ValueError("cond_frames must hold at least one (B, T, ...) array")
    batch = leaves[0].shape[0]
    for leaf in leaves:
        if leaf.ndim < 2 or leaf.shape[0] != batch or leaf.shape[1] < total_frames:
            raise ValueError(f"every cond_frames leaf must be (B={batch}, >= T={total_frames}, ...), "
                             f"got {leaf.shape}")
    plan = chunk_plan(total_frames, chunk_frames, overlap_frames, last_chunk)
    chunk = min(chunk_frames, total_frames)
    padded = plan[-1][0] + chunk

    def pad(leaf):
        leaf = leaf[:, :total_frames]
        if padded == total_frames:
            return leaf
        # Edge padding: the padded frames repeat the last real conditioning frame (their output is dropped).
        return jnp.pad(leaf, [(0, 0), (0, padded - total_frames)] + [(0, 0)] * (leaf.ndim - 2), mode="edge")

    cond = jax.tree.map(pad, cond_frames)
    prev = jnp.zeros((batch, chunk, motion_dim), jnp.float32)
    prev_start, pieces = 0, []
    for k, (start, n_known) in enumerate(plan):
        cond_chunk = jax.tree.map(lambda c: jax.lax.dynamic_slice_in_dim(c, start, chunk, axis=1), cond)
        known, known_mask = _known_from_previous(prev, jnp.int32(start - prev_start), jnp.int32(n_known))
        out = sample_chunk(cond_chunk, known, known_mask, rng if k == 0 else jax.random.fold_in(rng, k))
        if out.shape != (batch, chunk, motion_dim):
            raise ValueError(f"sample_chunk returned {out.shape}; expected {(batch, chunk, motion_dim)}")
        pieces.append(out[:, n_known:min(chunk, total_frames - start)])
        prev, prev_start = out, start
    return jnp.concatenate(pieces, axis=1) if len(pieces) > 1 else pieces[0]
