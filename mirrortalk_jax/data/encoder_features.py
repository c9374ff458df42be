"""Speech-encoder features (HuBERT / wav2vec 2.0) for audio of any length, aligned to 25 fps video frames.

Long audio is cut into overlapping windows of fixed shape, so device memory does not grow with the audio and
nothing recompiles per length:

    output frames   |---- core c ----|                      each window yields `chunk_frames` core frames and
    window          |ctx|---- core c ----|ctx|              sees `context_frames` more on each side (shifted
                                                             inwards at the ends, never padded with silence)

* The conv feature encoder is exact under this cutting: output frame j depends only on samples
  [j * hop, j * hop + receptive_field) (320 and 400 for the released models), and each window gets exactly the
  samples its frames need.
* The transformer attends globally, so a core frame differs from one-shot processing only through the
  attention to frames beyond its context; clips that fit in one window (window_frames = chunk + 2 * context
  frames, 24 s by default) are processed exactly as one-shot, padded to a bucket size and masked as HF masks
  padding. Longer audio approaches one-shot as context_frames grows (measured in benchmarks/audio_features.py).
* The waveform is normalised over the whole utterance first (zero mean, unit variance, as HF's feature
  extractor), and for the group-norm conv encoder (base models) the per-channel statistics of the first conv
  are accumulated over the whole utterance in a first pass, so chunks see the one-shot statistics too.

Windows of many clips are packed into batches of `batch_size`; window lengths come from a few buckets
(window_frames / 2**i), so short clips do not pay for a long window and at most `buckets` shapes compile.

The encoder is passed in (this module never imports a model): any object with `hidden_state(x, layer, mask,
group_norm_stats=)`, `first_conv_moments(x, valid)`, `num_frames(n)`, `receptive_field`, `hop`,
`first_conv_geometry`, `first_conv_channels`, `group_norm` and `hidden_size` (models.audio_encoders.wav2vec2.SpeechEncoder).

Layouts the talking-head models read (50 Hz rows h[0..N50), N50 = num_frames(samples)):
  `per_video_frame`   (T, 2 * H): video frame t = rows 2t and 2t+1 concatenated (a record's `audio_features`);
                      reshape to (2T, H) for MimicTalk's 50 Hz input (its motion has T = N50 // 2 frames).
  `dreamtalk_windows` (T, 11, H): frame i = rows 2i-5 .. 2i+5, zero rows outside [0, N50) (DreamTalk's
                      get_wav2vec_audio_window).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirrortalk_jax.data import audio_features
from mirrortalk_jax.data.windows import centred_windows

FEATURE_RATE = 50.0  # Hz: stride 320 at 16 kHz
SAMPLE_RATE = 16000
DREAMTALK_RADIUS = 5  # rows each side of a frame's centre row: 11-row windows


@dataclasses.dataclass(frozen=True)
class ChunkConfig:
    """How audio is cut. chunk_frames / context_frames are 50 Hz output frames (1000 = 20 s)."""

    chunk_frames: int = 1000
    context_frames: int = 100
    batch_size: int = 4
    buckets: int = 4

    def __post_init__(self):
        if self.chunk_frames < 1 or self.context_frames < 0 or self.batch_size < 1 or self.buckets < 1:
            raise ValueError(f"ChunkConfig needs chunk_frames >= 1, context_frames >= 0, batch_size >= 1 and "
                             f"buckets >= 1, got {self}")

    @property
    def window_frames(self) -> int:
        return self.chunk_frames + 2 * self.context_frames

    def bucket_sizes(self) -> tuple[int, ...]:
        sizes = {max(1, self.window_frames >> i) for i in range(self.buckets)}
        return tuple(sorted(sizes))


def normalize(audio: np.ndarray) -> np.ndarray:
    """HF Wav2Vec2FeatureExtractor's do_normalize: (x - mean) / sqrt(var + 1e-7) over the utterance. (N,) -> (N,)."""
    x = np.asarray(audio, np.float64)
    return ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Job:
    clip: int
    start: int  # first output frame of the window
    frames: int  # valid frames in the window (<= bucket)
    bucket: int
    core: tuple[int, int]  # output frames this window fills


