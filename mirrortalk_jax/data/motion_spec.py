"""Named motion spaces: which channel of a per-frame motion vector means what.

Every dataset stores motion as a (T, D) float array in one motion space. A `MotionSpec` names the D channels
and groups them into facial regions (`lower`, `upper`, `eyes`, `pose`, ...). Region-wise models (per-region
tokens and gates) and region metrics (AED on expression, APD on pose) read the groups from the spec, so the
same code works for SynthTalk, mesh-PCA, BFM-64 or FLAME motion.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

import numpy as np

# Regions every motion space must name so that region-wise models and metrics apply unchanged.
REQUIRED_GROUPS = ("lower", "upper", "eyes", "pose")


@dataclasses.dataclass(frozen=True)
class MotionSpec:
    """A motion space: channel names, their grouping into facial regions, and the frame rate.

    Attributes:
      name: identifier stored in every record (e.g. "synthtalk_v1", "bfm64").
      channels: one name per motion channel, in storage order.
      groups: region name -> names of its channels. Groups are disjoint and cover every channel.
      fps: frames per second of the motion track.
    """

    name: str
    channels: tuple[str, ...]
    groups: Mapping[str, tuple[str, ...]]
    fps: float = 25.0

    def __post_init__(self):
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"MotionSpec {self.name!r}: duplicate channel names in {self.channels}")
        missing = [g for g in REQUIRED_GROUPS if g not in self.groups]
        if missing:
            raise ValueError(f"MotionSpec {self.name!r}: missing required groups {missing}")
        seen: dict[str, str] = {}
        for group, names in self.groups.items():
            for ch in names:
                if ch not in self.channels:
                    raise ValueError(f"MotionSpec {self.name!r}: group {group!r} names unknown channel {ch!r}")
                if ch in seen:
                    raise ValueError(
                        f"MotionSpec {self.name!r}: channel {ch!r} is in groups {seen[ch]!r} and {group!r}"
                    )
                seen[ch] = group
        uncovered = [c for c in self.channels if c not in seen]
        if uncovered:
            raise ValueError(f"MotionSpec {self.name!r}: channels {uncovered} belong to no group")
        # Freeze the mapping so the dataclass stays hashable in spirit (it is used as a static config).
        object.__setattr__(self, "groups", {g: tuple(c) for g, c in self.groups.items()})

    @property
    def dim(self) -> int:
        return len(self.channels)

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(self.groups)

    def index(self, channel: str) -> int:
        return self.channels.index(channel)

    def group_indices(self, group: str) -> np.ndarray:
        """Channel indices of `group`, in storage order. Shape (len(group),), int32."""
        if group not in self.groups:
            raise KeyError(f"MotionSpec {self.name!r} has no group {group!r}; groups: {self.group_names}")
        return np.array(sorted(self.index(c) for c in self.groups[group]), np.int32)

    def group_mask(self, groups: str | Sequence[str]) -> np.ndarray:
        """Boolean mask over channels, True for channels in any of `groups`. Shape (D,)."""
        groups = [groups] if isinstance(groups, str) else list(groups)
        mask = np.zeros(self.dim, bool)
        for g in groups:
            mask[self.group_indices(g)] = True
        return mask

    def region_assignment(self) -> np.ndarray:
        """Group id (position in `group_names`) of each channel. Shape (D,), int32."""
        out = np.empty(self.dim, np.int32)
        for gid, g in enumerate(self.group_names):
            out[self.group_indices(g)] = gid
        return out

    def split(self, motion: np.ndarray) -> dict[str, np.ndarray]:
        """Splits (..., D) motion into {group: (..., len(group))}."""
        if motion.shape[-1] != self.dim:
            raise ValueError(f"MotionSpec {self.name!r} expects {self.dim} channels, got shape {motion.shape}")
        return {g: motion[..., self.group_indices(g)] for g in self.group_names}

    def to_json(self) -> str:
        return json.dumps(
            {"name": self.name, "channels": list(self.channels),
             "groups": {g: list(c) for g, c in self.groups.items()}, "fps": self.fps},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> MotionSpec:
        d = json.loads(text)
        return cls(name=d["name"], channels=tuple(d["channels"]),
                   groups={g: tuple(c) for g, c in d["groups"].items()}, fps=float(d["fps"]))


# SynthTalk's motion space. Values are dimensionless activations; 0 is the neutral face.
SYNTHTALK_SPEC = MotionSpec(
    name="synthtalk_v1",
    channels=(
        # lower face: driven by speech content, scaled by the speaker's articulation style
        "jaw_open", "mouth_width", "lip_round", "lip_press", "lower_lip_tuck", "corner_pull",
        # upper face: brows and cheeks, driven by stress/energy and the speaker's expressiveness
        "brow_raise", "brow_furrow", "cheek_raise",
        # eyes: blinks and gaze
        "eye_close", "gaze_x", "gaze_y",
        # head pose: radians for rotations, face-width units for translations
        "pitch", "yaw", "roll", "tx", "ty", "tz",
    ),
    groups={
        "lower": ("jaw_open", "mouth_width", "lip_round", "lip_press", "lower_lip_tuck", "corner_pull"),
        "upper": ("brow_raise", "brow_furrow", "cheek_raise"),
        "eyes": ("eye_close", "gaze_x", "gaze_y"),
        "pose": ("pitch", "yaw", "roll", "tx", "ty", "tz"),
    },
    fps=25.0,
)
