"""Conditional flow matching over motion sequences (Lipman et al. 2023), as MimicTalk's ICS-A2M trains it.

Notation: x1 is data (a motion clip), x0 ~ N(0, I) noise, t ~ U(0, 1) the flow time (t = 0 noise, t = 1 data).
With minimum noise level sigma_min the conditional path and its velocity are

    x_t = (1 - (1 - sigma_min) t) x0 + t x1,        u_t = x1 - (1 - sigma_min) x0,

and the network v(x_t, t, condition) regresses u_t. MimicTalk (like Voicebox's lucidrains port) uses
sigma_min = 0, the straight ("rectified") path x_t = (1 - t) x0 + t x1 with target x1 - x0. Sampling
integrates dx/dt = v from t = 0 to 1 (sample/ode.py).

Every function is pure jax.numpy and jittable; same shapes and style as objectives/diffusion.py.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


class FlowTargets(flax.struct.PyTreeNode):
    """One training draw. x_t, x0, target: (B, L, D) float32; t: (B,) float32 in [0, 1)."""

    x_t: jax.Array
    t: jax.Array
    x0: jax.Array
    target: jax.Array


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
    """(B,) per-example values -> (B, 1, ..., 1), broadcastable against x."""
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim)).astype(x.dtype)


def interpolate(x0: jax.Array, x1: jax.Array, t: jax.Array, sigma_min: float = 0.0) -> jax.Array:
    """x_t = (1 - (1 - sigma_min) t) x0 + t x1. x0, x1: (B, L, D); t: (B,)."""
    tb = _bcast(t, x1)
    return (1.0 - (1.0 - sigma_min) * tb) * x0 + tb * x1


def target_velocity(x0: jax.Array, x1: jax.Array, sigma_min: float = 0.0) -> jax.Array:
    """u_t = x1 - (1 - sigma_min) x0 (independent of t on this path). (B, L, D)."""
    return x1 - (1.0 - sigma_min) * x0


def flow_targets(x1: jax.Array, rng: jax.Array, sigma_min: float = 0.0) -> FlowTargets:
    """Draws t ~ U(0, 1) per example and x0 ~ N(0, I), and builds (x_t, t, x0, target).

    x1: (B, L, D) float. rng is split as (t_key, noise_key) = split(rng).
    """
    t_key, noise_key = jax.random.split(rng)
    t = jax.random.uniform(t_key, (x1.shape[0],), jnp.float32)
    x0 = jax.random.normal(noise_key, x1.shape, x1.dtype)
    return FlowTargets(x_t=interpolate(x0, x1, t, sigma_min), t=t, x0=x0,
                       target=target_velocity(x0, x1, sigma_min))


def predict_x1(x_t: jax.Array, t: jax.Array, velocity: jax.Array, sigma_min: float = 0.0) -> jax.Array:
    """The one-step estimate of the data from a velocity: x1_hat = (1 - sigma_min) x_t + (1 - (1 - sigma_min) t) v.

    For sigma_min = 0 this is x1_hat = x_t + (1 - t) v, exact when v = u_t. Differentiable in `velocity`, so
    losses on the clean motion (lip sync) can train the velocity field. (B, L, D), (B,), (B, L, D) -> (B, L, D).
    """
    c = 1.0 - sigma_min
    return c * x_t + (1.0 - c * _bcast(t, x_t)) * velocity


def flow_loss(pred: jax.Array, target: jax.Array, loss_mask: jax.Array) -> jax.Array:
    """The original's masked MSE: mean over channels, masked mean over frames per example, mean over the batch.

    pred, target: (B, L, D); loss_mask: (B, L) bool, True on frames that count (to predict and valid). An
    example without such frames contributes 0 (its denominator is clamped at 1e-5, as in the original).
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
    if loss_mask.shape != pred.shape[:2]:
        raise ValueError(f"loss_mask shape {loss_mask.shape} must be (B, L) = {pred.shape[:2]}")
    err = jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)), axis=-1)  # (B, L)
    m = loss_mask.astype(jnp.float32)
    per_example = (err * m).sum(-1) / jnp.maximum(m.sum(-1), 1e-5)
    return per_example.mean()
