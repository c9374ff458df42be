"""The evaluation suite: methods of the results table, run on a dataset split and scored with every metric.

A *method* maps a split to one motion sequence per clip (Ground Truth, mean motion, nearest-neighbour audio
retrieval, the audio-only regression, and every trained generator: MirrorTalk and its ablations, DreamTalk,
MimicTalk's ICS-A2M, chosen by the run's model name in `generator`). Every method is scored the same way
(`score`):

  M-LMD / F-LMD   pixel landmarks of the prediction (the speaker's own parametric face, the dataset's camera)
                  against the record's landmarks_2d, per frame mean-centred (evaluate.landmarks);
  Sync_conf/LSE-D the SyncNet offset procedure with the motion expert as embedder (vshift frames);
  StyleSim        cosine between an independent style encoder's embeddings of the prediction and of the
                  clip's reference (another utterance of the same speaker); Retrieval = top-1 speaker;
  AED / APD       L1 on expression / pose channels (MotionSpec groups);
  SSIM / PSNR     the prediction drawn with the record's face shape and appearance against the record's
                  frames (SynthTalk draws frames from motion, so Ground Truth scores SSIM 1);
  FID             all drawn frames against all record frames under a feature extractor (evaluate.fid).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from mirrortalk_jax.data import video
from mirrortalk_jax.data.audio_features import audio_frame_features
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC, MotionSpec
from mirrortalk_jax.data.schema import decode_frames
from mirrortalk_jax.data.sources import ClipSource
from mirrortalk_jax.evaluate import fid as fid_lib
from mirrortalk_jax.evaluate import faces as faces_lib
from mirrortalk_jax.evaluate import image_quality, motion_error, preview, style_similarity, sync
from mirrortalk_jax.runs import loader
from mirrortalk_jax.sample import baselines, generators


@dataclasses.dataclass
class Clip:
    clip_id: str
    speaker: int
    motion: np.ndarray  # (T, D)
    audio: np.ndarray  # (T, F) frame-aligned features
    waveform: np.ndarray  # (N,) for preview videos
    sample_rate: int
    fps: float
    landmarks_2d: np.ndarray  # (T, 68, 2) pixels
    face_shape: np.ndarray | None  # (8,) SynthTalk's face; None for a prepared real-face dataset
    appearance: np.ndarray | None  # (9, 3) uint8
    frames: np.ndarray | None  # (T, H, W, 3) uint8, None when the dataset has no frames
    ref_index: int = -1  # reference clip: the next clip of the same speaker (cyclic)
    control_ref_index: int | None = None  # a clip of another speaker (the style-transfer control)


@dataclasses.dataclass
class Split:
    name: str
    clips: list[Clip]
    refs: list[tuple[np.ndarray, np.ndarray]]  # per clip: centre crop (R, D) of its motion and its mask (R,)
    image_size: int
    audio_feature: str = ""  # the kind of Clip.audio (data.audio_features); generators must match it
    spec: MotionSpec = SYNTHTALK_SPEC  # the dataset's motion space (its groups drive AED / APD)


@dataclasses.dataclass(frozen=True)
class Settings:
    num_steps: int = 20  # DDIM / ODE steps of every generator that samples (0: each run's own)
    chunk_frames: int = 0  # 0: the generator's window_frames
    overlap_frames: int = 8
    # Largest offset searched by Sync_conf. syncnet_python's 15 is too large for clips of 30-60 frames: the
    # procedure zero-pads the audio embeddings and a zero row can beat a misaligned window at the edges.
    vshift: int = 10
    seed: int = 0
    image_metrics: bool = True


def load_split(dataset_dir: str | os.PathLike, split: str, audio_feature: str, reference_frames: int, *,
               with_frames: bool = True, max_clips: int = 0) -> Split:
    """The clips of a split with their reference assignments.

    `max_clips` > 0 keeps about that many: the first k clips of every speaker, k = max(2, max_clips / speakers),
    so each clip keeps a same-speaker reference. Speakers with a single clip are left out (no reference).
    """
    source = ClipSource(dataset_dir, split)
    records = [source[i] for i in range(len(source))]
    by_speaker: dict[int, list[int]] = {}
    for i, r in enumerate(records):
        by_speaker.setdefault(int(r["speaker_index"]), []).append(i)
    by_speaker = {s: idx for s, idx in by_speaker.items() if len(idx) >= 2}
    if not by_speaker:
        raise ValueError(f"{dataset_dir}/{split}: no speaker has two clips, so there is no reference clip")
    if max_clips > 0:
        per_speaker = max(2, -(-max_clips // len(by_speaker)))
        by_speaker = {s: idx[:per_speaker] for s, idx in by_speaker.items()}
    clips = []
    for i in sorted(i for idx in by_speaker.values() for i in idx):
        r = records[i]
        motion = np.asarray(r["motion"], np.float32)
        meta = json.loads(r["metadata"])
        has_frames = with_frames and "frames" in r and len(r["frames"]) > 0
        clips.append(Clip(
            clip_id=r["clip_id"].decode() if isinstance(r["clip_id"], bytes) else str(r["clip_id"]),
            speaker=int(r["speaker_index"]), motion=motion,
            audio=audio_frame_features(r["audio"], motion.shape[0], kind=audio_feature,
                                       fps=float(r["fps"])).astype(np.float32),
            waveform=np.asarray(r["audio"], np.float32), sample_rate=int(r["sample_rate"]), fps=float(r["fps"]),
            landmarks_2d=np.asarray(r["landmarks_2d"], np.float32),
            face_shape=np.asarray(meta["face_shape"], np.float64) if "face_shape" in meta else None,
            appearance=np.asarray(meta["appearance"], np.uint8) if "appearance" in meta else None,
            frames=decode_frames(r["frames"]) if has_frames else None))
    speakers = sorted({c.speaker for c in clips})
    by_speaker = {s: [i for i, c in enumerate(clips) if c.speaker == s] for s in speakers}
    for i, c in enumerate(clips):
        own = by_speaker[c.speaker]
        c.ref_index = own[(own.index(i) + 1) % len(own)]
        if len(speakers) > 1:
            other = by_speaker[speakers[(speakers.index(c.speaker) + 1) % len(speakers)]]
            c.control_ref_index = other[own.index(i) % len(other)]
    return Split(split, clips, [generators.centre_crop(c.motion, reference_frames) for c in clips],
                 int(source.info.metadata["image_size"]), audio_feature, source.spec)


# ----- Methods -----

Method = Callable[[Split], list[np.ndarray]]


def ground_truth() -> Method:
    return lambda split: [c.motion for c in split.clips]


def _pad_batch(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """[(T_i, F)] -> (B, T_max, F), padded at the end with the last row (the padded frames are masked and
    dropped afterwards)."""
    t_max = max(a.shape[0] for a in arrays)
    return np.stack([np.pad(a, ((0, t_max - a.shape[0]), (0, 0)), mode="edge") for a in arrays])


def _reference_indices(split: Split, control: bool) -> list[int]:
    refs = [c.control_ref_index if control else c.ref_index for c in split.clips]
    if any(r is None for r in refs):
        raise ValueError(f"split {split.name} has one speaker: no other-speaker reference for the control")
    return refs


def method(generator: generators.MotionGenerator, settings: Settings, *, control: bool = False) -> Method:
    """Any motion generator generating each clip of a split from its audio and its reference clip.

    All clips of a split go in one batch (padded, with a frame mask), so generation compiles once per split. The
    reference is a centre crop of the generator's own data.reference_frames of the reference clip, its audio
    included (ICS-A2M's prompt). `control` takes the reference from another speaker instead (StyleSim should
    then drop: the style path is used).
    """
    def predict(split: Split) -> list[np.ndarray]:
        if generator.audio_feature and split.audio_feature and generator.audio_feature != split.audio_feature:
            raise ValueError(f"the {generator.name} generator was trained on audio features "
                             f"{generator.audio_feature!r} but split {split.name} was loaded with "
                             f"{split.audio_feature!r}; load the split with the generator's data.audio_feature")
        refs = [split.clips[r] for r in _reference_indices(split, control)]
        reference = generators.Reference.of_clips([c.motion for c in refs], max(generator.reference_frames, 1),
                                                  [c.audio for c in refs])
        lengths = np.array([c.motion.shape[0] for c in split.clips])
        audio = _pad_batch([c.audio for c in split.clips])
        sampling = {k: v for k, v in (("num_steps", settings.num_steps), ("chunk_frames", settings.chunk_frames),
                                      ("overlap_frames", settings.overlap_frames))
                    if k in generator.accepts}
        out = generator.generate(audio, reference, jax.random.key(settings.seed),
                                 frame_mask=np.arange(audio.shape[1])[None] < lengths[:, None], **sampling)
        return [out[i, :n] for i, n in enumerate(lengths)]
    return predict


def mean_motion(dataset_dir: str | os.PathLike, train_split: str = "train") -> Method:
    """Every frame = the training split's per-channel mean motion."""
    return method(baselines.MeanMotion.fit(dataset_dir, train_split), Settings())


