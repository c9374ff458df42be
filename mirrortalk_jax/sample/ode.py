"""Fixed-grid ODE samplers for flow-matching models: integrate dx/dt = v(x, t) from t = 0 (noise) to t = 1.

MimicTalk samples with torchdiffeq's fixed-grid `midpoint` method on `torch.linspace(0, 1, steps)`, where
`steps` counts grid *points* (steps - 1 intervals, two velocity calls each). The steppers here repeat
torchdiffeq's arithmetic operation by operation, so a port reproduces the original's trajectories:

    euler:     y1 = y0 + dt * f(t0, y0)
    midpoint:  y_mid = y0 + f(t0, y0) * (dt / 2);  y1 = y0 + dt * f(t0 + dt / 2, y_mid)
    heun:      k1 = f(t0, y0); k2 = f(t1, y0 + dt * k1);  y1 = y0 + (k1 + k2) * dt / 2   (2nd order, trapezoid)
    rk4:       torchdiffeq's `rk4` (the 3/8 rule: k at t0, t0 + dt/3, t0 + 2dt/3, t1)

Classifier-free guidance (`guided`) stacks the conditional and unconditional branches into one batch of
twice the size, so each velocity call is a single network pass. The loop is a `lax.scan` over intervals:
one compiled step, whatever the number of steps.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Velocity = Callable[[jax.Array, jax.Array], jax.Array]  # (x (B, ...), t () float32) -> v (B, ...)
BranchVelocity = Callable[[jax.Array, jax.Array, jax.Array | None], jax.Array]  # (x, t, drop (B,) | None) -> v

METHODS = ("euler", "midpoint", "heun", "rk4")
CALLS_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


def time_grid(steps: int) -> np.ndarray:
    """torch.linspace(0, 1, steps) in float32, bit for bit: (steps,).

    PyTorch fills the first half as start + step * i and the second half as end - step * (steps - 1 - i), with
    step = (end - start) / (steps - 1) in float32. Its AVX2 CPU kernel (checked for steps 2..2999, torch 2.13)
    evaluates each point as one fused multiply-add, i.e. the exact step * i added to 0 or subtracted from 1
    with a single rounding, which is what is computed here (exactly in float64, rounded once). Rounding
    step * k to float32 first, as PyTorch's non-SIMD `default` CPU kernel does, lands one ulp away for e.g.
    steps = 10, 14, 16, 19 (steps = 20 agrees either way); the CUDA kernel was not checked.
    """
    if steps < 2:
        raise ValueError(f"a time grid needs at least 2 points, got steps={steps}")
    step = np.float64(np.float32(1.0) / np.float32(steps - 1))
    i = np.arange(steps, dtype=np.float64)  # step * i is exact in float64 (24-bit step, i < 2^29)
    return np.where(i < steps // 2, i * step, 1.0 - (steps - 1 - i) * step).astype(np.float32)


def guided(velocity: BranchVelocity, scale: float) -> Velocity:
    """Classifier-free guidance v = v_null + (v_cond - v_null) * scale, both branches in one batched call.

    `velocity(x, t, drop)` evaluates the model with the condition dropped where `drop` (B,) is True (None: no
    drop at all). With scale == 1 only the conditional branch is evaluated, as in the original.
    """
    scale = float(scale)
    if scale == 1.0:
        return lambda x, t: velocity(x, t, None)

    def fn(x: jax.Array, t: jax.Array) -> jax.Array:
        b = x.shape[0]
        drop = jnp.concatenate([jnp.zeros((b,), bool), jnp.ones((b,), bool)])
        v = velocity(jnp.concatenate([x, x]), t, drop)
        v_cond, v_null = v[:b], v[b:]
        return v_null + (v_cond - v_null) * scale

    return fn


def _step(fn: Velocity, method: str, t0: jax.Array, t1: jax.Array, y0: jax.Array):
    """One interval: (y1, times at which fn was called, (CALLS_PER_STEP[method],))."""
    dt = t1 - t0
    if method == "euler":
        return y0 + dt * fn(y0, t0), jnp.stack([t0])
    if method == "midpoint":
        half_dt = 0.5 * dt
        t_mid = t0 + half_dt
        y_mid = y0 + fn(y0, t0) * half_dt
        return y0 + dt * fn(y_mid, t_mid), jnp.stack([t0, t_mid])
    if method == "heun":
        k1 = fn(y0, t0)
        k2 = fn(y0 + dt * k1, t1)
        return y0 + (k1 + k2) * (0.5 * dt), jnp.stack([t0, t1])
    if method == "rk4":  # torchdiffeq.rk4_alt_step_func
        third, two_thirds = 1.0 / 3.0, 2.0 / 3.0
        ta, tb = t0 + dt * third, t0 + dt * two_thirds
        k1 = fn(y0, t0)
        k2 = fn(y0 + dt * k1 * third, ta)
        k3 = fn(y0 + dt * (k2 - k1 * third), tb)
        k4 = fn(y0 + dt * (k1 - k2 + k3), t1)
        return y0 + (k1 + 3 * (k2 + k3) + k4) * dt * 0.125, jnp.stack([t0, ta, tb, t1])
    raise ValueError(f"unknown ODE method {method!r}; choose one of {METHODS}")


def integrate(fn: Velocity, y0: jax.Array, grid: jax.Array | np.ndarray, method: str = "midpoint",
              *, return_trajectory: bool = False):
    """Integrates dy/dt = fn(y, t) over `grid` (S,) with a fixed-grid `method`.

    Returns y at grid[-1], or with `return_trajectory` a tuple (y_final, states (S, *y0.shape) with
    states[0] = y0, call_times ((S - 1) * CALLS_PER_STEP[method],) float32: the t of every fn call in order).
    """
    if method not in METHODS:
        raise ValueError(f"unknown ODE method {method!r}; choose one of {METHODS}")
    grid = jnp.asarray(grid, jnp.float32)

    def body(y, ts):
        y1, called = _step(fn, method, ts[0], ts[1], y)
        return y1, (y1, called) if return_trajectory else None

    y, out = jax.lax.scan(body, y0, jnp.stack([grid[:-1], grid[1:]], axis=-1))
    if not return_trajectory:
        return y
    states, called = out
    return y, jnp.concatenate([y0[None], states]), called.reshape(-1)
