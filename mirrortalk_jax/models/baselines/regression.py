"""Audio-only motion regression: the simplest audio-to-motion model, and the "no style" baseline.

Per-frame audio features -> a stack of residual temporal convolutions -> motion. It sees no style reference,
so it can only learn the average speaker: the baseline every style-aware model must beat on style metrics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.models.registry import register

_dense = nnx.initializers.lecun_normal()


class TemporalConvBlock(nnx.Module):
    """x + Dense(gelu(Conv1d(LayerNorm(x)))) over time. (B, L, H) -> (B, L, H)."""

    def __init__(self, hidden: int, kernel_size: int, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(hidden, scale_init=nnx.with_partitioning(nnx.initializers.ones, ("embed",)),
                                  bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("embed",)), rngs=rngs)
        self.conv = nnx.Conv(hidden, hidden, kernel_size=(kernel_size,), padding="SAME",
                             kernel_init=nnx.with_partitioning(_dense, ("conv", "embed", "mlp")),
                             bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("mlp",)), rngs=rngs)
        self.out = nnx.Linear(hidden, hidden, kernel_init=nnx.with_partitioning(_dense, ("mlp", "embed")),
                              bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("embed",)), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.out(jax.nn.gelu(self.conv(self.norm(x))))


class AudioMotionRegressor(nnx.Module):
    """Predicts (B, L, D) motion from (B, L, F) per-frame audio features."""

    def __init__(self, audio_dim: int, motion_dim: int, hidden: int, num_layers: int, kernel_size: int,
                 rngs: nnx.Rngs):
        self.audio_in = nnx.Linear(audio_dim, hidden, kernel_init=nnx.with_partitioning(_dense, ("audio", "embed")),
                                   bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("embed",)), rngs=rngs)
        self.blocks = nnx.List([TemporalConvBlock(hidden, kernel_size, rngs) for _ in range(num_layers)])
        self.motion_out = nnx.Linear(hidden, motion_dim,
                                     kernel_init=nnx.with_partitioning(_dense, ("embed", "motion")),
                                     bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("motion",)), rngs=rngs)

    def __call__(self, audio_features: jax.Array) -> jax.Array:
        # Log-mel features sit around -5..5; a fixed scale keeps the first layer's inputs near unit range.
        x = self.audio_in(audio_features * 0.2)
        for block in self.blocks:
            x = block(x)
        return self.motion_out(x)

    def loss(self, batch: dict[str, jax.Array], rng: jax.Array, train: bool) -> tuple[jax.Array, dict]:
        del rng, train  # deterministic model
        pred = self(batch["audio_features"])
        mask = batch["motion_mask"].astype(pred.dtype)[..., None]
        err = jnp.square(pred - batch["motion"]) * mask
        loss = err.sum() / jnp.maximum(mask.sum() * pred.shape[-1], 1.0)
        return loss, {"mse": loss}


@register("audio_regression")
def _create(config, spec: MotionSpec, rngs: nnx.Rngs) -> AudioMotionRegressor:
    return AudioMotionRegressor(audio_dim=config.audio_dim, motion_dim=spec.dim, hidden=config.hidden,
                                num_layers=config.num_layers, kernel_size=config.kernel_size, rngs=rngs)
