"""Gaussian diffusion over motion sequences: noise schedules, parametrisations, loss weights, CFG drops.

Notation (DDPM, Ho et al. 2020): training timesteps t = 0 .. T-1 index the schedule arrays; step t has
variance beta_t, alpha_t = 1 - beta_t, abar_t = prod_{i<=t} alpha_i, and

    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps = a_t x0 + s_t eps,      SNR(t) = a_t^2 / s_t^2.

A model's raw output is in one of three parametrisations:
  "x0":  the clean sample (DreamTalk / MirrorTalk predict x0);
  "eps": the noise;
  "v":   v = a_t eps - s_t x0 (Salimans & Ho 2022), so x0 = a_t x_t - s_t v and eps = s_t x_t + a_t v.

Every function here is pure jax.numpy and jittable; `prediction` / `weighting` strings are static (Python).
The schedule arrays are computed in float64 with numpy and stored as float32, so quantities like
1 - abar_t near t = 0 and log-SNR keep their relative precision.
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

PREDICTIONS = ("x0", "eps", "v")
WEIGHTINGS = ("none", "snr", "min_snr")


@flax.struct.dataclass
class DiffusionSchedule:
    """A discrete noise schedule; a frozen pytree of (T,) float32 arrays (num_steps and kind are static).

    Attributes:
      betas, alphas: (T,) per-step variance beta_t and alpha_t = 1 - beta_t.
      alphas_cumprod: (T,) abar_t, strictly decreasing in (0, 1).
      alphas_cumprod_prev: (T,) abar_{t-1} with abar_{-1} = 1.
      sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod: (T,) a_t and s_t.
      log_alphas_cumprod: (T,) log abar_t (ratios of abar without cancellation).
      log_snr: (T,) log(abar_t / (1 - abar_t)), strictly decreasing.
    """

    betas: jax.Array
    alphas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    sqrt_alphas_cumprod: jax.Array
    sqrt_one_minus_alphas_cumprod: jax.Array
    log_alphas_cumprod: jax.Array
    log_snr: jax.Array
    num_steps: int = flax.struct.field(pytree_node=False)
    kind: str = flax.struct.field(pytree_node=False, default="custom")


def schedule_from_betas(betas: np.ndarray, kind: str = "custom") -> DiffusionSchedule:
    """Builds every derived array from (T,) betas in (0, 1), in float64, stored as float32."""
    betas = np.asarray(betas, np.float64)
    if betas.ndim != 1 or betas.size == 0:
        raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
    if not np.all((betas > 0) & (betas < 1)):
        raise ValueError(f"betas must lie in (0, 1); got min {betas.min()}, max {betas.max()}")
    log_alphas = np.log1p(-betas)
    log_ac = np.cumsum(log_alphas)
    ac = np.exp(log_ac)
    one_minus = -np.expm1(log_ac)  # 1 - abar without cancellation near t = 0
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return DiffusionSchedule(
        betas=f32(betas), alphas=f32(1.0 - betas), alphas_cumprod=f32(ac),
        alphas_cumprod_prev=f32(np.concatenate([[1.0], ac[:-1]])), sqrt_alphas_cumprod=f32(np.sqrt(ac)),
        sqrt_one_minus_alphas_cumprod=f32(np.sqrt(one_minus)), log_alphas_cumprod=f32(log_ac),
        log_snr=f32(log_ac - np.log(one_minus)), num_steps=int(betas.size), kind=kind)


def linear_schedule(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> DiffusionSchedule:
    """DDPM's linear betas from beta_start to beta_end (both included)."""
    return schedule_from_betas(np.linspace(beta_start, beta_end, num_steps, dtype=np.float64), kind="linear")


