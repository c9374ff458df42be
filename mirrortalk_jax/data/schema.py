"""The record schema every dataset uses (SynthTalk today; HDTF, CREMA-D, VoxCeleb2, MEAD later).

One record is one clip. docs/data.md documents the fields; this module is their single source of truth:
`clip_features` builds the TFDS feature spec a builder writes, and `validate_record` checks a decoded record
before it reaches a pipeline, so a bad record fails with its file and clip named instead of deep in a model.
"""

from __future__ import annotations

from collections.abc import Mapping
import io
import zlib
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from mirrortalk_jax.data.motion_spec import MotionSpec

AUDIO_SAMPLE_RATE = 16000
FPS = 25.0

# Fields every record has, whatever the dataset.
REQUIRED_FIELDS = ("clip_id", "speaker", "speaker_index", "fps", "sample_rate", "audio", "motion", "metadata")
# Fields a dataset may add; a builder declares which ones it writes (the flags of `clip_features`).
OPTIONAL_FIELDS = ("landmarks_3d", "landmarks_2d", "frames", "audio_features", "style_params", "transcript",
                   "mesh_3d", "blendshapes", "identity")


class RecordError(ValueError):
    """A record that does not follow the schema. The message names the file and the clip."""


def clip_features(spec: MotionSpec, *, num_landmarks: int | None = 68, frames: bool = True,
                  audio_feature_dim: int | None = None, style_dim: int | None = None,
                  transcript: bool = True, mesh_points: int | None = None, blendshapes: int | None = None,
                  identity_dim: int | None = None) -> tfds.features.FeaturesDict:
    """The TFDS feature spec of a clip record in motion space `spec`.

    Shapes (T = frames of the clip at `fps`, N = audio samples, N == T * sample_rate / fps):
      audio (N,) float32 mono at `sample_rate` (16 kHz) in [-1, 1]; motion (T, D) float32;
      landmarks_3d (T, K, 3) / landmarks_2d (T, K, 2) float32 (2D in pixels of the stored frames);
      frames: T PNG-encoded images (TFDS' Image feature would need TensorFlow to encode, PNG bytes do not);
      audio_features (T, F) float32 frame-aligned precomputed features; style_params (S,) float32;
      mesh_3d (T, P, 3) float32 dense face mesh in pixels of the frames (P = 478 for MediaPipe's);
      blendshapes (T, B) float32; identity (I,) float32 face embedding of the clip (dlib's 128-d).
    """
    f: dict[str, Any] = {
        "clip_id": tfds.features.Text(),
        "speaker": tfds.features.Text(),
        "speaker_index": tfds.features.Scalar(dtype=np.int32),
        "fps": tfds.features.Scalar(dtype=np.float32),
        "sample_rate": tfds.features.Scalar(dtype=np.int32),
        "audio": tfds.features.Tensor(shape=(None,), dtype=np.float32),
        "motion": tfds.features.Tensor(shape=(None, spec.dim), dtype=np.float32),
        "metadata": tfds.features.Text(),  # JSON: dataset-specific facts (phoneme timings, source file, ...)
    }
    if transcript:
        f["transcript"] = tfds.features.Text()
    if num_landmarks:
        f["landmarks_3d"] = tfds.features.Tensor(shape=(None, num_landmarks, 3), dtype=np.float32)
        f["landmarks_2d"] = tfds.features.Tensor(shape=(None, num_landmarks, 2), dtype=np.float32)
    if frames:
        f["frames"] = tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_))
    if audio_feature_dim:
        f["audio_features"] = tfds.features.Tensor(shape=(None, audio_feature_dim), dtype=np.float32)
    if style_dim:
        f["style_params"] = tfds.features.Tensor(shape=(style_dim,), dtype=np.float32)
    if mesh_points:
        f["mesh_3d"] = tfds.features.Tensor(shape=(None, mesh_points, 3), dtype=np.float32)
    if blendshapes:
        f["blendshapes"] = tfds.features.Tensor(shape=(None, blendshapes), dtype=np.float32)
    if identity_dim:
        f["identity"] = tfds.features.Tensor(shape=(identity_dim,), dtype=np.float32)
    return tfds.features.FeaturesDict(f)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def validate_record(record: Mapping[str, Any], spec: MotionSpec, where: str) -> None:
    """Checks a decoded record against the schema; raises RecordError naming `where` and the clip.

    Args:
      record: a decoded record (numpy leaves).
      spec: the dataset's motion space.
      where: a human-readable location, e.g. "<shard file> record 12".
    """
    clip = _text(record.get("clip_id", "?"))
    def fail(msg):
        raise RecordError(f"{where} (clip {clip!r}): {msg}")

    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        fail(f"missing fields {missing}; every record needs {list(REQUIRED_FIELDS)}")
    motion = np.asarray(record["motion"])
    if motion.ndim != 2 or motion.shape[1] != spec.dim:
        fail(f"motion has shape {motion.shape}, expected (T, {spec.dim}) for motion space {spec.name!r}")
    num_frames = motion.shape[0]
    if num_frames == 0:
        fail("motion has no frames")
    audio = np.asarray(record["audio"])
    if audio.ndim != 1:
        fail(f"audio has shape {audio.shape}, expected mono (N,)")
    sr, fps = int(record["sample_rate"]), float(record["fps"])
    if sr <= 0 or fps <= 0:
        fail(f"sample_rate={sr} and fps={fps} must be positive")
    expected = num_frames * sr / fps
    # Real clips rarely end on a frame boundary: allow one frame of slack either way.
    if abs(len(audio) - expected) > sr / fps:
        fail(f"audio/motion length mismatch: {len(audio)} samples ({len(audio) / sr:.3f} s) vs {num_frames} "
             f"frames ({num_frames / fps:.3f} s at {fps} fps); expected {expected:.0f} +- {sr / fps:.0f} samples")
    for key in ("motion", "audio", "landmarks_3d", "landmarks_2d", "audio_features", "style_params", "mesh_3d",
                "blendshapes", "identity"):
        if key in record and not np.all(np.isfinite(np.asarray(record[key]))):
            fail(f"{key} contains NaN or Inf")
    for key, width in (("landmarks_3d", 3), ("landmarks_2d", 2), ("audio_features", None), ("mesh_3d", 3),
                       ("blendshapes", None)):
        if key in record:
            value = np.asarray(record[key])
            if value.shape[0] != num_frames or (width and value.shape[-1] != width):
                fail(f"{key} has shape {value.shape}, expected {num_frames} frames"
                     + (f" with last dimension {width}" if width else ""))
    if "frames" in record and len(record["frames"]) != num_frames:
        fail(f"has {len(record['frames'])} frames, expected {num_frames} (one per motion frame)")


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes, the stored form of a frame."""
    buf = io.BytesIO()
    # Fast settings: level 1 with run-length matching is ~8% smaller and no slower than plain level 1 on faces.
    Image.fromarray(image).save(buf, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return buf.getvalue()


def decode_frames(encoded) -> np.ndarray:
    """A record's PNG-encoded frames -> (T, H, W, 3) uint8."""
    return np.stack([np.asarray(Image.open(io.BytesIO(bytes(b))).convert("RGB")) for b in encoded])
