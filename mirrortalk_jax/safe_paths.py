"""File names read from files (an artifact's manifest, a sharded checkpoint's index) must stay in their folder.

    path = plain_file_in(folder, name)   # folder/name, or UnsafePathError saying why not

A manifest or index comes with the folder it describes, so the names in it are data, not paths: a name like
`../x`, `/etc/passwd` or `/dev/zero` would make a loader read (or hang on) something outside the folder. Only
plain names of regular files directly inside the folder are accepted, and the check runs before anything is
opened.

This module imports only the standard library and nothing from mirrortalk_jax: `export/runtime.py` uses it and
must run copied out of the package (copy this file next to it).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class UnsafePathError(ValueError):
    """A name that is not a plain file name, or that names no regular file in the folder."""


def is_plain_name(name: object) -> bool:
    """True for a non-empty file name without any folder part: no separator, not absolute, not '.' or '..'."""
    if not isinstance(name, str) or name in ("", ".", ".."):
        return False
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    # "\0" would make open() fail with a confusing error; a drive ("C:x") would leave the folder on Windows.
    return not any(s in name for s in separators) and "\0" not in name and not os.path.splitdrive(name)[0]


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISLNK, "symbolic link"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"),
             (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "special file")


def plain_file_in(folder: str | os.PathLike, name: object) -> Path:
    """`folder / name` if `name` is a plain file name of a regular file directly inside `folder`.

    Raises UnsafePathError naming the file and what was expected otherwise, before anything is opened.
    """
    if not is_plain_name(name):
        raise UnsafePathError(f"{name!r} is not a plain file name (expected a name without folder part, "
                              "not absolute, not '.' or '..')")
    path = Path(folder) / name
    # lstat, not stat or open: it describes the entry itself without following a symbolic link (which may point
    # anywhere outside the folder) and without opening it (opening a FIFO blocks until a writer comes, reading a
    # device like /dev/zero never ends). S_ISREG then accepts regular files only, which have a finite size.
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise UnsafePathError(f"{path}: no such file") from None
    except OSError as e:
        raise UnsafePathError(f"{path}: cannot be inspected ({e.strerror})") from e
    if not stat.S_ISREG(mode):
        raise UnsafePathError(f"{path} is a {_kind(mode)}, expected a regular file")
    return path