def nearest_neighbour(dataset_dir: str | os.PathLike, audio_feature: str, train_split: str = "train") -> Method:
    """Each frame takes the motion of the training frame whose audio context is closest (sample/baselines.py)."""
    return method(baselines.NearestNeighbour.fit(dataset_dir, audio_feature, train_split), Settings())


def generator(run_dir: str | os.PathLike, settings: Settings, *, control: bool = False) -> Method:
    """The method of any trained generator run (MirrorTalk and its ablations, DreamTalk, ICS-A2M, the audio-only
    regression), chosen by its config's model.name (sample/generators.py)."""
    return method(loader.load_generator(run_dir, what="run"), settings, control=control)


# ----- Scoring -----


@dataclasses.dataclass
class Judges:
    """The frozen models that score: a motion expert (sync), an independent style encoder, a FID extractor, and
    how motion becomes faces (evaluate/faces.py: SynthTalk's parametric face, or a renderer for any motion space,
    with CSIM and SyncNet's LSE when given)."""

    expert: object
    style: style_similarity.StyleEvaluator
    fid_extractor: fid_lib.FeatureExtractor = dataclasses.field(default_factory=fid_lib.PixelProjection)
    faces: faces_lib.Faces = dataclasses.field(default_factory=faces_lib.SynthTalkFaces)


