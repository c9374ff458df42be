"""TFDS builders of real talking-face corpora (HDTF, CREMA-D, MEAD, VoxCeleb2, any folder), all on the same
per-video function, and `prepare`, what `mirrortalk data prepare` runs.

With TFDS directly (the corpus as distributed, in `manual_dir`):

    builder = builders.Hdtf(data_dir="~/data")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir="~/HDTF"))

`prepare(inputs, out)` takes any files, folders and lists instead, and publishes the dataset at `out` in one
rename once it is complete, with `prepare_report.json` beside the records.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from mirrortalk_jax import storage
from mirrortalk_jax.data import publishing, sources
from mirrortalk_jax.data.faces import identity
from mirrortalk_jax.data.prepare import dataset, inputs, layouts, motion_space

VERSION = "1.0.0"
REPORT_FILE = "prepare_report.json"


class DatasetNotWritten(ValueError):
    """Nothing usable came out of the inputs (no training clip); the report says why for each file."""


class RealTalkBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the corpus builders: a subclass names its `LAYOUT` (prepare/layouts.py)."""

    LAYOUT = "generic"
    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "MediaPipe mesh motion space, dlib-68 landmarks, aligned crops, identity."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Put the corpus' videos, as distributed (its folder and file names carry the "
                                    "labels), in manual_dir; see mirrortalk_jax/data/prepare/layouts.py.")

    def __init__(self, *, videos: Sequence[str] | None = None,
                 settings: dataset.PrepareSettings | None = None, work_dir: str | os.PathLike | None = None,
                 log: Callable[[str], None] = print, **kwargs):
        """videos: inputs (files, folders, lists; default: the download config's manual_dir); work_dir: the
        resume cache (default: <data_dir>/<name>/.prepare)."""
        self._videos = list(videos) if videos is not None else None
        self.settings = dataclasses.replace(settings or dataset.PrepareSettings(), dataset=self.LAYOUT)
        self._work, self._log = work_dir, log
        self.report: dict[str, Any] | None = None
        super().__init__(**kwargs)

    @property
    def work_dir(self) -> Path:
        return Path(self._work) if self._work else Path(self.data_dir_root) / self.name / ".prepare"

    def _info(self) -> tfds.core.DatasetInfo:
        s = self.settings
        spec = (motion_space.MeshBasis.from_json(s.basis).spec if s.basis else
                motion_space.motion_spec(f"{self.LAYOUT}_mesh_v1", s.lower_components, s.upper_components))
        return tfds.core.DatasetInfo(
            builder=self, description=layouts.layout(self.LAYOUT).description,
            features=dataset.schema.clip_features(spec, num_landmarks=68, frames=True, transcript=False,
                                                  mesh_points=478, blendshapes=dataset.BLENDSHAPES,
                                                  identity_dim=identity.EMBEDDING_DIM),
            metadata=tfds.core.MetadataDict(motion_spec=spec.to_json(), image_size=s.options.image_size,
                                            layout=self.LAYOUT))

    def _split_generators(self, dl_manager):
        videos = self._videos if self._videos is not None else [os.fspath(dl_manager.manual_dir)]
        found_videos, problems = inputs.expand(videos)
        self._log(f"{len(found_videos)} video file(s) found"
                  + (f", {len(problems)} input(s) unusable" if problems else ""))
        entries = dataset.process_videos(found_videos, self.work_dir, self.settings, self._log) + problems
        found = dataset.collect_clips(entries, self.work_dir, self.settings)
        if self.settings.sync is not None:
            found = dataset.check_sync(found, entries, self.settings)
        self.report = dataset.report(entries, found, self.LAYOUT)
        train = [c for c in found if c.split == "train"]
        if not train:
            raise DatasetNotWritten("no training clip came out of the inputs:\n" + dataset.summary(self.report))
        basis = (motion_space.MeshBasis.from_json(self.settings.basis) if self.settings.basis
                 else dataset.fit_basis(train, self.settings))
        speakers = sorted({c.speaker for c in found})
        index = {s: i for i, s in enumerate(speakers)}
        self.info.metadata["motion_basis"] = basis.to_json()
        self.info.metadata["speakers"] = speakers
        return {split: self._generate_examples([c for c in found if c.split == split], basis, index)
                for split in dataset.SPLITS if any(c.split == split for c in found)}

    def _generate_examples(self, clips, basis, index):
        for clip in clips:
            yield clip.clip_id, dataset.record(clip, basis, index[clip.speaker])


