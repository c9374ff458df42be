"""Paths that may live on an object store: one path type for local folders and gs:// (s3://, ...) URIs, and the
bridges for code that can only use local files.

    root = storage.path("gs://bucket/runs/x")            # etils.epath.Path; "~/runs/x" is expanded, made absolute
    with storage.local_file(root / "shard") as local:    # a C++ reader (ArrayRecord, PyAV) needs a local file
    with storage.local_output(root / "a.mp4") as local:  # a writer that needs one: uploaded when the block ends
    with storage.local_folder(root / "export", last=("manifest.json",)) as folder:  # the same for a folder
    mirror = storage.Mirror(root, pull=("metrics.jsonl",))  # appending writers write under mirror.local ...
    mirror.push()                                        # ... and push uploads the files that changed

The path type is etils' `epath` (what Orbax and TFDS use, so a checkpoint or dataset folder is named the same way
everywhere); gs:// goes through fsspec's gcsfs (`pip install 'mirrortalk_jax[gcs]'`). Object stores have neither
append nor rename: an appending writer (JSONL, TensorBoard event files, profiler traces) writes a local mirror
that is uploaded whole, and "write a temporary file, then rename it" becomes "write the final object", which
appears whole or not at all when its upload completes (`replace`). A folder is published on a store by writing
its marker file last (see runs/converted.py).

Tests point everything at a local emulator: STORAGE_EMULATOR_HOST for gcsfs and google-cloud-storage,
TENSORSTORE_GCS_HTTP_URL for Orbax's array writer (tests/gcs_emulator.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from etils import epath

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_remote(location: str | os.PathLike) -> bool:
    """gs://bucket/x, s3://..., not a local path (file:// URIs are local files to epath too)."""
    text = os.fspath(location)
    return _URI.match(text) is not None and not text.startswith("file://")


def path(location: str | os.PathLike) -> epath.Path:
    """`location` as an epath.Path: a URI as it is, a local path expanded ("~") and absolute.

    Raises ImportError with the install command when the URI's file system is not installed.
    """
    text = os.fspath(location)
    if is_remote(text):
        _require_filesystem(text)
        return epath.Path(text)
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


def _require_filesystem(uri: str) -> None:
    if uri.startswith("gs://"):
        try:
            import gcsfs  # noqa: F401
        except ImportError:
            raise ImportError(f"{uri}: reading and writing gs:// needs gcsfs; install it with "
                              "pip install 'mirrortalk_jax[gcs]'") from None


def cache_dir(kind: str, key: str) -> Path:
    """A local folder for copies of remote things of one `kind` ("shards", "prepare"), one per `key` (the remote
    location): under $MIRRORTALK_CACHE_DIR, else ~/.cache/mirrortalk_jax."""
    root = Path(os.environ.get("MIRRORTALK_CACHE_DIR") or "~/.cache/mirrortalk_jax").expanduser()
    return root / kind / hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def size(file: str | os.PathLike) -> int:
    """Bytes of `file` (local or remote)."""
    return int(epath.Path(file).stat().length)


def files_under(folder: str | os.PathLike) -> list[epath.Path]:
    """Every file below `folder`, sorted (epath has no recursive glob on object stores: it walks)."""
    folder = epath.Path(folder)
    scheme = os.fspath(folder).split("://")[0] + "://" if is_remote(folder) else ""
    # fsspec's walk names remote folders without their scheme ("bucket/x"): put it back.
    return sorted(epath.Path(root if is_remote(root) or not scheme else scheme + os.fspath(root)) / name
                  for root, _, names in folder.walk() for name in names)


