"""How the corpora lay out their videos: which files are videos, and the speaker (and emotion, intensity, split)
their names carry.

    HDTF       <root>/**/WRA_KellyAyotte_000.mp4           speaker = name without the clip number
    CREMA-D    <root>/VideoFlash/1001_DFA_ANG_XX.flv       actor, sentence, emotion, intensity (LO/MD/HI/XX)
    MEAD       <root>/M003/video/front/angry/level_1/001.mp4   speaker, emotion, level; front view only
    VoxCeleb2  <root>/{dev,test}/mp4/id00012/21Uxsk56VDQ/00001.mp4   speaker; its own dev/test split
    generic    <root>/<speaker>/**/<clip>.<ext>            speaker = first folder under the root (files at
               the root: the file's name), or clustered by face identity (`speaker_from="identity"`)

Speaker-disjoint test splits: VoxCeleb2's own test speakers; for the others (no official split) the speakers
whose stable hash falls in the held-out fraction, or the list the user names (`--heldout_speakers`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from pathlib import PurePosixPath

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".flv", ".webm", ".m4v", ".mpg", ".mpeg")
CREMA_EMOTIONS = {"ANG": "angry", "DIS": "disgusted", "FEA": "fearful", "HAP": "happy", "NEU": "neutral",
                  "SAD": "sad"}
CREMA_LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}

Labels = dict[str, str]


@dataclasses.dataclass(frozen=True)
class Layout:
    """name: the dataset's name; labels(relative path) -> {"speaker": ..., optional "emotion", "intensity",
    "split"} or None for a file the corpus does not use (another camera view); heldout_fraction: share of
    speakers held out when the corpus has no split of its own."""

    name: str
    labels: Callable[[PurePosixPath], Labels | None]
    heldout_fraction: float = 0.1
    description: str = ""


def _hdtf(rel: PurePosixPath) -> Labels | None:
    return {"speaker": re.sub(r"_\d+$", "", rel.stem)}


def _crema_d(rel: PurePosixPath) -> Labels | None:
    parts = rel.stem.split("_")
    if len(parts) != 4 or not parts[0].isdigit():
        return None
    actor, sentence, emotion, level = parts
    return {"speaker": actor, "sentence": sentence, "emotion": CREMA_EMOTIONS.get(emotion, emotion.lower()),
            "intensity": CREMA_LEVELS.get(level, level.lower())}


def _mead(rel: PurePosixPath) -> Labels | None:
    parts = rel.parts
    if "video" not in parts:
        return None
    i = parts.index("video")
    if i < 1 or len(parts) < i + 5 or parts[i + 1] != "front":
        return None
    level = parts[i + 3].replace("level_", "")
    return {"speaker": parts[i - 1], "emotion": parts[i + 2], "intensity": level}


def _voxceleb2(rel: PurePosixPath) -> Labels | None:
    speaker = next((p for p in rel.parts if re.fullmatch(r"id\d+", p)), None)
    if speaker is None:
        return None
    labels = {"speaker": speaker}
    if "test" in rel.parts[:2]:
        labels["split"] = "heldout_speakers"
    return labels


def _generic(rel: PurePosixPath) -> Labels | None:
    return {"speaker": rel.parts[0] if len(rel.parts) > 1 else rel.stem}


LAYOUTS = {
    "hdtf": Layout("hdtf", _hdtf, description="HDTF: high-resolution talking faces from YouTube"),
    "crema_d": Layout("crema_d", _crema_d, description="CREMA-D: 91 actors, 6 emotions, 4 intensities"),
    "mead": Layout("mead", _mead, description="MEAD: 8 emotions at 3 intensities, front camera"),
    "voxceleb2": Layout("voxceleb2", _voxceleb2, heldout_fraction=0.0,
                        description="VoxCeleb2: celebrities in the wild, its own dev/test speakers"),
    "generic": Layout("generic", _generic, description="a folder per speaker"),
}


def layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise ValueError(f"unknown dataset layout {name!r}; known: {sorted(LAYOUTS)}")
    return LAYOUTS[name]


def is_heldout_speaker(speaker: str, fraction: float) -> bool:
    """Stable across runs and machines (a hash of the name, not Python's salted hash)."""
    digest = int(hashlib.sha1(speaker.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < fraction
