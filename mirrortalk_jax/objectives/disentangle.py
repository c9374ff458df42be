"""Disentanglement objectives for style encoders: HSIC, soft orthogonality, triplet, in-batch negatives.

Pure jittable functions over a global batch. N is the number of samples (the batch), feature widths may
differ between the two arguments of `hsic` and `orthogonality`.

- `hsic(x, y)`: kernel dependence (0 iff independent, for characteristic kernels and enough samples); used
  to make a style code carry no information about what was said.
- `orthogonality(a, b)`: a linear, cheaper relative: the squared Frobenius norm of the cross-correlation of
  two projections (Domain Separation Networks' "difference loss").
- `triplet(anchor, positive, negative, margin)`: metric learning on speakers.
- `batch_negatives(rng, speaker_index)`: for each sample, another sample of a different speaker.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Smallest kernel bandwidth: the median heuristic gives 0 when more than half the pairs coincide (a collapsed
# encoder), and a zero bandwidth would divide by zero.
_MIN_BANDWIDTH = 1e-6
_EPS = 1e-8


def _pairwise_sq_dists(x: jax.Array) -> jax.Array:
    """(N, A) -> (N, N) squared Euclidean distances.

    Computed from differences rather than |x|^2 + |y|^2 - 2 x.y: the diagonal is exactly 0, never slightly
    negative, and the gradient at coinciding points is 0 instead of noise. N is a batch, so N^2 A is small.
    """
    diff = x[:, None, :] - x[None, :, :]
    return jnp.sum(diff * diff, axis=-1)


def median_bandwidth(sq_dists: jax.Array) -> jax.Array:
    """Median heuristic: the median of the N(N-1)/2 off-diagonal pairwise distances, as a constant.

    Falls back to the mean distance when the median is 0 (many coinciding points) and to `_MIN_BANDWIDTH`
    when every point coincides. Gradients do not flow through the bandwidth (stop_gradient): it is a
    normalisation, not something to optimise.
    """
    n = sq_dists.shape[0]
    rows, cols = np.triu_indices(n, k=1)
    dists = jnp.sqrt(jnp.maximum(jax.lax.stop_gradient(sq_dists)[rows, cols], 0.0))
    median = jnp.median(dists)
    sigma = jnp.where(median > _MIN_BANDWIDTH, median, jnp.mean(dists))
    return jnp.maximum(sigma, _MIN_BANDWIDTH)


def gaussian_gram(x: jax.Array) -> jax.Array:
    """(N, A) -> (N, N) Gaussian kernel exp(-|xi - xj|^2 / (2 sigma^2)) with the median-heuristic sigma."""
    sq = _pairwise_sq_dists(x.astype(jnp.float32))
    sigma = median_bandwidth(sq)
    return jnp.exp(-sq / (2.0 * sigma * sigma))


def hsic(x: jax.Array, y: jax.Array) -> jax.Array:
    """Biased HSIC estimate between paired samples, 1/(n-1)^2 tr(K H L H).

    Args:
      x: (N, A) samples of one variable (e.g. style codes).
      y: (N, B) the paired samples of the other (e.g. content features of the same windows).
    Returns:
      () float32 >= 0 (up to rounding); about 0 for independent variables (the biased estimator has an
      O(1/N) positive offset), larger for dependent ones. Invariant to translating x or y, and to scaling
      either, since the bandwidths follow the data (median heuristic).
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"hsic expects (N, A) and (N, B) with the same N, got {x.shape} and {y.shape}")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"hsic needs at least 2 samples, got {n}")
    k = gaussian_gram(x)
    l_ = gaussian_gram(y)
    # H K H centres K's rows and columns; tr(K H L H) = sum(HKH * L) without forming H.
    kc = k - k.mean(axis=0, keepdims=True) - k.mean(axis=1, keepdims=True) + k.mean()
    return jnp.sum(kc * l_) / float((n - 1) ** 2)


