"""Grain input pipeline: clip records -> fixed-length training windows -> per-process batches -> global arrays.

    source -> shuffle(seed) -> repeat -> random window + style reference -> [process_index::process_count]
           -> to_iter_dataset -> batch(per-process batch) -> (optional) multiprocess prefetch

Every process builds the same global stream (same shuffle, same random windows: the window of element k
depends only on k and the seed) and takes its own stride of it. So the process shards are disjoint, together
they are exactly the single-process stream, and the global batch j holds the same windows whatever the number
of processes. The iterator's state (`get_state`/`set_state`, or Orbax through `grain.checkpoint`) resumes the
stream exactly.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mirrortalk_jax.data import audio_features, schema
from mirrortalk_jax.data.sources import ClipSource

AUDIO_FEATURE_KINDS = ("log_mel", "mfcc", "precomputed", "none")
FRAME_KINDS = ("none", "window", "centre")


@dataclasses.dataclass(frozen=True)
class WindowConfig:
    """What one training example holds. Shapes use L = window_frames, R = reference_frames.

    Attributes:
      window_frames: L, motion frames per training window (clips shorter than L are padded and masked).
      reference_frames: R, maximum length of the style reference clip (padded + masked when shorter).
      audio_feature: per-frame audio features: "log_mel" / "mfcc" (computed here, see audio_features),
        "precomputed" (the record's `audio_features`), or "none".
      waveform: also emit the raw audio of the window, (L * sample_rate / fps,) samples.
      landmarks: also emit the window's 2D landmarks (L, K, 2).
      frames: decoded frames (uint8 RGB) for renderers: "window" emits `frames` (L, H, W, 3), "centre" only
        the window's centre frame, `frames` (1, H, W, 3) (renderers driven by a motion window around the frame
        they draw, as PIRenderer), "none" no frames.
      source_frame: also emit `source_frame` (H, W, 3) uint8 and its motion `source_motion` (D,), from a frame
        drawn uniformly from the whole clip: the portrait of self-reenactment training (same clip, other time).
      reference_landmarks: also emit `reference_landmarks` (K, 3), the 3D landmarks of the first frame of the
        style reference's clip (another utterance of the speaker): an identity input taken from another clip,
        for models trained cross-identity (the DreamTalk style predictor).
    """

    window_frames: int = 32
    reference_frames: int = 64
    audio_feature: str = "log_mel"
    waveform: bool = False
    landmarks: bool = False
    frames: str = "none"
    source_frame: bool = False
    reference_landmarks: bool = False

    def __post_init__(self):
        if self.audio_feature not in AUDIO_FEATURE_KINDS:
            raise ValueError(f"audio_feature must be one of {AUDIO_FEATURE_KINDS}, got {self.audio_feature!r}")
        if self.frames not in FRAME_KINDS:
            raise ValueError(f"frames must be one of {FRAME_KINDS}, got {self.frames!r}")
        if self.window_frames <= 0 or self.reference_frames <= 0:
            raise ValueError(f"window_frames and reference_frames must be positive: {self}")

    @classmethod
    def from_config(cls, data_config) -> WindowConfig:
        """The training windows an experiment config's `data` section asks for."""
        return cls(window_frames=data_config.window_frames, reference_frames=data_config.reference_frames,
                   audio_feature=data_config.audio_feature, frames=str(data_config.get("frames", "none")),
                   source_frame=bool(data_config.get("source_frame", False)),
                   reference_landmarks=bool(data_config.get("reference_landmarks", False)))


