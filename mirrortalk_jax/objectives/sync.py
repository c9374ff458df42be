"""Lip-sync objectives shared by every sync expert (models.mirrortalk.motion_expert, models.dreamtalk.lip_expert)
and by the generators that use a frozen expert as an auxiliary loss.

  sample_sync_pairs   training pairs of K-frame windows: aligned, shifted a few frames, shifted far, other clip;
  pair_loss           the experts' weighted binary cross-entropy over those pairs, with the metrics they log;
  window_mean         a generator's -log P_sync averaged over the windows whose K frames are all valid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mirrortalk_jax.data.windows import sliding_windows

CATEGORIES = ("pos", "near", "far", "other")  # sample_sync_pairs' category codes 0..3


def sample_sync_pairs(batch: dict[str, jax.Array], rng: jax.Array, *, window: int, pairs_per_clip: int,
                      category_probs: tuple[float, float, float, float], near_shift: tuple[int, int],
                      far_shift: tuple[int, int]):
    """Random (motion window, audio window) pairs, P = pairs_per_clip per batch element, all inside the valid
    frames. Shared by every sync expert (models.mirrortalk.motion_expert, models.dreamtalk.lip_expert).

    Categories are drawn with `category_probs` = (aligned, near shift, far shift, other clip); shifts are
    inclusive (min, max) frame ranges, either direction. A shift larger than the clip allows is clipped to
    fit; a clip too short for even the smallest near shift gets an other-clip negative instead. Reads motion
    (B, L, D), audio_features (B, L, F), motion_mask (B, L) (valid frames first), speaker_index (B,) and
    clip_index (B,); motion window b always comes from batch element b.

    Returns motion windows (B, P, K, D), audio windows (B, P, K, F), labels (B, P) float (1 = aligned),
    category (B, P) int32 (0 aligned, 1 near shift, 2 far shift, 3 other clip) and weight (B, P) float
    (0 where no valid pair exists).
    """
    motion, audio, mask = batch["motion"], batch["audio_features"], batch["motion_mask"]
    bsz, length = motion.shape[:2]
    k, p = window, pairs_per_clip
    # The pipeline pads at the end, so the valid frames are 0 .. n-1.
    n = mask.astype(jnp.int32).sum(1)[:, None]  # (B, 1)
    room = n - k  # last valid window start; < 0: the clip is shorter than a window
    r_cat, r_mag, r_sign, r_lo, r_part, r_pstart = jax.random.split(rng, 6)
    category = jax.random.choice(r_cat, 4, (bsz, p), p=jnp.asarray(category_probs))
    lo = jnp.where(category == 1, near_shift[0], far_shift[0])
    hi = jnp.where(category == 1, near_shift[1], far_shift[1])
    shift = jnp.floor(lo + jax.random.uniform(r_mag, (bsz, p)) * (hi - lo + 1)).astype(jnp.int32)
    shift = jnp.where((category == 1) | (category == 2), shift, 0)
    shift = jnp.minimum(shift, jnp.maximum(room, 0))  # clipped to stay inside the valid frames
    # A clip too short for the smallest shift falls back to another clip's audio.
    category = jnp.where(((category == 1) | (category == 2)) & (shift < near_shift[0]), 3, category)
    shift = jnp.where(category == 3, 0, shift)
    # The pair (motion start, audio start) spans [first, first + shift + K); pick `first` uniformly.
    first = jnp.floor(jax.random.uniform(r_lo, (bsz, p)) * (jnp.maximum(room - shift, 0) + 1)).astype(jnp.int32)
    audio_later = jax.random.bernoulli(r_sign, 0.5, (bsz, p))
    m_start = jnp.where(audio_later, first, first + shift)
    a_start = jnp.where(audio_later, first + shift, first)
    # Other-clip negatives: prefer another speaker, then another clip of the same speaker.
    spk, clip = batch["speaker_index"], batch["clip_index"]
    other_spk = spk[:, None] != spk[None, :]
    other_clip = (clip[:, None] != clip[None, :]) & ~jnp.eye(bsz, dtype=bool)
    usable = (room[:, 0] >= 0)[None, :]  # the partner has a full window
    priority = 2.0 * (other_spk & usable) + 1.0 * (~other_spk & other_clip & usable)  # (B, B)
    score = priority[:, None, :] + jax.random.uniform(r_part, (bsz, p, bsz))
    partner = jnp.argmax(score, -1)  # (B, P)
    has_partner = jnp.take_along_axis(priority[:, None, :], partner[..., None], -1)[..., 0] >= 1.0
    partner_room = jnp.maximum(room[:, 0][partner], 0)
    partner_start = jnp.floor(jax.random.uniform(r_pstart, (bsz, p)) * (partner_room + 1)).astype(jnp.int32)
    is_other = category == 3
    src = jnp.where(is_other, partner, jnp.arange(bsz)[:, None])
    a_start = jnp.where(is_other, partner_start, a_start)
    weight = ((room >= 0) & (~is_other | has_partner)).astype(jnp.float32)
    offsets = jnp.arange(k)
    m_idx = jnp.clip(m_start[..., None] + offsets, 0, length - 1)  # (B, P, K)
    a_idx = jnp.clip(a_start[..., None] + offsets, 0, length - 1)
    motion_w = motion[jnp.arange(bsz)[:, None, None], m_idx]  # (B, P, K, D)
    audio_w = audio[src[..., None], a_idx]  # (B, P, K, F)
    labels = (category == 0).astype(jnp.float32)
    return motion_w, audio_w, labels, category, weight


def pair_loss(bce: jax.Array, prob: jax.Array, labels: jax.Array, category: jax.Array,
              weight: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted mean of per-pair BCE (B, P) and the experts' metrics: accuracy (threshold 0.5), mean sync
    probability of positives / all negatives / each negative kind. prob, labels, category, weight: (B, P)."""
    total = jnp.maximum(weight.sum(), 1.0)
    loss = (bce * weight).sum() / total
    correct = ((prob > 0.5) == (labels > 0.5)).astype(jnp.float32)

    def masked_mean(x, m):
        m = m * weight
        return (x * m).sum() / jnp.maximum(m.sum(), 1.0)

    cat = [(category == c).astype(jnp.float32) for c in range(len(CATEGORIES))]
    metrics = {"bce": loss, "accuracy": (correct * weight).sum() / total,
               "pos_prob": masked_mean(prob, cat[0]), "neg_prob": masked_mean(prob, 1.0 - cat[0]),
               "near_prob": masked_mean(prob, cat[1]), "far_prob": masked_mean(prob, cat[2]),
               "other_prob": masked_mean(prob, cat[3])}
    return loss, metrics


def window_mean(per_window: jax.Array, mask: jax.Array | None, window: int) -> jax.Array:
    """Mean of per-window values (B, N = L - window + 1) over the windows whose `window` frames are all valid in
    `mask` (B, L) (None: all windows). Scalar; 0 when no window is valid."""
    if mask is None:
        valid = jnp.ones_like(per_window)
    else:
        valid = sliding_windows(mask.astype(bool), window, axis=1).all(-1).astype(per_window.dtype)
    return (per_window * valid).sum() / jnp.maximum(valid.sum(), 1.0)
