"""Publishing a finished dataset folder atomically, so readers never see a half-written one."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def publish(built: Path, final: Path) -> None:
    """Moves the finished folder `built` to `final` in one rename; an existing `final` is moved aside first and
    removed once the new one is in place."""
    trash = None
    if final.exists():
        trash = final.parent / f".old-{uuid.uuid4().hex[:8]}"
        os.replace(final, trash)
    os.replace(built, final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
