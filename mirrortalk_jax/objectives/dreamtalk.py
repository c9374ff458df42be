"""DreamTalk's diffusion objective exactly as the original (`core/networks/diffusion_net.py`): its variance
schedule and its x0-prediction loss.

Schedule: T = 1000 linear betas from beta_1 to beta_T, prefixed with beta_0 = 0, so every array has T + 1
entries, index t in [0, T], alpha_bar[0] = 1. The arrays are rebuilt here in float32 with the original's
operation order (torch.linspace's fused multiply-add, a sequential float32 cumulative sum of log alphas),
matching the checkpoint buffers to 1 ulp. The project's generic schedules (objectives/diffusion.py) index
t in [0, T) without the beta_0 prefix and compute in float64, so they cannot reproduce these numbers; hence
the exact variant lives here, next to the loss that samples t ~ U{1..T} on it.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class VarianceSchedule:
    """(T + 1,) float32 arrays of the original's `VarianceSchedule` (index 0: beta = 0, alpha_bar = 1)."""

    num_steps: int
    betas: np.ndarray
    alphas: np.ndarray
    alpha_bars: np.ndarray
    sigmas_flex: np.ndarray
    sigmas_inflex: np.ndarray

    def buffers(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ("betas", "alphas", "alpha_bars", "sigmas_flex", "sigmas_inflex")}


@functools.lru_cache(maxsize=8)
def variance_schedule(num_steps: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> VarianceSchedule:
    """The original's linear schedule, reproduced in float32 step by step."""
    f32 = np.float32
    start, end = f32(beta_1), f32(beta_T)
    step = f32((end - start) / f32(num_steps - 1))
    i = np.arange(num_steps, dtype=np.float64)
    # torch.linspace: start + step * i for the first half, end - step * (n - 1 - i) for the rest, each one fused
    # multiply-add (a single rounding, emulated exactly in float64).
    lin = np.where(i < num_steps // 2, np.float64(start) + np.float64(step) * i,
                   np.float64(end) - np.float64(step) * (num_steps - 1 - i))
    betas = np.concatenate([[0.0], lin]).astype(f32)
    alphas = (f32(1) - betas).astype(f32)
    log_alphas = np.log(alphas.astype(np.float64)).astype(f32)
    cum = log_alphas.copy()
    for k in range(1, cum.size):  # the original's in-place loop: a sequential float32 sum
        cum[k] = f32(cum[k] + cum[k - 1])
    alpha_bars = np.exp(cum.astype(np.float64)).astype(f32)
    inflex = np.zeros_like(betas)
    inflex[1:] = ((f32(1) - alpha_bars[:-1]) / (f32(1) - alpha_bars[1:])) * betas[1:]
    return VarianceSchedule(num_steps, betas, alphas, alpha_bars, np.sqrt(betas), np.sqrt(inflex).astype(f32))


def noisy_sample(schedule: VarianceSchedule, x0: jax.Array, k_t: jax.Array,
                 k_noise: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The original's forward process: t ~ U{1..T} (B,) and x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, x0 (B, L, M)."""
    ab = jnp.asarray(schedule.alpha_bars)
    t = jax.random.randint(k_t, (x0.shape[0],), 1, schedule.num_steps + 1)
    noise = jax.random.normal(k_noise, x0.shape, x0.dtype)
    a = ab[t][:, None, None]
    return jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise, t


def x0_loss(pred: jax.Array, x0: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean squared error of the x0 prediction (B, L, M) over valid frames (B, L) and every channel."""
    valid = mask.astype(jnp.float32)[..., None]
    return jnp.sum(jnp.square(pred - x0) * valid) / jnp.maximum(valid.sum() * x0.shape[-1], 1.0)
