"""Which frames a motion-infilling step must predict: one contiguous span, or scattered frames.

The in-context training task of MimicTalk / Voicebox: the model sees a clip's motion on some frames (the
in-context prompt, which carries the speaker's style) and predicts the others from audio. The task masks
60-100 % of the frames, per batch either

  * one contiguous span per example whose length is a fraction U(lo, hi) of the clip, at a uniform start
    (speech continuation and infilling), or
  * i.i.d. frames, each predicted with one probability p ~ U(lo, hi) drawn for the batch (scattered prompt
    frames: the model learns to read style from any frames it is given),

chosen by a fair coin per batch, as in the original's `InContextTransformerAudio2Motion.forward`. Unlike the
original, fractions are taken of each example's *valid* frames (padding never counts) and span lengths are
rounded up, so a span covers at least `lo` of the valid frames.

Masks are True on frames to predict (the original's `cond_mask` convention); padding is always False.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SPAN, IID = 0, 1  # the two masking modes, as returned by `infill_mask(..., return_mode=True)`


def span_mask(rng: jax.Array, valid: jax.Array, frac_range: tuple[float, float]) -> jax.Array:
    """One contiguous span per example covering ceil(f * valid frames), f ~ U(frac_range). (B, L) bool.

    valid: (B, L) bool, True on valid frames, which must form a prefix (padding at the end, as the data
    pipeline pads).
    """
    k_frac, k_start = jax.random.split(rng)
    b, length = valid.shape
    n_valid = valid.sum(-1).astype(jnp.float32)  # (B,)
    frac = jax.random.uniform(k_frac, (b,), minval=frac_range[0], maxval=frac_range[1])
    span = jnp.minimum(jnp.ceil(frac * n_valid), n_valid)
    start = jnp.floor((n_valid - span + 1.0) * jax.random.uniform(k_start, (b,)))
    start = jnp.minimum(start, n_valid - span)  # u < 1, but keep the span inside whatever the rounding
    pos = jnp.arange(length, dtype=jnp.float32)[None]
    return (pos >= start[:, None]) & (pos < (start + span)[:, None]) & valid


def iid_mask(rng: jax.Array, valid: jax.Array, frac_range: tuple[float, float]) -> jax.Array:
    """Each valid frame predicted independently with probability p ~ U(frac_range), one p per batch. (B, L)."""
    k_p, k_frames = jax.random.split(rng)
    p = jax.random.uniform(k_p, (), minval=frac_range[0], maxval=frac_range[1])
    return (jax.random.uniform(k_frames, valid.shape) < p) & valid


def infill_mask(rng: jax.Array, valid: jax.Array, frac_range: tuple[float, float] = (0.6, 1.0),
                *, return_mode: bool = False):
    """The training mask of one batch: span or i.i.d. mode by a fair coin. (B, L) bool [, () int32 mode].

    Args:
      rng: PRNG key (split into coin, span and i.i.d. keys).
      valid: (B, L) bool, True on valid frames (a prefix of each row).
      frac_range: (lo, hi) with 0 < lo <= hi <= 1, the fraction of frames to predict.
      return_mode: also return SPAN (0) or IID (1).
    """
    lo, hi = float(frac_range[0]), float(frac_range[1])
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"frac_range must satisfy 0 < lo <= hi <= 1, got {frac_range}")
    k_coin, k_span, k_iid = jax.random.split(rng, 3)
    use_span = jax.random.bernoulli(k_coin, 0.5)
    mask = jnp.where(use_span, span_mask(k_span, valid, (lo, hi)), iid_mask(k_iid, valid, (lo, hi)))
    if return_mode:
        return mask, jnp.where(use_span, SPAN, IID).astype(jnp.int32)
    return mask
