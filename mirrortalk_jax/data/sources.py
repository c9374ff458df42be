"""Reading built datasets: random access to validated clip records, with errors that name the file.

`ClipSource` is a Grain random-access data source over one split of a dataset directory written by a TFDS
builder in ArrayRecord format (SynthTalk, or a real corpus converted to the same schema). It checks every
shard up front, decodes records with the dataset's own feature spec and validates them against the schema.

A dataset on an object store (gs://...) is read in place for its metadata; ArrayRecord's reader only opens local
files, so each process copies a shard to its local cache (storage.cache_dir) the first time it reads a record
of it, and checks the copy's record count then. The shards a process never reads are never copied (the input
pipeline gives each process its own records). A bucket mounted with gcsfuse is a local path and is read in place.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from array_record.python import array_record_data_source, array_record_module

from mirrortalk_jax import storage
from mirrortalk_jax.data import schema
from mirrortalk_jax.data.motion_spec import MotionSpec

_INDEX_FILE = "clip_index_{split}.json"


class DatasetError(ValueError):
    """A dataset directory that cannot be read: missing, incomplete, or with a corrupt shard."""


def load_info(dataset_dir: str | os.PathLike) -> tfds.core.DatasetInfo:
    path = storage.path(dataset_dir)
    if not (path / "dataset_info.json").exists():
        hint = " (it exists but has no dataset_info.json: an incomplete build?)" if path.exists() else ""
        raise DatasetError(f"no dataset at {path}{hint}; build one with `mirrortalk data build`")
    try:
        return tfds.builder_from_directory(str(path)).info
    except Exception as e:  # TFDS raises a variety of types for unreadable metadata.
        raise DatasetError(f"cannot read the dataset metadata in {path}: {e}") from e


def motion_spec_of(info: tfds.core.DatasetInfo) -> MotionSpec:
    if "motion_spec" not in info.metadata:
        raise DatasetError(f"dataset {info.data_dir} has no 'motion_spec' in its metadata; "
                           "records of this project's schema must name their motion space")
    return MotionSpec.from_json(info.metadata["motion_spec"])


class ClipSource:
    """Random access to the decoded, validated records of one split.

    Args:
      dataset_dir: a directory holding dataset_info.json and ArrayRecord shards.
      split: split name, e.g. "train".
      on_bad_record: "raise" (default) raises a RecordError naming the shard and record; "skip" logs it,
        counts it in `bad_records` and returns None (pipelines filter None out), so a long job carries on.
    """

    def __init__(self, dataset_dir: str | os.PathLike, split: str, *, on_bad_record: str = "raise"):
        if on_bad_record not in ("raise", "skip"):
            raise ValueError(f"on_bad_record must be 'raise' or 'skip', got {on_bad_record!r}")
        self.dataset_dir = storage.path(dataset_dir)
        self.remote = storage.is_remote(self.dataset_dir)
        self.split = split
        self.on_bad_record = on_bad_record
        self.bad_records = 0
        self.info = load_info(self.dataset_dir)
        if split not in self.info.splits:
            raise DatasetError(f"dataset {self.dataset_dir} has no split {split!r}; "
                               f"splits: {sorted(self.info.splits.keys())}")
        self.spec = motion_spec_of(self.info)
        split_info = self.info.splits[split]
        self.paths = [os.fspath(p) for p in split_info.filepaths]
        self.shard_lengths = [int(n) for n in split_info.shard_lengths]
        for path, expected in zip(self.paths, self.shard_lengths, strict=True):
            if not storage.path(path).exists():
                raise DatasetError(f"missing shard {path} of split {self.split!r} ({expected} records expected)")
            if not self.remote:  # remote shards are checked when they are copied
                _check_shard(path, path, expected)
        self._starts = np.cumsum([0] + self.shard_lengths).tolist()
        self._local_paths = [_cached_name(p) for p in self.paths] if self.remote else list(self.paths)
        self._staged = [not self.remote] * len(self.paths)
        self._stage_lock = threading.Lock()
        # "file[start:end]" gives the reader each shard's length without opening it (a remote shard is not here yet).
        self._reader = array_record_data_source.ArrayRecordDataSource(
            [f"{local}[0:{n}]" for local, n in zip(self._local_paths, self.shard_lengths, strict=True)])
        self._features = self.info.features

    def _stage(self, shard: int) -> None:
        """Copies remote shard `shard` to the local cache (once per process; a cached copy of the same size is
        reused) and checks its record count."""
        with self._stage_lock:
            if self._staged[shard]:
                return
            remote, local = storage.path(self.paths[shard]), Path(self._local_paths[shard])
            if not (local.is_file() and local.stat().st_size == storage.size(remote)):
                local.parent.mkdir(parents=True, exist_ok=True)
                partial = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}")
                storage.copy_file(remote, partial)
                os.replace(partial, local)  # whole or absent: other processes share the cache
            _check_shard(self.paths[shard], local, self.shard_lengths[shard])
            self._staged[shard] = True

    def __len__(self) -> int:
        return self._starts[-1]

    def where(self, index: int) -> str:
        """Human-readable location of record `index`: its shard file and position in it."""
        shard = bisect.bisect_right(self._starts, index) - 1
        return f"{self.paths[shard]} record {index - self._starts[shard]}"

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} out of range for split {self.split!r} with {len(self)} records")
        if self.remote:
            self._stage(bisect.bisect_right(self._starts, index) - 1)
        try:
            raw = self._reader[index]
            record = self._features.deserialize_example_np(raw)
            schema.validate_record(record, self.spec, self.where(index))
        except schema.RecordError as e:
            return self._bad(e)
        except Exception as e:  # undecodable bytes
            return self._bad(schema.RecordError(f"{self.where(index)}: cannot decode record ({e})"))
        return record

    def _bad(self, error: schema.RecordError) -> None:
        if self.on_bad_record == "raise":
            raise error
        self.bad_records += 1
        logging.warning("skipping bad record: %s", error)
        return None

    # Grain worker processes receive the source by pickling: reopen from the directory instead of shipping
    # TFDS metadata objects and open file readers.
    def __getstate__(self):
        return {"dataset_dir": self.dataset_dir, "split": self.split, "on_bad_record": self.on_bad_record}

    def __setstate__(self, state):
        self.__init__(state["dataset_dir"], state["split"], on_bad_record=state["on_bad_record"])

    def __repr__(self) -> str:
        return f"ClipSource({self.dataset_dir}, split={self.split!r}, records={len(self)})"

    # --- the clip index: speaker and length of every record, without decoding audio or frames again ---

    def clip_index(self) -> list[dict[str, Any]]:
        """[{clip_id, speaker, speaker_index, num_frames}] in record order (cached on disk by builders)."""
        if getattr(self, "_index", None) is None:
            path = self.dataset_dir / _INDEX_FILE.format(split=self.split)
            if path.exists():
                self._index = json.loads(path.read_text())
            else:
                self._index = scan_clip_index(self)
            if len(self._index) != len(self):
                raise DatasetError(f"{path} lists {len(self._index)} clips but split {self.split!r} has "
                                   f"{len(self)}: a stale index; delete it to rebuild")
        return self._index


def scan_clip_index(source: ClipSource) -> list[dict[str, Any]]:
    index = []
    for i in range(len(source)):
        r = source[i]
        if r is None:  # bad record in skip mode: keep the position, mark it unusable
            index.append({"clip_id": None, "speaker": None, "speaker_index": -1, "num_frames": 0})
            continue
        index.append({"clip_id": r["clip_id"].decode() if isinstance(r["clip_id"], bytes) else r["clip_id"],
                      "speaker": r["speaker"].decode() if isinstance(r["speaker"], bytes) else r["speaker"],
                      "speaker_index": int(r["speaker_index"]), "num_frames": int(r["motion"].shape[0])})
    return index


def _cached_name(uri: str) -> str:
    """The local cache file of the remote shard `uri` (one folder per dataset, so names stay readable)."""
    folder, name = uri.rsplit("/", 1)
    return os.fspath(storage.cache_dir("shards", folder) / name)


def _check_shard(name: str, local: str | os.PathLike, expected: int) -> None:
    """Raises DatasetError unless the ArrayRecord file `local` (shard `name`) holds `expected` records."""
    try:
        reader = array_record_module.ArrayRecordReader(os.fspath(local))
        found = reader.num_records()
        reader.close()
    except Exception as e:  # the C++ reader raises RuntimeError/ValueError on corruption
        raise DatasetError(f"corrupt shard {name}: not a readable ArrayRecord file ({e})") from e
    if found != expected:
        raise DatasetError(f"shard {name} holds {found} records, its dataset_info says {expected}: "
                           "an incomplete or overwritten shard")


def write_clip_index(dataset_dir: str | os.PathLike, split: str) -> epath.Path:
    """Scans a split once and stores its clip index next to the shards."""
    source = ClipSource(dataset_dir, split)
    path = storage.path(dataset_dir) / _INDEX_FILE.format(split=split)
    path.write_text(json.dumps(scan_clip_index(source)))
    return path