def cosine_alpha_bar(t: np.ndarray, num_steps: int, s: float = 0.008) -> np.ndarray:
    """The closed form f(t) / f(0), f(t) = cos^2(((t / T + s) / (1 + s)) * pi / 2) (Nichol & Dhariwal 2021)."""
    f = lambda u: np.cos((u / num_steps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(np.asarray(t, np.float64)) / f(0.0)


def cosine_schedule(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> DiffusionSchedule:
    """Improved-DDPM cosine schedule: beta_t = min(1 - abar(t+1) / abar(t), max_beta), so array index t holds
    abar(t + 1) of the closed form (exactly, except where the clip bites: only the last step for T >= 10)."""
    ab = cosine_alpha_bar(np.arange(num_steps + 1), num_steps, s)
    betas = np.minimum(1.0 - ab[1:] / ab[:-1], max_beta)
    return schedule_from_betas(betas, kind="cosine")


def make_schedule(kind: str, num_steps: int = 1000, **kwargs) -> DiffusionSchedule:
    """`kind` is "linear" or "cosine"; kwargs go to its constructor."""
    makers = {"linear": linear_schedule, "cosine": cosine_schedule}
    if kind not in makers:
        raise ValueError(f"unknown diffusion schedule {kind!r}; choose one of {sorted(makers)}")
    return makers[kind](num_steps, **kwargs)


def _check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction (parametrisation) {prediction!r}; choose one of {PREDICTIONS}")


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
    """(B,) per-example coefficients -> (B, 1, ..., 1) broadcastable against x."""
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim)).astype(x.dtype)


def _coefs(sched: DiffusionSchedule, t: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a_t, s_t) gathered at (B,) int timesteps, shaped to broadcast against x."""
    return _bcast(sched.sqrt_alphas_cumprod[t], x), _bcast(sched.sqrt_one_minus_alphas_cumprod[t], x)


def q_sample(sched: DiffusionSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = a_t x0 + s_t noise. x0, noise (B, L, D) (any (B, ...)); t (B,) int -> (B, L, D)."""
    a, s = _coefs(sched, t, x0)
    return a * x0 + s * noise


def predict_x0(sched: DiffusionSchedule, x_t: jax.Array, t: jax.Array, pred: jax.Array,
               prediction: str) -> jax.Array:
    """x0 implied by a raw model output `pred` in parametrisation `prediction`. (B, L, D) -> (B, L, D)."""
    _check_prediction(prediction)
    if prediction == "x0":
        return pred
    a, s = _coefs(sched, t, x_t)
    if prediction == "eps":
        return (x_t - s * pred) / a
    return a * x_t - s * pred


def predict_eps(sched: DiffusionSchedule, x_t: jax.Array, t: jax.Array, pred: jax.Array,
                prediction: str) -> jax.Array:
    """eps implied by a raw model output. (B, L, D) -> (B, L, D). s_t >= sqrt(beta_0) > 0, so x0 -> eps is safe."""
    _check_prediction(prediction)
    if prediction == "eps":
        return pred
    a, s = _coefs(sched, t, x_t)
    if prediction == "x0":
        return (x_t - a * pred) / s
    return s * x_t + a * pred


def predict_v(sched: DiffusionSchedule, x_t: jax.Array, t: jax.Array, pred: jax.Array,
              prediction: str) -> jax.Array:
    """v = a_t eps - s_t x0 implied by a raw model output. (B, L, D) -> (B, L, D)."""
    _check_prediction(prediction)
    if prediction == "v":
        return pred
    a, s = _coefs(sched, t, x_t)
    # Closed forms of a eps - s x0 (with a^2 + s^2 = 1), one division each.
    if prediction == "x0":
        return (a * x_t - pred) / s
    return (pred - s * x_t) / a


def target_for(prediction: str, x0: jax.Array, noise: jax.Array, sched: DiffusionSchedule,
               t: jax.Array) -> jax.Array:
    """The regression target of parametrisation `prediction` for x_t = q_sample(x0, t, noise). (B, L, D)."""
    _check_prediction(prediction)
    if prediction == "x0":
        return x0
    if prediction == "eps":
        return noise
    a, s = _coefs(sched, t, x0)
    return a * noise - s * x0


def snr(sched: DiffusionSchedule, t: jax.Array) -> jax.Array:
    """SNR(t) = abar_t / (1 - abar_t) at (B,) int timesteps -> (B,) float32."""
    return jnp.exp(sched.log_snr[t])


def loss_weight(sched: DiffusionSchedule, t: jax.Array, prediction: str, weighting: str,
                gamma: float = 5.0) -> jax.Array:
    """Per-example loss weight (B,) float32 for an MSE in parametrisation `prediction`.

    Weightings are defined on the x0 error and converted, so a weighting means the same objective whatever
    the parametrisation: ||eps - eps_hat||^2 = SNR ||x0 - x0_hat||^2 and ||v - v_hat||^2 = (SNR + 1)
    ||x0 - x0_hat||^2, so an x0-space weight lambda(t) becomes lambda / SNR for eps and lambda / (SNR + 1) for v.
      "none":    weight 1 in the chosen parametrisation (the plain MSE of its own target);
      "snr":     lambda = SNR, i.e. the eps-prediction objective (x0: SNR, eps: 1, v: SNR / (SNR + 1));
      "min_snr": lambda = min(SNR, gamma) (Min-SNR-gamma, Hang et al. 2023; x0: min(SNR, gamma),
                 eps: min(SNR, gamma) / SNR, v: min(SNR, gamma) / (SNR + 1)).
    """
    _check_prediction(prediction)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {weighting!r}; choose one of {WEIGHTINGS}")
    if weighting == "none":
        return jnp.ones(t.shape, jnp.float32)
    r = snr(sched, t)
    lam = r if weighting == "snr" else jnp.minimum(r, gamma)
    conversion = {"x0": jnp.ones_like(r), "eps": r, "v": r + 1.0}[prediction]
    return lam / conversion


class DiffusionTargets(flax.struct.PyTreeNode):
    """One training draw. x_t, noise, target: (B, L, D) float32; t: (B,) int32."""

    x_t: jax.Array
    t: jax.Array
    noise: jax.Array
    target: jax.Array


def diffusion_targets(sched: DiffusionSchedule, x0: jax.Array, rng: jax.Array,
                      prediction: str) -> DiffusionTargets:
    """Draws t ~ U{0, .., T-1} and eps ~ N(0, I) per example and builds (x_t, t, noise, target).

    x0: (B, L, D) float. rng is split as (t_key, noise_key) = split(rng).
    """
    _check_prediction(prediction)
    t_key, noise_key = jax.random.split(rng)
    t = jax.random.randint(t_key, (x0.shape[0],), 0, sched.num_steps, dtype=jnp.int32)
    noise = jax.random.normal(noise_key, x0.shape, x0.dtype)
    return DiffusionTargets(x_t=q_sample(sched, x0, t, noise), t=t, noise=noise,
                            target=target_for(prediction, x0, noise, sched, t))


def diffusion_loss(pred: jax.Array, targets: DiffusionTargets, mask: jax.Array,
                   weights: jax.Array | None = None) -> jax.Array:
    """Weighted MSE, averaged over valid frames and channels. () float32.

    pred: (B, L, D); mask: (B, L) bool, True on valid frames; weights: (B,) per-example multipliers (e.g.
    `loss_weight`), or None for 1. The denominator counts valid frames x channels, unweighted, so weights scale
    the loss rather than renormalise it; an all-padding batch gives 0, not NaN.
    """
    if pred.shape != targets.target.shape:
        raise ValueError(f"prediction shape {pred.shape} != target shape {targets.target.shape}")
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} must be (B, L) = {pred.shape[:2]}")
    err = jnp.square(pred.astype(jnp.float32) - targets.target.astype(jnp.float32)).sum(-1)  # (B, L)
    m = mask.astype(jnp.float32)
    if weights is not None:
        m = m * weights.astype(jnp.float32)[:, None]
    denom = jnp.maximum(mask.astype(jnp.float32).sum() * pred.shape[-1], 1.0)
    return (err * m).sum() / denom


def condition_drop_masks(rng: jax.Array, batch: int, p_drop_audio: float, p_drop_style: float,
                         p_drop_both: float) -> tuple[jax.Array, jax.Array]:
    """Classifier-free-guidance condition dropout. Returns (drop_audio, drop_style), each (batch,) bool.

    Audio and style are dropped independently with p_drop_audio and p_drop_style, and both together with an
    extra, independent p_drop_both, so the unconditional branch gets trained even when the single-drop
    probabilities are small: P(drop_audio) = 1 - (1 - p_a)(1 - p_both), P(both) = p_both + (1 - p_both) p_a p_s.
    rng is split into three keys: (audio, style, both).
    """
    for name, p in (("p_drop_audio", p_drop_audio), ("p_drop_style", p_drop_style), ("p_drop_both", p_drop_both)):
        if isinstance(p, (int, float)) and not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    k_audio, k_style, k_both = jax.random.split(rng, 3)
    both = jax.random.bernoulli(k_both, p_drop_both, (batch,))
    drop_audio = jax.random.bernoulli(k_audio, p_drop_audio, (batch,)) | both
    drop_style = jax.random.bernoulli(k_style, p_drop_style, (batch,)) | both
    return drop_audio, drop_style
