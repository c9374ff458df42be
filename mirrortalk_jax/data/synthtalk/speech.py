"""Synthetic speech with exact phoneme timings, from espeak-ng.

The pip package `espeakng-loader` ships `libespeak-ng.so` and its voice data, so no system package is needed.
We drive the C API through ctypes in synchronous mode with phoneme events switched on: the synth callback
hands us PCM chunks and, for every phoneme, its IPA name and the sample index where it starts. That gives
real speech audio whose phoneme timing is known exactly, which is what makes SynthTalk's lip-sync measurable.

espeak-ng keeps global state (one voice, one callback), so all calls go through one process-wide lock, and
each utterance runs in a freshly loaded copy of the library so earlier utterances cannot change it.
"""

from __future__ import annotations

import _ctypes
import atexit
import ctypes
import dataclasses
import os
import shutil
import tempfile
import threading
from math import gcd

import numpy as np
import scipy.signal

# espeak-ng API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4

PRIMARY_STRESS = "ˈ"
SECONDARY_STRESS = "ˌ"
PAUSE = "_"


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.POINTER(_Event))


@dataclasses.dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: language + variant, and prosody settings that make a speaker recognisable.

    Attributes:
      name: espeak voice name with variant, e.g. "en-us+m3".
      pitch: base pitch, 0-100 (espeak default 50).
      pitch_range: intonation range, 0-100 (0 = monotone).
      rate: speaking rate in words per minute (espeak default 175).
    """

    name: str = "en-us"
    pitch: int = 50
    pitch_range: int = 50
    rate: int = 175


@dataclasses.dataclass(frozen=True)
class Phoneme:
    """One phoneme of an utterance. Times are seconds from the start of the audio."""

    ipa: str  # IPA symbol(s) without stress marks; PAUSE for silence
    start: float
    end: float
    stress: int  # 0 unstressed, 1 secondary, 2 primary (the syllable nucleus carries the mark)
    word: int  # index of the word it belongs to, -1 for pauses


@dataclasses.dataclass(frozen=True)
class Utterance:
    audio: np.ndarray  # (N,) float32 in [-1, 1]
    sample_rate: int
    phonemes: tuple[Phoneme, ...]

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


class _Engine:
    """Runs espeak-ng in a freshly loaded library instance for every utterance.

    espeak-ng keeps static state (voicing phase, random generator) that carries over from one utterance to
    the next, even across espeak_Terminate/espeak_Initialize, so the same text would come out a few samples
    different depending on what was spoken before. Loading a private copy of the shared library and unloading
    it afterwards resets all of it: the audio becomes a pure function of (text, voice, seed), which the
    corpus needs to be reproducible. A load costs about 7 ms.
    """

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError as e:  # pragma: no cover - it is a hard dependency in setup.py
            raise ImportError("SynthTalk speech needs the pip package `espeakng-loader`: "
                              "pip install espeakng-loader") from e
        # A private copy, so that no other user of the library in this process keeps it loaded (dlclose
        # only unloads, and so resets, a library nobody else holds).
        self._tmpdir = tempfile.mkdtemp(prefix="mirrortalk-espeak-")
        atexit.register(shutil.rmtree, self._tmpdir, True)
        self._lib_path = os.path.join(self._tmpdir, "libespeak-ng.so")
        shutil.copyfile(espeakng_loader.get_library_path(), self._lib_path)
        self._data_path = espeakng_loader.get_data_path().encode()
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, str | int]] = []
        # Keep a reference: ctypes callbacks are freed when the Python object is collected.
        self._callback = _SynthCallback(self._on_synth)
        self.lock = threading.Lock()

    def _on_synth(self, wav, num_samples, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                self._events.append((ev.type, ev.sample, ev.id.string.decode("utf-8", "replace")))
            elif ev.type == _EVENT_WORD:
                self._events.append((ev.type, ev.sample, ev.id.number))
            i += 1
        return 0

    def synthesize(self, text: str, voice: Voice, seed: int) -> tuple[np.ndarray, int, list]:
        """Returns (int16 PCM, its sample rate, [(event type, start sample, phoneme or word number)])."""
        lib = ctypes.CDLL(self._lib_path, mode=os.RTLD_LOCAL)
        try:
            native_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data_path,
                                                _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA)
            if native_rate <= 0:
                raise RuntimeError(f"espeak_Initialize failed ({native_rate}) with data at {self._data_path!r}")
            lib.espeak_SetSynthCallback(self._callback)
            lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            if lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {voice.name!r} (expected e.g. 'en-us+m3')")
            for param, value in ((_PARAM_RATE, voice.rate), (_PARAM_PITCH, voice.pitch),
                                 (_PARAM_RANGE, voice.pitch_range), (_PARAM_VOLUME, 100)):
                lib.espeak_SetParameter(param, int(value), 0)
            self._chunks, self._events = [], []
            data = text.encode("utf-8")
            err = lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
            if err != 0:
                raise RuntimeError(f"espeak_Synth failed with error {err} for text {text!r}")
            lib.espeak_Terminate()
        finally:
            _ctypes.dlclose(lib._handle)
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return pcm, native_rate, list(self._events)


_ENGINE: _Engine | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Engine()
        return _ENGINE


def _parse_phonemes(events, num_native_samples: int, native_rate: int) -> tuple[Phoneme, ...]:
    """Turns (type, sample, payload) events into timed phonemes; a phoneme ends where the next begins."""
    starts: list[tuple[int, str, int, int]] = []  # (sample, ipa, stress, word)
    word = -1
    for etype, sample, payload in events:
        if etype == _EVENT_WORD:
            word += 1
            continue
        name = str(payload)
        stress = 2 if PRIMARY_STRESS in name else 1 if SECONDARY_STRESS in name else 0
        ipa = name.replace(PRIMARY_STRESS, "").replace(SECONDARY_STRESS, "")
        if not ipa:
            starts.append((sample, PAUSE, 0, -1))
        else:
            starts.append((sample, ipa, stress, max(word, 0)))
    phonemes = []
    for k, (sample, ipa, stress, w) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else num_native_samples
        if end <= sample:
            continue  # zero-length markers (espeak emits a few at word boundaries)
        phonemes.append(Phoneme(ipa, sample / native_rate, end / native_rate, stress, w))
    return tuple(phonemes)


def synthesize(text: str, voice: Voice = Voice(), sample_rate: int = 16000, seed: int = 0) -> Utterance:
    """Speaks `text` with `voice`; returns mono float32 audio at `sample_rate` and timed phonemes.

    The result is a deterministic function of the arguments (`seed` drives espeak-ng's small random
    variations), in any process and whatever was synthesized before.
    """
    if not text.strip():
        raise ValueError("synthesize() needs non-empty text")
    engine = _engine()
    with engine.lock:
        pcm, native_rate, events = engine.synthesize(text, voice, seed)
    if pcm.size == 0:
        raise RuntimeError(f"espeak-ng produced no audio for {text!r} with voice {voice}")
    audio = pcm.astype(np.float32) / 32768.0
    if sample_rate != native_rate:
        g = gcd(sample_rate, native_rate)
        audio = scipy.signal.resample_poly(audio, sample_rate // g, native_rate // g).astype(np.float32)
    audio = np.clip(audio, -1.0, 1.0)
    return Utterance(audio=audio, sample_rate=sample_rate,
                     phonemes=_parse_phonemes(events, pcm.size, native_rate))
