"""The videos a `data prepare` run was given: files, folders (searched recursively), lists of paths in a text
file, local or on any filesystem etils.epath reads (gs://, s3://, ...)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from mirrortalk_jax import storage
from mirrortalk_jax.data.prepare.layouts import VIDEO_EXTENSIONS

LIST_EXTENSIONS = (".txt", ".lst", ".list")


@dataclasses.dataclass(frozen=True)
class VideoInput:
    location: str  # a local path or a URI
    relative: PurePosixPath  # its path under the folder it was found in (what a layout reads labels from)

    @property
    def key(self) -> str:
        """A stable name for its work folder."""
        return hashlib.sha1(self.location.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _walk_local(root: Path) -> Iterator[Path]:
    """Video files under `root`, sorted; symlinked folders are not followed (no loops), symlinked files are."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(VIDEO_EXTENSIONS):
                yield Path(folder) / name


def expand(inputs: Sequence[str]) -> tuple[list[VideoInput], list[dict]]:
    """(videos, problems): every video the inputs name, in order without duplicates, and a report entry for
    each input that names nothing usable (a missing path, an empty folder)."""
    videos: dict[str, VideoInput] = {}
    problems = []
    for text in inputs:
        found = list(_expand_one(text, problems))
        for video in found:
            videos.setdefault(video.location, video)
    return list(videos.values()), problems


def _expand_one(text: str, problems: list[dict]) -> Iterator[VideoInput]:
    if storage.is_remote(text):
        yield from _expand_uri(text, problems)
        return
    path = Path(text).expanduser()
    if path.is_dir():
        found = False
        for file in _walk_local(path):
            found = True
            yield VideoInput(os.fspath(file), PurePosixPath(file.relative_to(path).as_posix()))
        if not found:
            problems.append(_problem(text, f"folder holds no video file ({', '.join(VIDEO_EXTENSIONS)})"))
    elif path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
        base = path.parent
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                entry = line if storage.is_remote(line) or os.path.isabs(line) else os.fspath(base / line)
                yield from _expand_one(entry, problems)
    elif path.exists() or path.is_symlink():
        yield VideoInput(os.fspath(path), PurePosixPath(path.name))  # any file given by name is tried
    else:
        problems.append(_problem(text, "no such file or folder"))


def _expand_uri(uri: str, problems: list[dict]) -> Iterator[VideoInput]:
    try:
        path = storage.path(uri)
        if path.is_dir():
            files = [p for p in storage.files_under(path) if p.name.lower().endswith(VIDEO_EXTENSIONS)]
            if not files:
                problems.append(_problem(uri, "folder holds no video file"))
            for file in files:
                yield VideoInput(os.fspath(file), PurePosixPath(os.fspath(file)[len(os.fspath(path)):].lstrip("/")))
        elif path.exists():
            yield VideoInput(uri, PurePosixPath(path.name))
        else:
            problems.append(_problem(uri, "no such file or folder"))
    except Exception as e:  # filesystem backends raise their own types (missing credentials, network)
        problems.append(_problem(uri, f"cannot be listed: {e}"))


def _problem(text: str, reason: str) -> dict:
    return {"file": text, "status": "rejected", "reason": reason, "clips": 0, "seconds_kept": 0.0}