def orthogonality(a: jax.Array, b: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Soft subspace orthogonality ||C||_F^2, C = A^T B / N, of centred, row-L2-normalised features.

    Each feature matrix is centred over the batch (a constant offset is no correlation), each row (sample) is
    L2-normalised (the loss cannot be lowered by shrinking features), then C[i, j] is the correlation over the
    batch of feature i of `a` with feature j of `b`. The loss is 0 exactly when the two projections are
    orthogonal in this sense: every (centred) dimension of `a`, seen as a vector over the batch, is orthogonal
    to every dimension of `b`, i.e. no linear read-out of one predicts the other. It is at most 1.

    Args:
      a: (N, E) e.g. style projections.
      b: (N, E') e.g. content projections of the same samples (E' may differ from E).
    Returns:
      () float32 in [0, 1].
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"orthogonality expects (N, E) and (N, E') with the same N, got {a.shape} and {b.shape}")

    def prepare(x):
        x = x.astype(jnp.float32)
        x = x - x.mean(axis=0, keepdims=True)
        return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)

    c = prepare(a).T @ prepare(b) / a.shape[0]
    return jnp.sum(c * c)


def distance(x: jax.Array, y: jax.Array, metric: str = "cosine") -> jax.Array:
    """Row-wise distances (..., E), (..., E) -> (...).

    "cosine": 1 - cos(x, y), in [0, 2], insensitive to the norm of the codes (margins mean the same thing
    whatever the code scale). "l2": squared Euclidean distance (FaceNet), scale-dependent.
    """
    if metric == "cosine":
        x = x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + _EPS)
        y = y / jnp.sqrt(jnp.sum(y * y, axis=-1, keepdims=True) + _EPS)
        return 1.0 - jnp.sum(x * y, axis=-1)
    if metric == "l2":
        return jnp.sum(jnp.square(x - y), axis=-1)
    raise ValueError(f"unknown distance {metric!r}: use 'cosine' or 'l2'")


def pairwise_distance(x: jax.Array, y: jax.Array, metric: str = "cosine") -> jax.Array:
    """(N, E), (M, E) -> (N, M) distances with `distance`'s conventions."""
    return distance(x[:, None, :], y[None, :, :], metric)


def triplet(anchor: jax.Array, positive: jax.Array, negative: jax.Array, margin: float,
            metric: str = "cosine", weights: jax.Array | None = None) -> jax.Array:
    """Mean hinge max(0, d(anchor, positive) - d(anchor, negative) + margin).

    Args:
      anchor, positive, negative: (N, E); positive shares the anchor's speaker, negative does not.
      margin: how much farther the negative must be than the positive (cosine: in units of 1 - cos).
      metric: "cosine" (default, see `distance`) or "l2" (squared Euclidean).
      weights: optional (N,) weights, e.g. 0 where a sample has no valid negative (see `has_negative`).
    Returns:
      () float32 >= 0; 0 when every triplet satisfies the margin.
    """
    hinge = jax.nn.relu(distance(anchor, positive, metric) - distance(anchor, negative, metric) + margin)
    if weights is None:
        return hinge.mean()
    weights = weights.astype(hinge.dtype)
    return jnp.sum(hinge * weights) / jnp.maximum(weights.sum(), 1.0)


def has_negative(speaker_index: jax.Array) -> jax.Array:
    """(B,) int -> (B,) bool: whether some other batch element has a different speaker."""
    return jnp.any(speaker_index[:, None] != speaker_index[None, :], axis=1)


def batch_negatives(rng: jax.Array, speaker_index: jax.Array, distances: jax.Array | None = None) -> jax.Array:
    """For each batch element, the index of a batch element of a different speaker.

    Args:
      rng: PRNG key for the random choice.
      speaker_index: (B,) int speaker ids.
      distances: optional (B, B) anchor-to-candidate distances; when given, picks the hardest negative (the
        closest element of another speaker) instead of a uniformly random one.
    Returns:
      (B,) int32. Where no element of another speaker exists (the whole batch is one speaker), falls back to a
      random *other* element (itself only when B == 1); mask those triplets with `has_negative`.
    """
    b = speaker_index.shape[0]
    different = speaker_index[:, None] != speaker_index[None, :]
    not_self = ~jnp.eye(b, dtype=bool)
    valid = jnp.where(jnp.any(different, axis=1, keepdims=True), different, not_self)
    if b == 1:
        valid = jnp.ones((1, 1), bool)
    if distances is None:
        # Uniform over the valid candidates: argmax of i.i.d. noise restricted to them.
        scores = jax.random.uniform(rng, (b, b))
    else:
        if distances.shape != (b, b):
            raise ValueError(f"distances must be ({b}, {b}), got {distances.shape}")
        scores = -jax.lax.stop_gradient(distances).astype(jnp.float32)
    return jnp.argmax(jnp.where(valid, scores, -jnp.inf), axis=1).astype(jnp.int32)