def replace(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Moves the file `source` over `target`: one atomic rename locally; a copy then delete on an object store,
    where `target` (a single object) still appears whole or not at all."""
    if is_remote(source) or is_remote(target):
        copy_file(source, target)
        epath.Path(source).unlink()
    else:
        os.replace(source, target)


def move_folder(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Moves the folder `source` to `target` (which must not exist); file by file on an object store."""
    if not (is_remote(source) or is_remote(target)):
        shutil.move(os.fspath(source), os.fspath(target))
        return
    copy_folder(source, target)
    epath.Path(source).rmtree()


def copy_folder(source: str | os.PathLike, target: str | os.PathLike, *, last: Sequence[str] = ()) -> None:
    """Copies every file below `source` to the same relative path below `target`, either side local or remote.

    `last`: relative names copied after all the others, so a reader that takes their presence as "complete"
    (a marker file) never sees the folder half-copied.
    """
    source, target = epath.Path(source), epath.Path(target)
    files = files_under(source)
    relative = [f.relative_to(source).as_posix() for f in files]
    order = sorted(range(len(files)), key=lambda i: relative[i] in last)
    for i in order:
        destination = target / relative[i]
        destination.parent.mkdir(parents=True, exist_ok=True)
        copy_file(files[i], destination)


@contextlib.contextmanager
def local_file(location: str | os.PathLike) -> Iterator[Path]:
    """A local path holding the file `location`: itself, or a temporary copy of a remote file (removed after)."""
    if not is_remote(location):
        yield Path(os.fspath(location))
        return
    source = path(location)
    with tempfile.TemporaryDirectory(prefix="mirrortalk_download_") as tmp:
        local = Path(tmp) / f"file{PurePosixPath(os.fspath(location)).suffix}"
        copy_file(source, local)
        yield local


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copies one file, either side local or remote (epath's own copy stays within one file system)."""
    if not (is_remote(source) or is_remote(target)):
        shutil.copyfile(source, target)
        return
    with epath.Path(source).open("rb") as src, epath.Path(target).open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


@contextlib.contextmanager
def local_output(location: str | os.PathLike) -> Iterator[Path]:
    """A local path to write the file `location` to: itself (its folder created), or a temporary file uploaded
    to `location` when the block ends without an error."""
    target = path(location)
    if not is_remote(target):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        yield Path(target)
        return
    with tempfile.TemporaryDirectory(prefix="mirrortalk_upload_") as tmp:
        local = Path(tmp) / target.name
        yield local
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_file(local, target)


@contextlib.contextmanager
def local_folder(location: str | os.PathLike, *, last: Sequence[str] = ()) -> Iterator[Path]:
    """A local folder to write the folder `location` in: itself (created), or a temporary folder uploaded to
    `location` when the block ends without an error, the relative names in `last` (its marker files) last."""
    target = path(location)
    if not is_remote(target):
        Path(target).mkdir(parents=True, exist_ok=True)
        yield Path(target)
        return
    with tempfile.TemporaryDirectory(prefix="mirrortalk_upload_") as tmp:
        yield Path(tmp)
        copy_folder(tmp, target, last=last)


class Mirror:
    """A local folder standing for `root`: `root` itself when it is local; else a temporary folder whose changed
    files `push` uploads to the same relative paths under `root`.

    pull: relative names downloaded first when they exist under `root` (a log the run appends to on resume).
    """

    def __init__(self, root: str | os.PathLike, *, pull: Sequence[str] = ()):
        self.root = path(root)
        self.remote = is_remote(self.root)
        self._tmp = tempfile.TemporaryDirectory(prefix="mirrortalk_mirror_") if self.remote else None
        self.local = Path(self._tmp.name) if self.remote else Path(self.root)
        self.local.mkdir(parents=True, exist_ok=True)
        self._pushed: dict[str, tuple[int, int]] = {}
        for name in pull if self.remote else ():
            if (self.root / name).exists():
                (self.local / name).parent.mkdir(parents=True, exist_ok=True)
                copy_file(self.root / name, self.local / name)
                self._pushed[name] = self._signature(self.local / name)

    @staticmethod
    def _signature(file: Path) -> tuple[int, int]:
        stat = file.stat()
        return stat.st_size, stat.st_mtime_ns

    def push(self) -> None:
        """Uploads every file under `local` that changed since the last push (whole: stores cannot append)."""
        if not self.remote:
            return
        for file in sorted(p for p in self.local.rglob("*") if p.is_file()):
            name = file.relative_to(self.local).as_posix()
            signature = self._signature(file)
            if self._pushed.get(name) != signature:
                (self.root / name).parent.mkdir(parents=True, exist_ok=True)
                copy_file(file, self.root / name)
                self._pushed[name] = signature

    def close(self) -> None:
        """Pushes what is left and removes the temporary folder."""
        try:
            self.push()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
