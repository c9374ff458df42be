"""StyleSim and style retrieval: does generated motion carry the style of its reference clip?

No public code defines MirrorTalk's StyleSim; we use the working definition of the research notes:

* **StyleSim** = cosine similarity between the style embedding of a generated sequence and that of the
  reference clip it was asked to imitate, averaged over the evaluated sequences. 1 = same direction.
* **Style retrieval accuracy** (top-1): for every generated sequence, the nearest embedding (by cosine) in a
  gallery of reference embeddings of all evaluated speakers; correct when that reference belongs to the same
  speaker. Chance level is about 1 / (number of speakers). References cut from the query's own clip should
  be excluded (`exclude`): they would be found through shared content, not style.

The embeddings come from a FROZEN style encoder of an independently trained run (e.g. mirrortalk_jax/configs/style_encoder.py
with another seed), never from the generator's own SDSE: a generator conditioned on an SDSE code could score
well under that same SDSE without reproducing the style (self-grading). `StyleEvaluator.from_run` refuses the
generator's own style-encoder run when given the generator's config.

Embedding a sequence (`embed_motion`): the encoder was trained on clips of at most `max_frames` frames, so a
sequence is cut into windows of `window` frames (default: the run's `data.reference_frames`, capped at the
encoder's `max_frames`). Only valid (mask True) frames are kept; n valid frames give ceil(n / window) windows,
evenly spaced from the first to the last full window (they overlap a little rather than leave a short tail);
a sequence shorter than a window is one masked window. The sequence embedding is the mean of the windows'
L2-normalised style codes. A reference clip no longer than a window is therefore just its normalised code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

_EPS = 1e-12


# ----- Metrics on embeddings -----


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.sum(np.square(x), axis=-1, keepdims=True) + _EPS)


def _embeddings(x, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected embeddings of shape (N, S) with N >= 1, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: embeddings contain NaN or inf")
    return x


def cosine_similarity(a, b) -> np.ndarray:
    """Row-wise cosine similarity of (N, S) and (N, S) embeddings -> (N,) in [-1, 1] (0 for a zero vector)."""
    a, b = _embeddings(a, "a"), _embeddings(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"expected two (N, S) arrays of the same shape, got {a.shape} and {b.shape}")
    return np.sum(_normalize(a) * _normalize(b), axis=-1)


def style_similarity(generated, reference) -> float:
    """StyleSim: mean cosine similarity between generated[i] and reference[i] style embeddings, (N, S) each."""
    return float(cosine_similarity(generated, reference).mean())


def retrieval_predictions(queries, gallery, gallery_labels, exclude=None) -> np.ndarray:
    """Label of the gallery embedding nearest (highest cosine) to each query: (Q, S), (G, S), (G,) -> (Q,).

    exclude: optional (Q, G) bool, True where gallery entry g may not answer query q (e.g. a reference cut
    from the query's own clip, which would be found through shared content rather than style). Ties go to the
    first gallery entry.
    """
    q, g = _embeddings(queries, "queries"), _embeddings(gallery, "gallery")
    labels = np.asarray(gallery_labels)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"queries and gallery must have the same embedding size, got {q.shape} and {g.shape}")
    if labels.shape != (g.shape[0],):
        raise ValueError(f"gallery_labels must have shape ({g.shape[0]},), got {labels.shape}")
    sims = _normalize(q) @ _normalize(g).T
    if exclude is not None:
        exclude = np.asarray(exclude, bool)
        if exclude.shape != sims.shape:
            raise ValueError(f"exclude must have shape (Q, G) = {sims.shape}, got {exclude.shape}")
        if exclude.all(axis=1).any():
            raise ValueError("exclude leaves some query without any gallery entry")
        sims = np.where(exclude, -np.inf, sims)
    return labels[np.argmax(sims, axis=1)]


def retrieval_accuracy(queries, query_labels, gallery, gallery_labels, exclude=None) -> float:
    """Top-1 style retrieval accuracy: the share of queries whose nearest gallery embedding (cosine) has the
    query's label (speaker). queries (Q, S), query_labels (Q,), gallery (G, S), gallery_labels (G,);
    exclude (Q, G) bool as in `retrieval_predictions`."""
    query_labels = np.asarray(query_labels)
    predicted = retrieval_predictions(queries, gallery, gallery_labels, exclude)
    if query_labels.shape != predicted.shape:
        raise ValueError(f"query_labels must have shape {predicted.shape}, got {query_labels.shape}")
    return float(np.mean(predicted == query_labels))


# ----- Embedding motion with a frozen style encoder -----


@nnx.jit
def _encode(encoder: nnx.Module, motion: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    return encoder(motion, mask)


def _style_encoder(model: Any) -> nnx.Module:
    """The StyleEncoder of a StyleEncoderModel (`.encoder`), or the StyleEncoder itself."""
    encoder = getattr(model, "encoder", model)
    if not hasattr(encoder, "max_frames") or not callable(encoder):
        raise TypeError(f"{type(model).__name__} is not a style encoder: expected a StyleEncoderModel (with "
                        "`.encoder`) or a StyleEncoder")
    return encoder


def _windows(n: int, window: int) -> list[tuple[int, int]]:
    """(start, length) windows covering n valid frames (see the module docstring)."""
    if n <= window:
        return [(0, n)]
    k = -(-n // window)
    return [(int(s), window) for s in np.round(np.linspace(0, n - window, k)).astype(int)]


def embed_motion(model: Any, motion, mask=None, *, window: int | None = None, batch_size: int = 32) -> np.ndarray:
    """Style embeddings of (B, T, D) motion sequences through a frozen style encoder -> (B, S) float64.

    Args:
      model: a StyleEncoderModel (its `.encoder` is used) or a StyleEncoder.
      motion: (B, T, D) motion in the encoder's motion space (or a list of (T_i, D) arrays).
      mask: (B, T) bool, True on valid frames (None: all valid; ignored for a list).
      window: frames per encoder call (default and maximum: the encoder's max_frames).
      batch_size: windows per encoder call (fixed, so the encoder compiles once).
    Returns:
      the mean of the windows' L2-normalised codes per sequence (its norm is <= 1; compare with cosine).
    """
    encoder = _style_encoder(model)
    window = int(window or encoder.max_frames)
    if not 1 <= window <= encoder.max_frames:
        raise ValueError(f"window must be in [1, max_frames={encoder.max_frames}], got {window}")
    if isinstance(motion, (list, tuple)):
        seqs = [np.asarray(m, np.float32) for m in motion]
    else:
        motion = np.asarray(motion, np.float32)
        if motion.ndim != 3:
            raise ValueError(f"motion must be (B, T, D), got {motion.shape}")
        mask = np.ones(motion.shape[:2], bool) if mask is None else np.asarray(mask, bool)
        if mask.shape != motion.shape[:2]:
            raise ValueError(f"mask must be (B, T) = {motion.shape[:2]}, got {mask.shape}")
        seqs = [m[k] for m, k in zip(motion, mask)]
    if not seqs:
        raise ValueError("no sequences to embed")
    dim = seqs[0].shape[-1] if seqs[0].ndim == 2 else None
    win_motion, win_mask, owner = [], [], []
    for i, seq in enumerate(seqs):
        if seq.ndim != 2 or seq.shape[-1] != dim:
            raise ValueError(f"sequence {i}: expected (T, {dim}) motion, got {seq.shape}")
        if seq.shape[0] == 0:
            raise ValueError(f"sequence {i} has no valid frame")
        if not np.all(np.isfinite(seq)):
            raise ValueError(f"sequence {i} contains NaN or inf")
        for start, length in _windows(seq.shape[0], window):
            w = np.zeros((window, dim), np.float32)
            w[:length] = seq[start:start + length]
            win_motion.append(w)
            win_mask.append(np.arange(window) < length)
            owner.append(i)
    win_motion, win_mask, owner = np.stack(win_motion), np.stack(win_mask), np.asarray(owner)
    codes = []
    for lo in range(0, len(owner), batch_size):
        m, k = win_motion[lo:lo + batch_size], win_mask[lo:lo + batch_size]
        pad = batch_size - len(m)
        if pad:  # fill the last call with copies of its first window (outputs dropped): one compiled shape
            m = np.concatenate([m, np.repeat(m[:1], pad, 0)])
            k = np.concatenate([k, np.repeat(k[:1], pad, 0)])
        codes.append(np.asarray(_encode(encoder, jnp.asarray(m), jnp.asarray(k)), np.float64)[:batch_size - pad])
    codes = _normalize(np.concatenate(codes))
    out = np.zeros((len(seqs), codes.shape[-1]))
    np.add.at(out, owner, codes)
    return out / np.bincount(owner, minlength=len(seqs))[:, None]


class StyleEvaluator:
    """A frozen, independently trained style encoder used as the StyleSim judge.

    Attributes:
      model: the StyleEncoderModel (only `.encoder` is used).
      window: frames per encoder call (see `embed_motion`).
      run_dir: the run it was loaded from (None when built from a model).
    """

    def __init__(self, model: Any, window: int | None = None, run_dir: str | os.PathLike | None = None):
        self.model = model
        self.encoder = _style_encoder(model)
        self.window = int(min(window or self.encoder.max_frames, self.encoder.max_frames))
        self.run_dir = None if run_dir is None else Path(run_dir)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, *, generator_config=None,
                 window: int | None = None) -> StyleEvaluator:
        """Loads a mirrortalk_jax/configs/style_encoder.py run as the judge.

        Args:
          run_dir: the evaluation encoder's workdir (trained independently of the generator under test).
          generator_config: the config of the generator under test (e.g. `load_model(run).config`); when its
            `model.style_encoder_workdir` is `run_dir`, raises ValueError: the generator's own SDSE must not
            grade it. (A generator with a jointly trained SDSE has none; any separate run is independent.)
          window: frames per encoder call; default the run's `data.reference_frames` (capped at max_frames).
        """
        from mirrortalk_jax.runs import loader

        run_dir = Path(run_dir).expanduser()
        if generator_config is not None:
            own = generator_config.model.get("style_encoder_workdir", "") or ""
            if own and Path(own).expanduser().resolve() == run_dir.resolve():
                raise ValueError(f"{run_dir} is the generator's own style encoder (model.style_encoder_workdir): "
                                 "StyleSim needs an independently trained encoder, e.g. mirrortalk_jax/configs/style_encoder.py "
                                 "with another --config.train.seed in its own workdir")
        run = loader.load_model(run_dir)
        if run.config.model.name != "style_encoder":
            raise ValueError(f"run {run_dir} trained a {run.config.model.name!r} model, not a style_encoder")
        if window is None:
            window = int(run.config.data.get("reference_frames", 0)) or None
        return cls(run.model, window=window, run_dir=run_dir)

    def embed(self, motion, mask=None) -> np.ndarray:
        """(B, T, D) motion (+ (B, T) mask), or a list of (T_i, D) arrays -> (B, S) embeddings."""
        return embed_motion(self.model, motion, mask, window=self.window)