def score(preds: Sequence[np.ndarray], split: Split, judges: Judges, settings: Settings) -> dict[str, float]:
    """Every metric of the table for one method on one split, averaged over clips (FID over all frames)."""
    clips = split.clips
    if len(preds) != len(clips):
        raise ValueError(f"{len(preds)} predictions for {len(clips)} clips of {split.name}")
    per_clip: dict[str, list[float]] = {k: [] for k in ("m_lmd", "f_lmd", "aed", "apd", "ssim", "psnr", "csim",
                                                         "syncnet_lse_c", "syncnet_lse_d", "landmark_frames")}
    syncs, drawn = [], []
    for pred, c in zip(preds, clips):
        if pred.shape != c.motion.shape:
            raise ValueError(f"prediction for {c.clip_id} has shape {pred.shape}, expected {c.motion.shape}")
        errors = motion_error.region_errors(pred[None], c.motion[None], np.ones((1, len(pred)), bool), split.spec)
        per_clip["aed"].append(errors["aed"])
        per_clip["apd"].append(errors["apd"])
        syncs.append(sync.expert_sync(judges.expert, pred, c.audio, vshift=settings.vshift))
        frames = None
        if settings.image_metrics and c.frames is not None:
            frames = judges.faces.frames(pred, c, split.image_size)
            drawn.append(frames)
            per_clip["ssim"].append(float(image_quality.mean_ssim(frames, c.frames, data_range=255, channel_axis=-1)))
            per_clip["psnr"].append(float(np.mean(np.asarray(image_quality.psnr(c.frames, frames, data_range=255)))))
        for key, value in judges.faces.scores(pred, c, split.image_size, frames).items():
            per_clip[key].append(value)
    out = {k: float(np.mean(v)) if v else None for k, v in per_clip.items()}
    out.update(sync.summarize(syncs))
    gen = judges.style.embed(list(preds))
    ref = judges.style.embed([split.refs[c.ref_index][0][split.refs[c.ref_index][1]] for c in clips])
    gallery = judges.style.embed([m[k] for m, k in split.refs])
    labels = np.array([c.speaker for c in clips])
    out["style_sim"] = style_similarity.style_similarity(gen, ref)
    out["retrieval_acc"] = style_similarity.retrieval_accuracy(gen, labels, gallery, labels,
                                                               np.eye(len(clips), dtype=bool))
    # Clamped: identical sets come out at -1e-12 or so, and a distance is never negative.
    out["fid"] = (max(fid_lib.fid_of_frames([c.frames for c in clips], drawn, judges.fid_extractor), 0.0)
                  if drawn and len(drawn) == len(clips) else None)
    out["num_clips"] = len(clips)
    return out