def _plan(num_frames: int, clip: int, chunk: ChunkConfig) -> list[_Job]:
    window = chunk.window_frames
    if num_frames <= window:
        bucket = next(b for b in chunk.bucket_sizes() if b >= num_frames)
        return [_Job(clip, 0, num_frames, bucket, (0, num_frames))]
    jobs = []
    for core_start in range(0, num_frames, chunk.chunk_frames):
        core_end = min(core_start + chunk.chunk_frames, num_frames)
        start = min(max(core_start - chunk.context_frames, 0), num_frames - window)
        jobs.append(_Job(clip, start, window, window, (core_start, core_end)))
    return jobs


def _slice_padded(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """x[start:start + length] with zeros beyond the end."""
    out = np.zeros(length, np.float32)
    piece = x[start:start + length]
    out[:len(piece)] = piece
    return out


# Module-level jits keyed by the model's structure (graphdef) and layer: every extractor of the same architecture
# shares the compiled window shapes.
@functools.partial(jax.jit, static_argnums=(0, 1))
def _hidden(graphdef, layer: int, state, x: jax.Array, mask: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    return model.hidden_state(x, layer, mask, group_norm_stats=(mean, var) if model.group_norm else None)


@functools.partial(jax.jit, static_argnums=0)
def _moments(graphdef, state, x: jax.Array, valid: jax.Array):
    return nnx.merge(graphdef, state).first_conv_moments(x, valid)


def compiled_window_shapes() -> int:
    """Window shapes compiled so far in this process (all extractors): bounded by the buckets, not the lengths."""
    return _hidden._cache_size()


class EncoderFeatures:
    """Hidden states of one layer of a speech encoder, for any number of clips of any length.

        extractor = EncoderFeatures(model, layer=-1)
        h = extractor(audio)                     # (N50, H) float32 at 50 Hz
        hs = extractor.many([a1, a2, a3])        # windows of all clips share batches
    """

    def __init__(self, model: nnx.Module, layer: int = -1, chunk: ChunkConfig = ChunkConfig()):
        self.model, self.layer, self.chunk = model, layer, chunk
        self._graphdef, state = nnx.split(model)
        # A committed copy of the weights: jitted calls elsewhere that rewrite the model's variables (nnx.jit) do not
        # change what this extractor passes, so its compiled window shapes stay valid.
        self._state = jax.device_put(state, jax.devices()[0])

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        return self.many([audio])[0]

    def many(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        """[(N_i,) float 16 kHz mono] -> [(num_frames(N_i), H) float32]."""
        model, chunk = self.model, self.chunk
        clips = [normalize(audio_features.validate_audio(np.asarray(a, np.float32), f"audio[{i}]"))
                 for i, a in enumerate(audios)]
        frames = [model.num_frames(len(x)) for x in clips]
        for i, n in enumerate(frames):
            if n < 1:
                raise ValueError(f"audio[{i}] has {len(clips[i])} samples; the encoder needs at least "
                                 f"{model.receptive_field} ({model.receptive_field / SAMPLE_RATE * 1000:.0f} ms)")
        stats = [self._group_stats(x) for x in clips] if model.group_norm else None
        outputs = [np.zeros((n, model.hidden_size), np.float32) for n in frames]
        jobs = [job for i, n in enumerate(frames) for job in _plan(n, i, chunk)]
        for bucket in sorted({j.bucket for j in jobs}):
            todo = [j for j in jobs if j.bucket == bucket]
            for k in range(0, len(todo), chunk.batch_size):
                self._run(todo[k:k + chunk.batch_size], bucket, clips, stats, outputs)
        return outputs

    def _run(self, jobs: list[_Job], bucket: int, clips, stats, outputs) -> None:
        model, size = self.model, self.chunk.batch_size
        samples = (bucket - 1) * model.hop + model.receptive_field
        x = np.zeros((size, samples), np.float32)
        mask = np.zeros((size, bucket), bool)
        mean = np.zeros((size, model.first_conv_channels), np.float32)
        var = np.ones((size, model.first_conv_channels), np.float32)
        for row, job in enumerate(jobs):
            x[row] = _slice_padded(clips[job.clip], job.start * model.hop, samples)
            mask[row, :job.frames] = True
            if stats is not None:
                mean[row], var[row] = stats[job.clip]
        out = np.asarray(_hidden(self._graphdef, self.layer, self._state, x, mask, mean, var))
        for row, job in enumerate(jobs):
            a, b = job.core
            outputs[job.clip][a:b] = out[row, a - job.start:b - job.start]

    def _group_stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and (population) variance per channel of the first conv over the whole clip, in fixed-shape
        segments combined with Chan et al.'s pairwise update (float64 on the host)."""
        kernel, stride = self.model.first_conv_geometry
        total = (len(x) - kernel) // stride + 1
        seg = self.chunk.window_frames * self.model.hop // stride  # first-conv frames per segment
        samples = (seg - 1) * stride + kernel
        size = self.chunk.batch_size
        count, mean, m2 = 0.0, 0.0, 0.0
        starts = list(range(0, total, seg))
        for k in range(0, len(starts), size):
            batch = starts[k:k + size]
            xs = np.zeros((size, samples), np.float32)
            valid = np.zeros((size, seg), bool)
            for row, s in enumerate(batch):
                xs[row] = _slice_padded(x, s * stride, samples)
                valid[row, :min(seg, total - s)] = True
            n_b, mean_b, m2_b = (np.asarray(v, np.float64) for v in _moments(self._graphdef, self._state, xs, valid))
            for row in range(len(batch)):
                n = count + n_b[row]
                delta = mean_b[row] - mean
                mean = mean + delta * n_b[row] / n
                m2 = m2 + m2_b[row] + np.square(delta) * count * n_b[row] / n
                count = n
        return mean.astype(np.float32), (m2 / count).astype(np.float32)


def one_shot(model: nnx.Module, audio: np.ndarray, layer: int = -1) -> np.ndarray:
    """The reference: the whole clip in one forward pass, as HF runs it. (N,) -> (num_frames(N), H)."""
    x = jnp.asarray(normalize(np.asarray(audio, np.float32)))[None]
    return np.asarray(_one_shot(model, x, layer))[0]


@functools.partial(nnx.jit, static_argnums=2)
def _one_shot(model, x, layer):
    return model.hidden_state(x, layer)


def per_video_frame(h50: np.ndarray, num_frames: int, *, max_pad: int | None = 2) -> np.ndarray:
    """50 Hz rows -> (T, 2 * H): video frame t (interval [t/25, (t+1)/25)) gets rows 2t and 2t+1, whose
    receptive-field centres (20 ms * j + 12.5 ms) fall inside it. Audio one frame short (N = 640 T samples
    gives 2T - 1 rows) repeats the last row; `max_pad` refuses more."""
    grouped = audio_features.features_per_video_frame(h50, num_frames, fps=25.0, feature_rate=FEATURE_RATE,
                                                      max_pad=max_pad)
    return grouped.reshape(num_frames, -1)


def dreamtalk_windows(h50: np.ndarray) -> np.ndarray:
    """DreamTalk's audio windows: (N50, H) -> (N50 // 2, 11, H), frame i = rows 2i - 5 .. 2i + 5, zero outside."""
    return centred_windows(np.asarray(h50), DREAMTALK_RADIUS, stride=2)


def mimictalk_input(per_frame: np.ndarray) -> np.ndarray:
    """A record's (T, 2 * H) features -> MimicTalk's 50 Hz HuBERT input (2T, H)."""
    t, width = per_frame.shape
    return per_frame.reshape(2 * t, width // 2)


def describe(model_config: Any, layer: int, chunk: ChunkConfig) -> dict[str, Any]:
    """What a feature file or dataset records about how its features were made."""
    return {"encoder": str(model_config.name), "hidden_size": int(model_config.hidden_size), "layer": int(layer),
            "rate_hz": FEATURE_RATE, "chunk_frames": chunk.chunk_frames, "context_frames": chunk.context_frames}


# ----- Files: audio in, features out -----

def read_audio(path: str | os.PathLike, what: str = "audio") -> np.ndarray:
    """Any audio or video file FFmpeg reads -> (N,) float32 mono at 16 kHz (downmix and resampling by FFmpeg's
    swresample, as the `ffmpeg -ar 16000 -ac 1` both talking-head repos run); empty, header-only and NaN files
    refused with the file's name (media.read_audio)."""
    from mirrortalk_jax.data import media

    return media.read_audio(path, what, SAMPLE_RATE)


def output_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """A distinct output name per input file: its stem; where stems collide, its path from the colliding files'
    common folder ("a/speech.wav" and "b/speech.wav" -> "a__speech", "b__speech"); then with its suffix
    ("speech_wav", "speech_mp4"); then numbered (one file given twice)."""
    names = [Path(p).stem for p in paths]
    absolute = [Path(os.path.abspath(p)) for p in paths]

    def colliding() -> list[list[int]]:
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            groups.setdefault(name, []).append(i)
        return [group for group in groups.values() if len(group) > 1]

    for group in colliding():
        common = Path(os.path.commonpath([absolute[i].parent for i in group]))
        for i in group:
            names[i] = "__".join(absolute[i].relative_to(common).with_suffix("").parts)
    for group in colliding():
        for i in group:
            names[i] = f"{names[i]}_{absolute[i].suffix.lstrip('.')}" if absolute[i].suffix else names[i]
    for group in colliding():
        for k, i in enumerate(group[1:], start=2):
            names[i] = f"{names[i]}_{k}"
    return names


def _save_npz_atomically(target: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez into a hidden temporary file next to `target`, renamed over it: an interrupted run leaves no
    half-written .npz that a later step would read."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_audio_features(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, extractor: EncoderFeatures,
                         info: dict[str, Any], *, windows: bool = False,
                         on_error: Callable[[Path, Exception], None] | None = None) -> list[Path]:
    """One OUT_DIR/<name>.npz per audio file (names from `output_names`) with `features_50hz` (N50, H),
    `features_25fps` (N50 // 2, 2H) (rows 2t, 2t+1 per video frame), optionally `dreamtalk_windows`
    (N50 // 2, 11, H), and `info` (JSON), each written atomically.

    A file that cannot be read or is too short raises an error naming it; with `on_error`, it is passed there
    (path, error) instead and the other files are processed. Returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, name in zip(paths, output_names(paths)):
        try:
            target = _write_one(Path(path), out_dir / f"{name}.npz", extractor, info, windows)
        except (OSError, ValueError) as e:  # bad input (MediaError is a ValueError); bugs still propagate
            if on_error is None:
                raise
            on_error(Path(path), e)
            continue
        written.append(target)
    return written


def _write_one(path: Path, target: Path, extractor: EncoderFeatures, info: dict[str, Any], windows: bool) -> Path:
    audio = read_audio(path)
    needed = extractor.model.receptive_field
    if len(audio) < needed:
        raise ValueError(f"audio {path}: {len(audio)} samples ({len(audio) / SAMPLE_RATE * 1000:.0f} ms); the "
                         f"encoder needs at least {needed} ({needed / SAMPLE_RATE * 1000:.0f} ms)")
    h50 = extractor(audio)
    frames = len(h50) // 2
    arrays = {"features_50hz": h50, "features_25fps": h50[:2 * frames].reshape(frames, -1),
              "info": np.array(json.dumps({**info, "source": os.fspath(path)}))}
    if windows:
        arrays["dreamtalk_windows"] = dreamtalk_windows(h50)
    _save_npz_atomically(target, arrays)
    return target


# ----- Datasets: a copy of a record dataset with `audio_features` filled in -----

def write_dataset(src_dir: str | os.PathLike, out_dir: str | os.PathLike, extractor: EncoderFeatures,
                  info: dict[str, Any], *, splits: Sequence[str] | None = None, drop_frames: bool = False,
                  clips_per_batch: int = 16) -> Path:
    """Writes a new ArrayRecord dataset at `out_dir`: every record of `src_dir` (same schema, same metadata)
    with `audio_features` (T, 2H) = `per_video_frame` of the encoder's 50 Hz hidden states. Training reads it
    with `data.dataset_dir=OUT_DIR data.audio_feature=precomputed`; the source is left untouched. Built in a
    staging folder and renamed into place, so an interrupted run leaves nothing a reader would pick up."""
    from mirrortalk_jax.data import sources
    from mirrortalk_jax.data.feature_dataset import (
        build_copy,  # TFDS builder; imports tensorflow_datasets
    )

    src_dir, out_dir = Path(src_dir).expanduser(), Path(out_dir).expanduser()
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists; choose a new folder for the dataset with features")
    source_info = sources.load_info(src_dir)
    splits = list(splits or source_info.splits.keys())

    def records(split: str):
        source = sources.ClipSource(src_dir, split)
        for start in range(0, len(source), clips_per_batch):
            batch = [source[i] for i in range(start, min(start + clips_per_batch, len(source)))]
            feats = extractor.many([r["audio"] for r in batch])
            for record, h50 in zip(batch, feats):
                record = dict(record)
                record["audio_features"] = per_video_frame(h50, int(record["motion"].shape[0]))
                if drop_frames:
                    record.pop("frames", None)
                clip = record["clip_id"]
                yield clip.decode() if isinstance(clip, bytes) else str(clip), record

    return build_copy(src_dir, out_dir, splits, records, width=2 * extractor.model.hidden_size,
                      drop_frames=drop_frames, extra_metadata={"audio_features": info})