def _crop(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """x[start:start+length] zero-padded at the end to `length` along axis 0."""
    out = x[start:start + length]
    if out.shape[0] < length:
        out = np.concatenate([out, np.zeros((length - out.shape[0],) + out.shape[1:], out.dtype)])
    return out


def _per_frame_audio(record: dict, kind: str, num_frames: int) -> np.ndarray:
    if kind == "precomputed":
        if "audio_features" not in record:
            raise schema.RecordError(f"clip {record['clip_id']!r} has no precomputed audio_features; "
                                     "use audio_feature='log_mel' or build the dataset with features")
        return record["audio_features"]
    return audio_features.audio_frame_features(record["audio"], num_frames, kind=kind, fps=float(record["fps"]))


class WindowSampler(grain.transforms.RandomMap):
    """Cuts a random window from a clip and adds a style reference from another clip of the same speaker."""

    def __init__(self, source: ClipSource, cfg: WindowConfig):
        self.source = source
        self.cfg = cfg
        by_speaker: dict[int, list[int]] = defaultdict(list)
        for i, entry in enumerate(source.clip_index()):
            if entry["speaker_index"] >= 0:
                by_speaker[entry["speaker_index"]].append(i)
        self.by_speaker = dict(by_speaker)

    def _reference(self, record: dict, index: int | None,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
        """A style reference clip: another utterance of the speaker when there is one. (R, D), (R,) bool, and
        the record it was cut from."""
        candidates = [i for i in self.by_speaker.get(int(record["speaker_index"]), []) if i != index]
        ref = None
        while candidates and ref is None:
            pick = candidates.pop(int(rng.integers(len(candidates))))
            ref = self.source[pick]  # None if it is a bad record in skip mode: try another one
        ref = ref if ref is not None else record
        motion = ref["motion"]
        r = self.cfg.reference_frames
        start = int(rng.integers(max(motion.shape[0] - r, 0) + 1))
        mask = _crop(np.ones(motion.shape[0], bool), start, r)
        return _crop(motion, start, r), mask, ref

    def random_map(self, element: tuple[int, dict | None], rng: np.random.Generator) -> dict[str, Any] | None:
        index, record = element
        if record is None:
            return None
        cfg, length = self.cfg, self.cfg.window_frames
        motion = record["motion"]
        num_frames = motion.shape[0]
        start = int(rng.integers(max(num_frames - length, 0) + 1))
        out = {
            "motion": _crop(motion, start, length),
            "motion_mask": _crop(np.ones(num_frames, bool), start, length),
            "speaker_index": np.int32(record["speaker_index"]),
            "clip_index": np.int32(index),
            "start_frame": np.int32(start),
        }
        out["reference_motion"], out["reference_mask"], ref = self._reference(record, index, rng)
        if cfg.reference_landmarks:
            if "landmarks_3d" not in ref:
                raise schema.RecordError(f"clip {ref['clip_id']!r} has no landmarks_3d for reference_landmarks")
            out["reference_landmarks"] = np.asarray(ref["landmarks_3d"][0], np.float32)
        if cfg.audio_feature != "none":
            out["audio_features"] = _crop(_per_frame_audio(record, cfg.audio_feature, num_frames).astype(np.float32),
                                          start, length)
        if cfg.waveform:
            spf = int(round(float(record["sample_rate"]) / float(record["fps"])))
            out["waveform"] = _crop(record["audio"], start * spf, length * spf)
        if cfg.landmarks:
            out["landmarks_2d"] = _crop(record["landmarks_2d"], start, length)
        if cfg.frames != "none" or cfg.source_frame:
            if "frames" not in record:
                raise schema.RecordError(f"clip {record['clip_id']!r} has no frames; renderers need a dataset "
                                         "with frames (SynthTalk with_frames, or `mirrortalk data prepare`)")
        if cfg.frames == "window":
            out["frames"] = _crop(schema.decode_frames(record["frames"][start:start + length]), 0, length)
        elif cfg.frames == "centre":
            centre = min(start + length // 2, num_frames - 1)  # a short clip's last frame stands in
            out["frames"] = schema.decode_frames(record["frames"][centre:centre + 1])
        if "style_params" in record:
            out["style_params"] = record["style_params"]
        if cfg.source_frame:  # drawn last, so the draws above are the same with or without it
            index = int(rng.integers(num_frames))
            out["source_frame"] = schema.decode_frames(record["frames"][index:index + 1])[0]
            out["source_motion"] = np.asarray(motion[index], np.float32)
        return out


def _with_index(index: int, record: dict | None) -> tuple[int, dict | None]:
    return index, record


def training_dataset(source: ClipSource, cfg: WindowConfig, *, batch_size: int, seed: int,
                     process_index: int | None = None, process_count: int | None = None,
                     num_epochs: int | None = None, worker_count: int = 0) -> grain.IterDataset:
    """The training stream of this process: batches of `batch_size // process_count` windows.

    Args:
      source: the split to read.
      cfg: window contents.
      batch_size: the *global* batch size; it must divide by the number of processes.
      seed: shuffle and window seed, identical on every process.
      process_index, process_count: this process's shard (default: from jax).
      num_epochs: None repeats forever.
      worker_count: Grain worker processes for decoding (0: decode in this process).
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if batch_size % process_count:
        raise ValueError(f"global batch_size={batch_size} does not divide by {process_count} processes")
    if len(source) < process_count:
        raise ValueError(f"{source} has fewer records than the {process_count} processes reading it")
    ds = grain.MapDataset.source(source).map_with_index(_with_index)
    ds = ds.shuffle(seed=seed).repeat(num_epochs)
    ds = ds.random_map(WindowSampler(source, cfg), seed=seed + 1)
    ds = ds[process_index::process_count]
    ds = ds.filter(lambda x: x is not None)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
    it = it.batch(batch_size // process_count, drop_remainder=True)
    if worker_count > 0:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return it


def batch_sharding(mesh: Mesh, batch_axes: tuple[str, ...] = ("data", "fsdp")) -> NamedSharding:
    """Sharding of a global batch: leading (batch) axis split over `batch_axes`, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(tuple(a for a in batch_axes if a in mesh.axis_names)))


def to_global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh,
                    batch_axes: tuple[str, ...] = ("data", "fsdp")) -> dict[str, jax.Array]:
    """Assembles each process's batch into global jax.Arrays sharded along the batch axis of `mesh`."""
    sharding = batch_sharding(mesh, batch_axes)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
