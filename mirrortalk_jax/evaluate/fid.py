"""Frechet distance between feature distributions (FID), streaming feature statistics, pluggable extractors.

FID as pytorch-fid computes it (Heusel et al. 2017), with mu/S the mean and sample covariance (ddof = 1, as
`np.cov`) of the features of each image set:

    FID = ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr( (S1 S2)^(1/2) )

The literature (Wav2Lip, EAT...) runs pytorch-fid's InceptionV3 pool3 features (2048-d) over all frames of
the ground-truth and generated videos; `mirrortalk_jax.evaluate.inception` is a port of that network, usable
once its weights are converted (tools/convert_inception.py). Any other `FeatureExtractor` works too, and
`PixelProjection` is a weights-free one for tests and smoke runs (its numbers mean nothing to the literature).

Numerics (numpy float64, on the host: D x D eigendecompositions are cheap next to feature extraction):

* Tr((S1 S2)^(1/2)) is the sum of square roots of the eigenvalues of S1 S2, which equal those of the symmetric
  positive semi-definite A = S1^(1/2) S2 S1^(1/2). We take S1^(1/2) and the eigenvalues of A with `eigh`,
  zeroing round-off eigenvalues (below numpy's matrix-rank tolerance). Unlike pytorch-fid's
  `scipy.linalg.sqrtm(S1 @ S2)`, this never returns complex values or NaN for singular covariances (fewer
  samples than feature dimensions is the usual case for per-video FID), so no eps offset on the diagonal is
  needed; it is accurate to ~1e-15 relative where sqrtm loses 1e-8..1e-7 (measured against the nuclear norm
  of F1^T F2 for S = F F^T).
* Statistics are accumulated batch by batch with Chan et al.'s pairwise update of (count, mean, centred
  sum of squares): memory is O(D^2) whatever the number of frames, and there is no catastrophic cancellation
  from a raw sum of squares when features have a large mean (pool3 features are non-negative, mean ~0.3).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

# ----- Frechet distance -----


def _psd_eigenvalues(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric PSD matrix with round-off removed: those below D * eps * max|w| are zero.

    Singular covariances have eigenvalues of +-1e-16 relative instead of zeros; their square roots (1e-8)
    would add up to a visible bias (identical rank-deficient statistics would not give 0). The threshold is
    numpy's `matrix_rank` tolerance.
    """
    tol = w.size * np.finfo(np.float64).eps * max(np.abs(w).max(initial=0.0), 1e-300)
    return np.where(w > tol, w, 0.0)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix."""
    w, v = np.linalg.eigh(matrix)
    return (v * np.sqrt(_psd_eigenvalues(w))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) for symmetric PSD S1, S2: sum of sqrt(eig(S1^(1/2) S2 S1^(1/2)))."""
    root1 = _psd_sqrt(sigma1)
    a = root1 @ sigma2 @ root1
    a = 0.5 * (a + a.T)  # exact symmetry for eigvalsh
    return float(np.sum(np.sqrt(_psd_eigenvalues(np.linalg.eigvalsh(a)))))