def evaluate(splits: Sequence[Split], methods: dict[str, Method], judges: Judges, settings: Settings,
             progress: Callable[[str], None] = lambda message: None
             ) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, list[np.ndarray]]]]:
    """Scores every method on every split: (rows[split][method] = metrics, predictions[split][method])."""
    rows, predictions = {}, {}
    with tqdm(total=len(splits) * len(methods), desc="evaluate", unit="method") as bar:
        for split in splits:
            rows[split.name], predictions[split.name] = {}, {}
            for name, method in methods.items():
                progress(f"{split.name}: {name}")
                bar.set_postfix_str(f"{split.name}: {name}")
                preds = [np.asarray(p, np.float32) for p in method(split)]
                predictions[split.name][name] = preds
                rows[split.name][name] = score(preds, split, judges, settings)
                bar.update(1)
    return rows, predictions


def write_previews(directory: str | os.PathLike, split: Split, predictions: dict[str, list[np.ndarray]],
                   method: str, count: int = 2, image_size: int = 128,
                   faces: faces_lib.Faces | None = None) -> list[Path]:
    """Side-by-side mp4s (ground truth | `method`) with the clip's audio, for the first `count` speakers.

    Without `faces` both panels are SynthTalk motion drawn with one neutral face; with a renderer's faces
    (evaluate/faces.RenderedFaces) the left panel is the clip's real frames and the right one the rendered
    prediction, for any dataset with frames."""
    paths, seen = [], set()
    for i, c in enumerate(split.clips):
        if c.speaker in seen or len(paths) >= count:
            continue
        seen.add(c.speaker)
        path = Path(directory) / f"{split.name}_{c.clip_id}_{method.lower().replace(' ', '_')}.mp4"
        if faces is None:
            paths.append(preview.write_side_by_side(path, [c.motion, predictions[method][i]], fps=c.fps,
                                                    audio=c.waveform, sample_rate=c.sample_rate,
                                                    image_size=image_size))
            continue
        if c.frames is None:
            raise ValueError(f"clip {c.clip_id} of {split.name} has no frames to preview against")
        generated = faces.frames(predictions[method][i], c, split.image_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        video.write_mp4(path, np.concatenate([c.frames[:len(generated)], generated], axis=2), fps=c.fps,
                        audio=c.waveform, sample_rate=c.sample_rate)
        paths.append(path)
    return paths
