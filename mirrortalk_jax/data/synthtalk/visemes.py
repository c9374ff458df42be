"""Content -> motion: phonemes to mouth-shape (viseme) trajectories at the video frame rate.

Each phoneme gets a target mouth shape on the articulation channels and a per-channel *dominance*: how
strongly it pulls the trajectory towards its target. The trajectory is the dominance-weighted mean of all
targets (the Cohen-Massaro coarticulation model): vowels set the jaw, bilabials (p b m) dominate lip closure
so the lips really meet, and weak phonemes such as /h/ take their shape from their neighbours.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from mirrortalk_jax.data.synthtalk.speech import PAUSE, Phoneme

# The articulation channels that content drives, in SYNTHTALK_SPEC order.
ARTICULATION_CHANNELS = ("jaw_open", "mouth_width", "lip_round", "lip_press", "lower_lip_tuck")

# (jaw_open, mouth_width, lip_round) of vowel qualities; a diphthong glides between two of these.
_VOWELS: dict[str, tuple[float, float, float]] = {
    "i": (0.22, 0.7, 0.0), "ɪ": (0.3, 0.5, 0.0), "ᵻ": (0.3, 0.45, 0.0), "y": (0.22, -0.5, 0.9),
    "e": (0.45, 0.5, 0.0), "ɛ": (0.52, 0.4, 0.0), "æ": (0.75, 0.5, 0.0), "a": (0.85, 0.2, 0.0),
    "ɑ": (0.9, 0.0, 0.1), "ɒ": (0.8, -0.2, 0.4), "ɔ": (0.6, -0.4, 0.7), "o": (0.5, -0.5, 0.8),
    "ʊ": (0.35, -0.4, 0.7), "u": (0.25, -0.7, 1.0), "ʌ": (0.6, 0.1, 0.0), "ə": (0.4, 0.0, 0.0),
    "ɐ": (0.45, 0.0, 0.0), "ɜ": (0.4, -0.1, 0.3), "ɚ": (0.35, -0.15, 0.35), "ɝ": (0.35, -0.15, 0.35),
}
# Consonant classes: (jaw, width, round, press, tuck) targets and per-channel dominance.
_CONSONANTS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "bilabial": ((0.08, 0.0, 0.0, 1.0, 0.0), (3.0, 0.5, 0.5, 20.0, 1.0)),
    "labiodental": ((0.12, 0.1, 0.0, 0.0, 1.0), (2.0, 0.5, 0.5, 1.0, 20.0)),
    "dental": ((0.2, 0.1, 0.0, 0.0, 0.0), (1.0, 0.5, 0.5, 1.0, 1.0)),
    "alveolar": ((0.14, 0.2, 0.0, 0.0, 0.0), (1.2, 0.4, 0.4, 1.0, 1.0)),
    "postalveolar": ((0.14, -0.4, 0.6, 0.0, 0.0), (1.2, 2.0, 2.0, 1.0, 1.0)),
    "velar": ((0.25, 0.0, 0.0, 0.0, 0.0), (0.6, 0.3, 0.3, 1.0, 1.0)),
    "rounded": ((0.14, -0.7, 1.0, 0.0, 0.0), (1.0, 3.0, 3.0, 1.0, 1.0)),
    "palatal": ((0.14, 0.5, 0.0, 0.0, 0.0), (1.0, 1.5, 1.5, 1.0, 1.0)),
    "rhotic": ((0.2, -0.3, 0.4, 0.0, 0.0), (0.8, 1.5, 1.5, 1.0, 1.0)),
    "glottal": ((0.2, 0.0, 0.0, 0.0, 0.0), (0.1, 0.1, 0.1, 0.3, 0.3)),
}
_CONSONANT_CLASS = {
    "p": "bilabial", "b": "bilabial", "m": "bilabial",
    "f": "labiodental", "v": "labiodental",
    "θ": "dental", "ð": "dental",
    "t": "alveolar", "d": "alveolar", "n": "alveolar", "l": "alveolar", "s": "alveolar", "z": "alveolar",
    "ɾ": "alveolar", "ɫ": "alveolar",
    "ʃ": "postalveolar", "ʒ": "postalveolar",
    "k": "velar", "g": "velar", "ɡ": "velar", "ŋ": "velar", "x": "velar",
    "w": "rounded", "ʍ": "rounded",
    "j": "palatal",
    "ɹ": "rhotic", "r": "rhotic",
    "h": "glottal", "ʔ": "glottal",
}
# Vowels hold the lips apart firmly (press/tuck dominance), or bilabial closures would bleed into them.
_VOWEL_DOMINANCE = (2.0, 1.0, 1.0, 4.0, 4.0)
_PAUSE_TARGET = ((0.0, 0.0, 0.0, 0.15, 0.0), (1.0, 1.0, 1.0, 1.0, 1.0))
# Seconds outside its own interval over which a phoneme's dominance falls (Gaussian in the distance): short
# enough that a 35 ms /p/ closes the lips fully yet does not pull on the middle of the neighbouring vowels.
_DOMINANCE_REACH = 0.035


@dataclasses.dataclass(frozen=True)
class Keyframe:
    time: float  # seconds
    target: tuple[float, ...]  # one value per ARTICULATION_CHANNELS
    dominance: tuple[float, ...]
    start: float  # the interval of the phoneme it belongs to
    end: float


def phoneme_class(ipa: str) -> str:
    """'pause', 'vowel', a consonant class name, or 'other' for symbols we do not model."""
    if ipa == PAUSE:
        return "pause"
    if any(ch in _VOWELS for ch in ipa):
        return "vowel"
    for ch in ipa:
        if ch in _CONSONANT_CLASS:
            return _CONSONANT_CLASS[ch]
    return "other"


def _keyframes(ph: Phoneme) -> list[Keyframe]:
    mid = 0.5 * (ph.start + ph.end)
    kind = phoneme_class(ph.ipa)
    if kind == "vowel":
        qualities = [_VOWELS[ch] for ch in ph.ipa if ch in _VOWELS]
        # Stressed vowels are articulated more fully.
        gain = 1.0 + 0.15 * ph.stress / 2
        def target(q):
            return (min(q[0] * gain, 1.0), q[1], q[2], 0.0, 0.0)
        if len(qualities) == 1:
            return [Keyframe(mid, target(qualities[0]), _VOWEL_DOMINANCE, ph.start, ph.end)]
        dur = ph.end - ph.start
        return [Keyframe(ph.start + 0.3 * dur, target(qualities[0]), _VOWEL_DOMINANCE, ph.start, ph.end),
                Keyframe(ph.start + 0.85 * dur, target(qualities[-1]), _VOWEL_DOMINANCE, ph.start, ph.end)]
    if kind == "pause":
        tgt, dom = _PAUSE_TARGET
    elif kind == "other":
        tgt, dom = _CONSONANTS["glottal"]
    else:
        tgt, dom = _CONSONANTS[kind]
    return [Keyframe(mid, tgt, dom, ph.start, ph.end)]


def frame_times(num_frames: int, fps: float) -> np.ndarray:
    """Centre time of each video frame: frame t covers [t/fps, (t+1)/fps). Shape (T,)."""
    return (np.arange(num_frames) + 0.5) / fps


def articulation_track(phonemes: Sequence[Phoneme], num_frames: int, fps: float) -> np.ndarray:
    """Coarticulated articulation channels sampled at the frame centres. Shape (T, 5) float32.

    Inside its own phoneme interval a keyframe has full dominance; outside, it decays as a Gaussian of
    the distance to that interval, so neighbours blend in at the phoneme boundaries.
    """
    keys = [k for ph in phonemes for k in _keyframes(ph)]
    if not keys:
        return np.zeros((num_frames, len(ARTICULATION_CHANNELS)), np.float32)
    t = frame_times(num_frames, fps)[:, None]  # (T, 1)
    start = np.array([k.start for k in keys])[None]  # (1, K)
    end = np.array([k.end for k in keys])[None]
    centre = np.array([k.time for k in keys])[None]
    gap = np.maximum(np.maximum(start - t, t - end), 0.0)  # distance outside the interval, (T, K)
    # Within an interval holding two keyframes (diphthongs), favour the nearer one.
    closeness = np.exp(-np.abs(t - centre) / (4 * _DOMINANCE_REACH))
    weight_time = np.exp(-((gap / _DOMINANCE_REACH) ** 2)) * closeness  # (T, K)
    dom = np.array([k.dominance for k in keys])  # (K, C)
    tgt = np.array([k.target for k in keys])  # (K, C)
    w = weight_time[:, :, None] * dom[None]  # (T, K, C)
    track = (w * tgt[None]).sum(1) / np.maximum(w.sum(1), 1e-8)
    return track.astype(np.float32)


def stress_envelope(phonemes: Sequence[Phoneme], num_frames: int, fps: float, width: float = 0.12) -> np.ndarray:
    """Per-frame prominence in [0, 1]: a bump on each stressed vowel. Shape (T,) float32.

    Drives style channels tied to emphasis (brow raises, nods) without any dependence on who speaks.
    """
    t = frame_times(num_frames, fps)
    env = np.zeros(num_frames)
    for ph in phonemes:
        if ph.stress and phoneme_class(ph.ipa) == "vowel":
            mid = 0.5 * (ph.start + ph.end)
            env = np.maximum(env, (ph.stress / 2) * np.exp(-0.5 * ((t - mid) / width) ** 2))
    return env.astype(np.float32)


def frame_phoneme_index(phonemes: Sequence[Phoneme], num_frames: int, fps: float) -> np.ndarray:
    """Index into `phonemes` of the phoneme sounding at each frame centre, -1 where none. Shape (T,) int32."""
    t = frame_times(num_frames, fps)
    out = np.full(num_frames, -1, np.int32)
    for i, ph in enumerate(phonemes):
        out[(t >= ph.start) & (t < ph.end)] = i
    return out
