"""Style -> motion: per-speaker speaking style, independent of what is said.

A `SpeakerStyle` is drawn once per speaker and stored in every record as ground truth. `compose_motion`
combines a content track (articulation + stress, from the phonemes) with a style into the full 18-channel
SynthTalk motion. Style never moves phoneme timing: it scales, biases and adds motion on top of it, and the
random parts (blinks, sway phase) come from a per-clip generator.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from mirrortalk_jax.data.synthtalk.visemes import ARTICULATION_CHANNELS

# Seconds a blink takes, close + open.
_BLINK_DURATION = 0.24


@dataclasses.dataclass(frozen=True)
class SpeakerStyle:
    """How a speaker talks. Ranges are those `sample` draws from."""

    articulation_gain: float = 1.0  # [0.55, 1.45] how wide the mouth opens and how far lips round/spread
    lip_corner_bias: float = 0.0  # [-0.5, 0.6] resting smile (+) or frown (-)
    brow_gain: float = 0.5  # [0, 1] brow raise on stressed syllables
    brow_bias: float = 0.0  # [-0.3, 0.3] resting brow height
    blink_rate: float = 15.0  # [6, 30] blinks per minute
    sway_amplitude: float = 0.05  # [0.01, 0.12] radians of idle head sway
    sway_frequency: float = 0.3  # [0.15, 0.6] Hz
    nod_gain: float = 0.05  # [0, 0.14] radians of pitch nod on stressed syllables
    expression_intensity: float = 0.6  # [0.2, 1.0] scales smiles, cheek raise, furrows

    @classmethod
    def sample(cls, rng: np.random.Generator) -> SpeakerStyle:
        u = rng.uniform
        return cls(articulation_gain=u(0.55, 1.45), lip_corner_bias=u(-0.5, 0.6), brow_gain=u(0.0, 1.0),
                   brow_bias=u(-0.3, 0.3), blink_rate=u(6.0, 30.0), sway_amplitude=u(0.01, 0.12),
                   sway_frequency=u(0.15, 0.6), nod_gain=u(0.0, 0.14), expression_intensity=u(0.2, 1.0))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_array(self) -> np.ndarray:
        """Shape (9,) float32, in `names()` order."""
        return np.array([getattr(self, n) for n in self.names()], np.float32)

    @classmethod
    def from_array(cls, values: np.ndarray) -> SpeakerStyle:
        return cls(**{n: float(v) for n, v in zip(cls.names(), np.asarray(values), strict=True)})


def _smooth(x: np.ndarray, fps: float, seconds: float) -> np.ndarray:
    """Gaussian smoothing along time (axis 0), edge-padded so the clip ends are not pulled to zero."""
    sigma = seconds * fps
    radius = max(int(3 * sigma), 1)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(x, [(radius, radius)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    return np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, pad)


def blink_track(num_frames: int, fps: float, rate_per_minute: float, rng: np.random.Generator) -> np.ndarray:
    """Eye closure in [0, 1] with blinks at Poisson times (minimum 0.5 s apart). Shape (T,)."""
    duration = num_frames / fps
    t = (np.arange(num_frames) + 0.5) / fps
    out = np.zeros(num_frames)
    time = rng.exponential(60.0 / rate_per_minute) * 0.5  # the first blink comes sooner on average
    while time < duration:
        # A trapezoid: the lid is fully shut for the middle third of the blink, so every blink closes the
        # eye in at least one frame whatever its phase relative to the frame grid.
        out = np.maximum(out, np.clip(1.5 * (1 - np.abs(t - time) / (_BLINK_DURATION / 2)), 0, 1))
        time += max(rng.exponential(60.0 / rate_per_minute), 0.5)
    return out


def compose_motion(articulation: np.ndarray, stress: np.ndarray, style: SpeakerStyle, fps: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Full SynthTalk motion from content and style.

    Args:
      articulation: (T, 5) from `visemes.articulation_track`, channels ARTICULATION_CHANNELS.
      stress: (T,) prominence in [0, 1] from `visemes.stress_envelope`.
      style: the speaker's style.
      fps: frame rate.
      rng: per-clip generator for blinks, gaze and sway phase.
    Returns:
      (T, 18) float32 motion in SYNTHTALK_SPEC channel order.
    """
    spec = SYNTHTALK_SPEC
    num_frames = articulation.shape[0]
    t = np.arange(num_frames) / fps
    art = dict(zip(ARTICULATION_CHANNELS, articulation.T, strict=True))
    m = np.zeros((num_frames, spec.dim), np.float64)

    def put(name, value):
        m[:, spec.index(name)] = value

    g = style.articulation_gain
    intensity = style.expression_intensity
    # Lower face: the gain scales how far the mouth moves; closure and f/v tuck are kept as they are,
    # because a bilabial closes the lips whoever speaks.
    put("jaw_open", np.clip(g * art["jaw_open"], 0.0, 1.0))
    put("mouth_width", np.clip(g * art["mouth_width"] + 0.3 * style.lip_corner_bias, -1.0, 1.0))
    put("lip_round", np.clip(g * art["lip_round"], 0.0, 1.0))
    put("lip_press", art["lip_press"])
    put("lower_lip_tuck", art["lower_lip_tuck"])
    corner = style.lip_corner_bias * (0.5 + 0.5 * intensity) + 0.25 * intensity * stress * np.sign(
        style.lip_corner_bias)
    put("corner_pull", np.clip(corner, -1.0, 1.0))
    # Upper face: brows lift with emphasis; a frowning speaker furrows.
    put("brow_raise", np.clip(style.brow_bias + style.brow_gain * stress, -1.0, 1.0))
    put("brow_furrow", np.clip(intensity * max(-style.lip_corner_bias, 0.0) * (0.6 + 0.4 * stress), 0.0, 1.0))
    put("cheek_raise", np.clip(intensity * np.maximum(corner, 0.0), 0.0, 1.0))
    # Eyes: blinks and a slow wandering gaze.
    put("eye_close", blink_track(num_frames, fps, style.blink_rate, rng))
    gaze = _smooth(rng.normal(0.0, 1.0, (num_frames, 2)), fps, 0.4)
    put("gaze_x", np.clip(0.6 * gaze[:, 0], -1.0, 1.0))
    put("gaze_y", np.clip(0.4 * gaze[:, 1], -1.0, 1.0))
    # Head pose: idle sway at the speaker's own amplitude and frequency, plus nods on stressed syllables.
    phase = rng.uniform(0, 2 * np.pi, 3)
    a, f = style.sway_amplitude, style.sway_frequency
    nod = style.nod_gain * _smooth(stress[:, None], fps, 0.06)[:, 0]
    put("pitch", 0.6 * a * np.sin(2 * np.pi * f * t + phase[0]) + nod)
    put("yaw", a * np.sin(2 * np.pi * 0.73 * f * t + phase[1]))
    put("roll", 0.4 * a * np.sin(2 * np.pi * 1.31 * f * t + phase[2]))
    put("tx", 0.3 * m[:, spec.index("yaw")])
    put("ty", -0.2 * m[:, spec.index("pitch")])
    put("tz", 0.1 * a * np.sin(2 * np.pi * 0.5 * f * t + phase[0]))
    return m.astype(np.float32)
