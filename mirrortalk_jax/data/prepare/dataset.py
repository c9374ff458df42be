"""The steps from raw videos to records (the TFDS builders in prepare/builders.py run them in order):

1. Every input video is processed on its own (prepare/clips.py) into a work folder, one folder per video whose
   `entry.json` is written last: a re-run skips the videos already done and finishes the rest, whatever
   interrupted it.
2. Speakers come from the corpus' file layout (prepare/layouts.py) or from face identity; the splits are
   speaker-disjoint (`heldout_speakers`) plus held-out clips of the training speakers (`heldout_sentences`).
3. The motion basis (prepare/motion_space.py) is fitted on the training split only.
4. Each clip becomes a record of the schema (`record`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mirrortalk_jax import storage
from mirrortalk_jax.data import schema
from mirrortalk_jax.data.faces import identity, layout as face_layout
from mirrortalk_jax.data.prepare import clips, inputs, layouts, motion_space

SPLITS = ("train", "heldout_sentences", "heldout_speakers", "heldout_tail")
BLENDSHAPES = 52
# (frames (T, H, W, 3) uint8 crops, audio (N,) 16 kHz) -> (offset in frames, confidence)
SyncScorer = Callable[[np.ndarray, np.ndarray], tuple[int, float]]
HELDOUT_SENTENCE_EVERY = 10  # the 10th, 20th, ... clip of each training speaker goes to heldout_sentences


@dataclasses.dataclass(frozen=True)
class PrepareSettings:
    dataset: str = "generic"  # a layout of prepare/layouts.py
    options: clips.Options = clips.Options()
    workers: int = 1  # videos processed at once (processes)
    # "direct" (Apache Beam's DirectRunner on this machine), another Beam runner ("dataflow", "flink", "spark",
    # with `beam_options`), or "local" (this process or a process pool, without Beam).
    runner: str = "direct"
    beam_options: tuple[str, ...] = ()
    speaker_from: str = "layout"  # or "identity": cluster the clips by face
    heldout_speakers: tuple[str, ...] = ()  # () = the layout's own rule
    lower_components: int = 12
    upper_components: int = 6
    # Audio-visual sync QC: a scorer (e.g. evaluate.lse.sync_scorer over a converted SyncNet) and the confidence a
    # clip must reach to be kept; its offset is corrected in the record.
    sync: SyncScorer | None = None
    min_sync_confidence: float = 0.0
    # A fitted basis (MeshBasis JSON) to project into instead of fitting one on the training split: new videos in
    # the motion space of models trained elsewhere (personalization prepares a person's video this way).
    basis: str | None = None
    # Time splits within each video (personalization): its last `tail_seconds` go to split "heldout_tail", and
    # with `head_seconds` > 0 only its first `head_seconds` before that tail are kept for training.
    tail_seconds: float = 0.0
    head_seconds: float = 0.0

    def __post_init__(self):
        if self.tail_seconds < 0 or self.head_seconds < 0:
            raise ValueError(f"tail_seconds and head_seconds must be >= 0, got {self.tail_seconds}, "
                             f"{self.head_seconds}")


@dataclasses.dataclass
class PreparedClip:
    path: Path
    clip_id: str
    labels: dict[str, str]
    speaker: str = ""
    split: str = "train"
    sync_offset: int = 0  # SyncNet's convention: audio delayed by d frames -> offset -d
    sync_confidence: float | None = None
    frames: tuple[int, int] | None = None  # a part of the clip file's frames (time splits), None: all

    def load(self) -> clips.ClipFile:
        data = clips.ClipFile.load(self.path)
        return data if self.frames is None else data.part(*self.frames)


# ----- Step 1: videos -> clip files -----

def _process(job: tuple[inputs.VideoInput, str, clips.Options, dict]) -> dict:
    video, folder, options, labels = job
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)  # a video interrupted half-way starts again
    try:
        with storage.local_file(video.location) as local:
            entry = clips.process_video(os.fspath(local), folder, options)
    except Exception as e:  # noqa: BLE001 - one broken file must never stop the batch; its reason is recorded
        entry = {"status": "rejected", "reason": f"{type(e).__name__}: {e}", "clips": 0, "seconds_kept": 0.0}
    entry = {**entry, "file": video.location, "labels": labels}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".entry.json.tmp"
    tmp.write_text(json.dumps(entry, indent=1))
    os.replace(tmp, folder / "entry.json")  # the done marker
    return entry


def process_videos(videos: Sequence[inputs.VideoInput], work: Path, settings: PrepareSettings,
                   log: Callable[[str], None] = print) -> list[dict]:
    """Report entries of every video, processing those not done yet (in `settings.workers` processes)."""
    layout = layouts.layout(settings.dataset)
    entries: dict[str, dict] = {}
    jobs = []
    for video in videos:
        labels = layout.labels(video.relative)
        if labels is None:
            continue  # a file the corpus does not use (another camera view, ...)
        folder = work / "videos" / video.key
        done = folder / "entry.json"
        if done.exists():
            entries[video.location] = json.loads(done.read_text())
        else:
            jobs.append((video, os.fspath(folder), settings.options, labels))
    if entries:
        log(f"{len(entries)} video(s) already prepared in {work}, {len(jobs)} to go")
    for entry in _run(jobs, settings):
        entries[entry["file"]] = entry
        log(_line(entry))
    return [entries[v.location] for v in videos if v.location in entries]


def _run(jobs: list[tuple], settings: PrepareSettings) -> Iterator[dict]:
    """The entries of `jobs`, processed by the chosen runner."""
    if not jobs:
        return
    if settings.runner == "local":  # this process, or a pool of `workers` processes
        if settings.workers <= 1 or len(jobs) == 1:
            yield from map(_process, jobs)
            return
        ctx = multiprocessing.get_context("spawn")  # MediaPipe and XLA do not survive fork
        with concurrent.futures.ProcessPoolExecutor(settings.workers, mp_context=ctx) as pool:
            yield from pool.map(_process, jobs)
        return
    beam = _beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    args = [f"--runner={_BEAM_RUNNERS.get(settings.runner, settings.runner)}", *settings.beam_options]
    if settings.runner == "direct":
        args += [f"--direct_num_workers={max(1, settings.workers)}",
                 "--direct_running_mode=" + ("multi_processing" if settings.workers > 1 else "in_memory")]
    # Each video is one element: Reshuffle spreads them over the workers; every worker writes its video's
    # folder under the work dir (shared storage on a cluster), so the entries are read back from there.
    with beam.Pipeline(options=PipelineOptions(args)) as pipeline:
        _ = pipeline | beam.Create(jobs) | beam.Reshuffle() | beam.Map(_process)
    for _, folder, _, _ in jobs:
        yield json.loads((Path(folder) / "entry.json").read_text())


_BEAM_RUNNERS = {"direct": "DirectRunner", "dataflow": "DataflowRunner", "flink": "FlinkRunner",
                 "spark": "SparkRunner"}


def _beam():
    try:
        import apache_beam
    except ImportError:
        raise ValueError("the Beam runners need apache-beam: pip install 'mirrortalk_jax[faces]' (or run with "
                         "--runner local)") from None
    return apache_beam


def report(entries: Sequence[dict], found: Sequence[PreparedClip], dataset: str) -> dict[str, Any]:
    """The run's report: every input's entry, counts by status, clips per split, seconds kept."""
    return {"dataset": dataset, "entries": list(entries),
            "counts": {s: sum(1 for e in entries if e["status"] == s) for s in ("ok", "partial", "rejected")},
            "clips": {s: sum(1 for c in found if c.split == s) for s in SPLITS},
            "seconds": round(sum(e["seconds_kept"] for e in entries), 2)}


def summary(report: dict[str, Any]) -> str:
    """The report in a few human lines: counts, clips per split, the reasons of what was not fully kept."""
    counts, split_clips = report["counts"], report["clips"]
    lines = [f"{len(report['entries'])} input(s): {counts['ok']} ok, {counts['partial']} partial, "
             f"{counts['rejected']} rejected; {report['seconds']:.1f} s kept",
             "clips: " + ", ".join(f"{s} {n}" for s, n in split_clips.items())]
    reasons: dict[str, int] = {}
    for e in report["entries"]:
        if e["status"] != "ok":
            reasons[e["reason"]] = reasons.get(e["reason"], 0) + 1
    lines += [f"  {n} x {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:20]]
    return "\n".join(lines)


def _line(entry: dict) -> str:
    return f"  {entry['status']:8s} {entry['file']}: {entry['clips']} clip(s), {entry['seconds_kept']:.1f} s; " \
           f"{entry['reason']}"


# ----- Step 2: speakers and splits -----

def collect_clips(entries: Sequence[dict], work: Path, settings: PrepareSettings) -> list[PreparedClip]:
    layout = layouts.layout(settings.dataset)
    found = []
    for entry in entries:
        if entry["status"] == "rejected":
            continue
        folder = work / "videos" / inputs.VideoInput(entry["file"], Path(entry["file"])).key
        stem = Path(entry["file"]).stem
        for path in sorted(folder.glob("[0-9]*.npz")):  # <window>_<clip>.npz
            found.append(PreparedClip(path, f"{folder.name[:8]}_{stem}_{path.stem}", dict(entry["labels"])))
    if settings.speaker_from == "identity":
        embeddings = np.stack([clips.ClipFile.load(c.path).identity for c in found]) if found else np.zeros((0, 128))
        for clip, label in zip(found, identity.cluster(embeddings)):
            clip.labels["speaker"] = f"person{label:03d}"
    elif settings.speaker_from != "layout":
        raise ValueError(f"speaker_from must be 'layout' or 'identity', got {settings.speaker_from!r}")
    speakers = sorted({clip.labels["speaker"] for clip in found})
    heldout = set(settings.heldout_speakers) or {
        s for s in speakers if layouts.is_heldout_speaker(s, layout.heldout_fraction)}
    if heldout >= set(speakers) and not settings.heldout_speakers:
        heldout = set()  # a corpus too small to hold speakers out keeps them all for training
    per_speaker: dict[str, int] = {}
    for clip in found:
        clip.speaker = clip.labels["speaker"]
        if clip.labels.get("split"):
            clip.split = clip.labels["split"]
        elif clip.speaker in heldout:
            clip.split = "heldout_speakers"
        else:
            n = per_speaker[clip.speaker] = per_speaker.get(clip.speaker, 0) + 1
            clip.split = "heldout_sentences" if n % HELDOUT_SENTENCE_EVERY == 0 else "train"
    if settings.tail_seconds or settings.head_seconds:
        found = split_by_time(found, settings)
    return found


def split_by_time(found: Sequence[PreparedClip], settings: PrepareSettings) -> list[PreparedClip]:
    """Each video's clips cut at times (see `PrepareSettings.tail_seconds`): frames in its last `tail_seconds`
    (of the frames kept) become split "heldout_tail", the first `head_seconds` of the rest stay in their split,
    later ones are dropped. Parts shorter than two frames are dropped."""
    fps = settings.options.fps
    by_video: dict[Path, list[tuple[int, int, PreparedClip]]] = {}
    for clip in found:
        info = clips.ClipFile.load_info(clip.path)
        by_video.setdefault(clip.path.parent, []).append((int(info["start_frame"]), int(info["num_frames"]), clip))
    out = []
    for parts in by_video.values():
        parts.sort(key=lambda p: p[0])
        kept = sum(n for _, n, _ in parts)
        tail = min(kept, round(settings.tail_seconds * fps))
        head = kept - tail if not settings.head_seconds else min(kept - tail, round(settings.head_seconds * fps))
        seen = 0  # kept frames before this clip
        for _, n, clip in parts:
            pieces = ((max(0, -seen), min(n, head - seen), clip.split),
                      (max(0, kept - tail - seen), n, "heldout_tail"))
            for k, (a, b, split) in enumerate(pieces):
                if b - a >= 2:
                    out.append(dataclasses.replace(clip, clip_id=clip.clip_id + ("_tail" if k else ""), split=split,
                                                   frames=(a, b), labels=dict(clip.labels)))
            seen += n
    return out


def check_sync(found: Sequence[PreparedClip], entries: Sequence[dict],
               settings: PrepareSettings) -> list[PreparedClip]:
    """Scores every clip's audio-visual sync with `settings.sync`; returns the clips at or above
    `min_sync_confidence` (their offsets kept for `record`). Each entry gets its clips' scores under "sync"; a
    file whose clips all fall below is rejected, saying so."""
    by_file: dict[str, list[dict]] = {}
    kept = []
    for clip in found:
        data = clip.load()
        offset, confidence = settings.sync(schema.decode_frames(data.frames_png), data.audio)
        clip.sync_offset, clip.sync_confidence = int(offset), float(confidence)
        ok = confidence >= settings.min_sync_confidence
        by_file.setdefault(clip.path.parent.name, []).append(  # the video's work folder: its key
            {"clip": clip.clip_id, "offset": int(offset), "confidence": round(float(confidence), 3), "kept": ok})
        if ok:
            kept.append(clip)
    for entry in entries:
        scores = by_file.get(inputs.VideoInput(entry["file"], Path(entry["file"])).key)
        if not scores:
            continue
        entry["sync"] = scores
        entry["clips"] = sum(s["kept"] for s in scores)
        if not entry["clips"]:
            best = max(s["confidence"] for s in scores)
            entry.update(status="rejected", seconds_kept=0.0, reason=(
                f"audio-visual sync confidence {best:.2f} below {settings.min_sync_confidence:.2f}"))
    return kept


# ----- Steps 3-4: basis and records -----

def fit_basis(train: Sequence[PreparedClip], settings: PrepareSettings) -> motion_space.MeshBasis:
    total = sum(int(np.load(c.path)["png_sizes"].shape[0]) for c in train)
    stride = max(1, -(-total // motion_space.MAX_FIT_FRAMES))
    meshes = [c.load().mesh[::stride] for c in train]
    return motion_space.fit(meshes, lower_components=settings.lower_components,
                            upper_components=settings.upper_components, name=f"{settings.dataset}_mesh_v1")


def record(clip: PreparedClip, basis: motion_space.MeshBasis, speaker_index: int,
           blendshape_count: int = BLENDSHAPES) -> dict[str, Any]:
    data = clip.load().resynced(-clip.sync_offset, schema.AUDIO_SAMPLE_RATE // int(schema.FPS))
    points = face_layout.dlib68(data.mesh)
    blend = data.blendshapes if data.blendshapes.shape[1] == blendshape_count else np.zeros(
        (len(data.mesh), blendshape_count), np.float32)
    meta = {**data.info, "labels": clip.labels, "crop_transform": np.round(data.transform, 4).tolist(),
            "crop_transform_convention": "crop_xy = a * source_xy + (bx, by), rows [a, bx, by] per frame"}
    if clip.sync_confidence is not None:
        meta["sync"] = {"offset": clip.sync_offset, "confidence": clip.sync_confidence,
                        "audio_moved_frames": -clip.sync_offset}
    return {
        "clip_id": clip.clip_id, "speaker": clip.speaker, "speaker_index": speaker_index,
        "fps": schema.FPS, "sample_rate": schema.AUDIO_SAMPLE_RATE, "audio": data.audio.astype(np.float32),
        "motion": basis.motion(data.mesh, data.pose_matrix), "metadata": json.dumps(meta, default=float),
        "landmarks_2d": points[..., :2].astype(np.float32), "landmarks_3d": points.astype(np.float32),
        "frames": data.frames_png, "mesh_3d": data.mesh.astype(np.float32), "blendshapes": blend,
        "identity": data.identity.astype(np.float32),
    }