def _gaussian(mu, sigma, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise ValueError(f"{name}: expected mu (D,) and sigma (D, D), got {mu.shape} and {sigma.shape}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise ValueError(f"{name}: statistics contain NaN or inf")
    if not np.allclose(sigma, sigma.T, rtol=1e-6, atol=1e-10 * max(np.abs(sigma).max(), 1e-300)):
        raise ValueError(f"{name}: sigma is not symmetric")
    return mu, 0.5 * (sigma + sigma.T)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (the FID formula; see the module docstring).

    Args:
      mu1, mu2: (D,) means. sigma1, sigma2: (D, D) covariances (symmetric PSD, singular allowed).
    Returns:
      The squared Frechet (2-Wasserstein) distance, >= 0 up to round-off; 0 for identical statistics.
    """
    mu1, sigma1 = _gaussian(mu1, sigma1, "first")
    mu2, sigma2 = _gaussian(mu2, sigma2, "second")
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.size} and {mu2.size}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))


# ----- Streaming statistics -----


@dataclasses.dataclass
class FeatureStats:
    """Running count, mean and centred sum of squares of (N, D) feature batches (float64, O(D^2) memory).

    `update` adds a batch, `merge` combines two accumulators (e.g. from several hosts), `mean`/`cov` give the
    numbers FID needs; `cov` is the sample covariance (ddof = 1), as pytorch-fid's `np.cov(rowvar=False)`.
    """

    dim: int
    count: int = 0
    _mean: np.ndarray | None = None
    _m2: np.ndarray | None = None  # sum over samples of (x - mean)(x - mean)^T

    def __post_init__(self):
        if self._mean is None:
            self._mean = np.zeros(self.dim)
            self._m2 = np.zeros((self.dim, self.dim))

    def update(self, features) -> FeatureStats:
        """Adds a (N, D) batch of features; returns self."""
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected features of shape (N, {self.dim}), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("features contain NaN or inf")
        if len(x) == 0:
            return self
        mean = x.mean(axis=0)
        centred = x - mean
        return self._combine(len(x), mean, centred.T @ centred)

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Adds another accumulator's samples; returns self."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
        return self._combine(other.count, other._mean, other._m2) if other.count else self

    def _combine(self, n: int, mean: np.ndarray, m2: np.ndarray) -> FeatureStats:
        total = self.count + n
        delta = mean - self._mean
        self._m2 = self._m2 + m2 + np.outer(delta, delta) * (self.count * n / total)
        self._mean = self._mean + delta * (n / total)
        self.count = total
        return self

    @property
    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("no features were added")
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError(f"a sample covariance needs at least 2 feature vectors, got {self.count}")
        return self._m2 / (self.count - 1)

    def save(self, path: str | os.PathLike) -> None:
        """Writes an .npz with `mu` and `sigma` (pytorch-fid's stats format) plus `count`."""
        np.savez(path, mu=self.mean, sigma=self.cov, count=self.count)


def load_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from an .npz written by `FeatureStats.save` or pytorch-fid's `--save-stats`."""
    with np.load(path) as f:
        if "mu" not in f or "sigma" not in f:
            raise ValueError(f"{path}: expected arrays 'mu' and 'sigma', found {sorted(f.keys())}")
        return f["mu"].astype(np.float64), f["sigma"].astype(np.float64)


# ----- Feature extractors -----


@runtime_checkable
class FeatureExtractor(Protocol):
    """Anything mapping a batch of RGB images to feature vectors.

    Called with (N, H, W, 3) float32 images in [0, 1]; returns (N, D) features (any array type). `feature_dim`
    is D. Extractors resize internally if they need a fixed input size.
    """

    feature_dim: int

    def __call__(self, images: jax.Array) -> jax.Array: ...


class PixelProjection:
    """A weights-free extractor: images resized to size x size, flattened, times a fixed random matrix.

    Deterministic for a given (size, feature_dim, seed) on every backend (the matrix comes from numpy). Good
    for tests and smoke runs of the FID pipeline; its distances are NOT comparable with Inception FID.
    """

    def __init__(self, feature_dim: int = 64, size: int = 16, seed: int = 0):
        self.feature_dim, self.size = feature_dim, size
        inputs = size * size * 3
        matrix = np.random.default_rng(seed).normal(size=(inputs, feature_dim)) / np.sqrt(inputs)
        self._matrix = jnp.asarray(matrix, jnp.float32)
        self._apply = jax.jit(self._features)

    def _features(self, images: jax.Array) -> jax.Array:
        small = jax.image.resize(images, (images.shape[0], self.size, self.size, 3), "bilinear")
        return small.reshape(images.shape[0], -1) @ self._matrix

    def __call__(self, images: jax.Array) -> jax.Array:
        return self._apply(jnp.asarray(images, jnp.float32))


def unit_range(images) -> np.ndarray:
    """(N, H, W, 3) frames as float32 in [0, 1]: uint8 is divided by 255, floats must already be in [0, 1]."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected RGB frames of shape (N, H, W, 3), got {images.shape}")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"expected uint8 or float frames, got {images.dtype}")
    if images.size and (images.min() < -1e-6 or images.max() > 1.0 + 1e-6):
        raise ValueError(f"float frames must be in [0, 1], got values in [{images.min()}, {images.max()}] "
                         "(divide 0..255 frames by 255, or pass them as uint8)")
    return images.astype(np.float32)


def feature_statistics(batches: Iterable, extractor: FeatureExtractor) -> FeatureStats:
    """Streams batches of frames (uint8 or [0, 1] floats, (N, H, W, 3)) through `extractor` into FeatureStats."""
    stats = FeatureStats(int(extractor.feature_dim))
    for batch in batches:
        stats.update(np.asarray(extractor(unit_range(batch))))
    return stats


def fid(stats1: FeatureStats, stats2: FeatureStats) -> float:
    """Frechet distance between two accumulated feature sets."""
    return frechet_distance(stats1.mean, stats1.cov, stats2.mean, stats2.cov)


def fid_of_frames(real_batches: Iterable, fake_batches: Iterable, extractor: FeatureExtractor) -> float:
    """FID between two streams of frame batches under one extractor (all frames of all videos, as Wav2Lip)."""
    return fid(feature_statistics(real_batches, extractor), feature_statistics(fake_batches, extractor))
