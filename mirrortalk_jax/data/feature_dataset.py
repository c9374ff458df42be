"""A copy of a record dataset with precomputed `audio_features`, written by TFDS as ArrayRecord shards.

Used by `encoder_features.write_dataset` (`mirrortalk features ENCODER DATASET --out NEW_DATASET`). The copy
has the source's feature spec and metadata plus `audio_features` (T, F) and `metadata.audio_features` (how
they were made), so every reader (ClipSource, the training pipeline with audio_feature="precomputed") works
on it unchanged.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from mirrortalk_jax.data import sources

VERSION = "1.0.0"
Records = Callable[[str], Iterator[tuple[str, dict[str, Any]]]]


class EncodedClips(tfds.core.GeneratorBasedBuilder):
    """Records of another dataset with `audio_features` added (see docs/data.md)."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "A source dataset's records with speech-encoder audio_features."}  # noqa: RUF012

    def __init__(self, *, source_info: tfds.core.DatasetInfo, splits: Sequence[str], records: Records, width: int,
                 drop_frames: bool, extra_metadata: dict[str, Any], **kwargs):
        self.source_info, self.split_names, self.records = source_info, list(splits), records
        self.width, self.drop_frames, self.extra_metadata = width, drop_frames, extra_metadata
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        features = {k: v for k, v in self.source_info.features.items()
                    if not (self.drop_frames and k == "frames")}
        features["audio_features"] = tfds.features.Tensor(shape=(None, self.width), dtype=np.float32)
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.source_info.full_name} with speech-encoder audio_features.",
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict({**dict(self.source_info.metadata or {}), **self.extra_metadata}),
        )

    def _split_generators(self, dl_manager):
        return {split: self.records(split) for split in self.split_names}

    def _generate_examples(self):  # pragma: no cover - _split_generators hands TFDS the generators directly
        raise NotImplementedError


def build_copy(src_dir: Path, out_dir: Path, splits: Sequence[str], records: Records, *, width: int,
               drop_frames: bool, extra_metadata: dict[str, Any]) -> Path:
    """Builds the copy in a staging folder next to `out_dir`, adds clip indexes, renames it into place."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".staging-{uuid.uuid4().hex[:8]}"
    try:
        builder = EncodedClips(source_info=sources.load_info(src_dir), splits=splits, records=records, width=width,
                               drop_frames=drop_frames, extra_metadata=extra_metadata, data_dir=str(staging))
        builder.download_and_prepare(file_format="array_record")
        built = Path(builder.data_dir)
        for split in splits:
            sources.write_clip_index(built, split)
        os.replace(built, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
