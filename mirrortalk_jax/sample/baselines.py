"""The non-learned baselines of the results table as motion generators (sample/generators.py): they read the
training split, ignore the style reference and the sampling settings.

    mean = baselines.MeanMotion.fit(dataset_dir)                        # every frame: the training mean
    nn = baselines.NearestNeighbour.fit(dataset_dir, "log_mel")         # the closest training audio's motion
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from mirrortalk_jax.data.audio_features import audio_frame_features
from mirrortalk_jax.data.sources import ClipSource
from mirrortalk_jax.sample.generators import MotionGenerator, Reference


def _train_records(dataset_dir, train_split: str):
    source = ClipSource(dataset_dir, train_split)
    return source, [source[i] for i in range(len(source))]


class MeanMotion(MotionGenerator):
    """Every frame = the training split's per-channel mean motion."""

    name = "mean_motion"

    def __init__(self, mean: np.ndarray, spec=None):
        super().__init__(spec, "", 0, 0)
        self.mean = np.asarray(mean, np.float32)

    @classmethod
    def fit(cls, dataset_dir: str | os.PathLike, train_split: str = "train") -> MeanMotion:
        source, records = _train_records(dataset_dir, train_split)
        return cls(np.concatenate([r["motion"] for r in records]).mean(0), source.spec)

    def generate(self, audio, reference: Reference, rng, *, frame_mask=None, **sampling) -> np.ndarray:
        return np.broadcast_to(self.mean, (*np.shape(audio)[:2], self.mean.shape[0])).copy()


def _context(features: np.ndarray, radius: int) -> np.ndarray:
    """(T, F) -> (T, (2r+1) F): each frame with its neighbours (edges repeated)."""
    padded = np.pad(features, ((radius, radius), (0, 0)), mode="edge")
    return np.concatenate([padded[i:i + len(features)] for i in range(2 * radius + 1)], axis=1)


class NearestNeighbour(MotionGenerator):
    """Each frame takes the motion of the training frame whose audio context (+-radius frames) is closest.

    Features are the per-frame mean over the sub-frames of the audio features (`bands` wide), standardised
    with the training statistics; a non-learned baseline for what audio alone predicts.
    """

    name = "nearest_neighbour"

    def __init__(self, bank: np.ndarray, motions: np.ndarray, audio_feature: str, radius: int, bands: int,
                 spec=None):
        super().__init__(spec, audio_feature, 0, 0)
        self.radius, self.bands = radius, bands
        self.motions = motions
        self.mean, self.std = bank.mean(0), bank.std(0) + 1e-6
        bank = jnp.asarray((bank - self.mean) / self.std)
        bank_sq = jnp.sum(bank * bank, axis=1)
        self._nearest = jax.jit(lambda queries: jnp.argmin(bank_sq[None] - 2.0 * queries @ bank.T, axis=1))

    @classmethod
    def fit(cls, dataset_dir: str | os.PathLike, audio_feature: str, train_split: str = "train", radius: int = 2,
            bands: int = 80) -> NearestNeighbour:
        source, records = _train_records(dataset_dir, train_split)
        bank = np.concatenate([
            _context(audio_frame_features(r["audio"], len(r["motion"]), kind=audio_feature, fps=float(r["fps"]))
                     .reshape(len(r["motion"]), -1, bands).mean(1), radius) for r in records]).astype(np.float32)
        motions = np.concatenate([r["motion"] for r in records]).astype(np.float32)
        return cls(bank, motions, audio_feature, radius, bands, source.spec)

    def generate(self, audio, reference: Reference, rng, *, frame_mask=None, **sampling) -> np.ndarray:
        audio = np.asarray(audio, np.float32)
        out = []
        for clip in audio:
            query = _context(clip.reshape(len(clip), -1, self.bands).mean(1), self.radius)
            out.append(self.motions[np.asarray(self._nearest(jnp.asarray((query - self.mean) / self.std)))])
        return np.stack(out)