class PreparedTalk(RealTalkBuilder, skip_registration=True):
    """Any folder of talking-face videos, a folder per speaker (or speakers found by face identity)."""

    LAYOUT = "generic"


class Hdtf(RealTalkBuilder, skip_registration=True):
    """HDTF: the videos as its download scripts name them (WRA_KellyAyotte_000.mp4, ...)."""

    LAYOUT = "hdtf"


class CremaD(RealTalkBuilder, skip_registration=True):
    """CREMA-D: VideoFlash/<actor>_<sentence>_<emotion>_<level>.flv."""

    LAYOUT = "crema_d"


class Mead(RealTalkBuilder, skip_registration=True):
    """MEAD: <speaker>/video/front/<emotion>/level_<n>/<clip>.mp4 (front camera only)."""

    LAYOUT = "mead"


class Voxceleb2(RealTalkBuilder, skip_registration=True):
    """VoxCeleb2: {dev,test}/mp4/<id>/<youtube id>/<clip>.mp4, its test speakers held out."""

    LAYOUT = "voxceleb2"


BUILDERS: dict[str, type[RealTalkBuilder]] = {b.LAYOUT: b for b in (PreparedTalk, Hdtf, CremaD, Mead, Voxceleb2)}


def work_dir(out: Path) -> Path:
    """The resume cache of a `prepare` run publishing at `out`."""
    return out.parent / f".{out.name}.prepare"


def _check_out(out: Path) -> None:
    """`out` is replaced when the dataset is published: it must be new, empty, or an earlier output of this job,
    never a folder of the user's other files."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the dataset")
    if out.is_dir() and any(out.iterdir()) and not ((out / REPORT_FILE).exists() or
                                                     (out / "dataset_info.json").exists()):
        raise ValueError(f"--out {out} holds other files; it would be replaced by the dataset: give a new folder")


def prepare(videos: Sequence[str], out: str | os.PathLike,
            settings: dataset.PrepareSettings = dataset.PrepareSettings(),
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Prepares `videos` (files, folders, lists) into a dataset published at `out`.

    Returns the report ({"entries", "counts", "clips", "seconds", "dataset"}); `out/prepare_report.json` holds
    it too. Raises DatasetNotWritten (after writing the report) when no training clip came out.
    """
    if storage.is_remote(out):
        return _prepare_remote(videos, storage.path(out), settings, log)
    out = Path(out).expanduser().resolve()
    _check_out(out)
    if settings.workers < 1:
        raise ValueError(f"workers must be at least 1, got {settings.workers}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".staging-{uuid.uuid4().hex[:8]}"
    builder = BUILDERS[layouts.layout(settings.dataset).name](
        videos=videos, settings=settings, work_dir=work_dir(out), log=log, data_dir=os.fspath(staging))
    try:
        builder.download_and_prepare(file_format="array_record")
        built = Path(builder.data_dir)
        for split in builder.info.splits:
            sources.write_clip_index(built, split)
        (built / REPORT_FILE).write_text(json.dumps({**builder.report, "dataset": os.fspath(out)}, indent=1))
        publishing.publish(built, out)
    except DatasetNotWritten:
        out.mkdir(parents=True, exist_ok=True)
        (out / REPORT_FILE).write_text(json.dumps({**builder.report, "dataset": None}, indent=1))
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(dataset.summary(builder.report) + f"\ndataset: {out}\nresume cache (remove when done): {work_dir(out)}")
    return {**builder.report, "dataset": out}


def _prepare_remote(videos: Sequence[str], out: epath.Path, settings: dataset.PrepareSettings,
                    log: Callable[[str], None]) -> dict[str, Any]:
    """`prepare` to an object store, which cannot rename: the dataset is prepared in a local folder (its resume
    cache beside it, so a re-run resumes) and uploaded with dataset_info.json last, the file that makes readers
    (TFDS, ClipSource) see a dataset. An earlier dataset at `out` is removed just before the upload."""
    _check_out(out)
    local = storage.cache_dir("prepare", os.fspath(out)) / out.name
    try:
        report = prepare(videos, local, settings, log)
    except DatasetNotWritten:
        storage.copy_file(local / REPORT_FILE, out / REPORT_FILE)
        raise
    report["dataset"] = out
    (local / REPORT_FILE).write_text(json.dumps({**report, "dataset": os.fspath(out)}, indent=1))
    if out.exists():
        out.rmtree()
    storage.copy_folder(local, out, last=("dataset_info.json",))
    log(f"uploaded to {out}")
    return report
