"""SynthTalk's cast and script: who says what in which split, and how one clip is made.

Everything is a pure function of (config, seed): the same config always yields the same records, on any
machine and in any process, which is what lets a builder fan clips out over worker processes.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from mirrortalk_jax.data import schema
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from mirrortalk_jax.data.synthtalk import face, raster, speech, style, visemes
from mirrortalk_jax.data.synthtalk.sentences import SENTENCES

# espeak-ng variants that sound clearly different from each other.
_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
             "Andy", "Annie", "edward", "linda", "john", "grandma", "Mike", "belinda", "Alex", "adam")
SPLITS = ("train", "heldout_sentences", "heldout_speakers")


@dataclasses.dataclass(frozen=True)
class SynthTalkConfig:
    """Scale knobs of a SynthTalk build. Build time grows linearly with the number of clips.

    Clip counts: train = train_speakers * sentences_per_speaker; heldout_sentences = train_speakers *
    heldout_sentences; heldout_speakers = heldout_speakers * (sentences_per_speaker + heldout_sentences).
    """

    name: str = "default"
    seed: int = 0
    train_speakers: int = 24
    heldout_speakers: int = 6
    sentences_per_speaker: int = 16  # drawn per speaker from the training sentences
    heldout_sentences: int = 4  # the last sentences of the list, never seen in training
    image_size: int = 128
    with_frames: bool = True
    fps: float = schema.FPS
    sample_rate: int = schema.AUDIO_SAMPLE_RATE

    def __post_init__(self):
        available = len(SENTENCES) - self.heldout_sentences
        if not 0 < self.sentences_per_speaker <= available:
            raise ValueError(f"sentences_per_speaker={self.sentences_per_speaker} must be in [1, {available}]")
        if self.train_speakers < 2:
            raise ValueError("SynthTalk needs at least 2 training speakers (triplet losses need negatives)")
        if self.image_size < 32:
            raise ValueError(f"image_size={self.image_size} is too small to draw a face (minimum 32)")


VARIANTS = {
    "tiny": SynthTalkConfig(name="tiny", train_speakers=4, heldout_speakers=2, sentences_per_speaker=4,
                            heldout_sentences=2, image_size=64),
    "default": SynthTalkConfig(),
}


@dataclasses.dataclass(frozen=True)
class Speaker:
    index: int
    name: str
    voice: speech.Voice
    style: style.SpeakerStyle
    shape: face.FaceShape
    appearance: raster.Appearance


@dataclasses.dataclass(frozen=True)
class ClipPlan:
    split: str
    speaker: int
    sentence: int

    @property
    def clip_id(self) -> str:
        return f"spk{self.speaker:03d}_sent{self.sentence:03d}"


def make_speaker(cfg: SynthTalkConfig, index: int) -> Speaker:
    rng = np.random.default_rng([cfg.seed, index, 0])
    voice = speech.Voice(name=f"en-us+{_VARIANTS[index % len(_VARIANTS)]}", pitch=int(rng.integers(20, 81)),
                         pitch_range=int(rng.integers(20, 91)), rate=int(rng.integers(135, 206)))
    return Speaker(index=index, name=f"spk{index:03d}", voice=voice, style=style.SpeakerStyle.sample(rng),
                   shape=face.FaceShape.sample(rng), appearance=raster.Appearance.sample(rng))


def plan_clips(cfg: SynthTalkConfig) -> dict[str, list[ClipPlan]]:
    """Which speaker reads which sentence, per split. Speakers and sentences are split disjointly."""
    train_sentences = np.arange(len(SENTENCES) - cfg.heldout_sentences)
    heldout_sentences = np.arange(len(SENTENCES) - cfg.heldout_sentences, len(SENTENCES))
    plans: dict[str, list[ClipPlan]] = {s: [] for s in SPLITS}
    for spk in range(cfg.train_speakers + cfg.heldout_speakers):
        rng = np.random.default_rng([cfg.seed, spk, 1])
        chosen = np.sort(rng.choice(train_sentences, cfg.sentences_per_speaker, replace=False))
        if spk < cfg.train_speakers:
            plans["train"] += [ClipPlan("train", spk, int(s)) for s in chosen]
            plans["heldout_sentences"] += [ClipPlan("heldout_sentences", spk, int(s)) for s in heldout_sentences]
        else:
            plans["heldout_speakers"] += [ClipPlan("heldout_speakers", spk, int(s))
                                          for s in np.concatenate([chosen, heldout_sentences])]
    return plans


def make_clip(cfg: SynthTalkConfig, plan: ClipPlan) -> dict:
    """Generates one record (see `schema.clip_features`) for `plan`."""
    spk = make_speaker(cfg, plan.speaker)
    text = SENTENCES[plan.sentence]
    speech_seed = (cfg.seed * 1_000_003 + plan.speaker * 1009 + plan.sentence) % (2**31)
    utt = speech.synthesize(text, spk.voice, cfg.sample_rate, seed=speech_seed)
    samples_per_frame = cfg.sample_rate / cfg.fps
    num_frames = int(np.ceil(len(utt.audio) / samples_per_frame))
    # Pad the audio with silence to a whole number of frames so audio and motion end together exactly.
    audio = np.pad(utt.audio, (0, int(round(num_frames * samples_per_frame)) - len(utt.audio)))

    articulation = visemes.articulation_track(utt.phonemes, num_frames, cfg.fps)
    stress = visemes.stress_envelope(utt.phonemes, num_frames, cfg.fps)
    rng = np.random.default_rng([cfg.seed, plan.speaker, plan.sentence, 2])
    motion = style.compose_motion(articulation, stress, spk.style, cfg.fps, rng)
    lm3d = face.landmarks_3d(motion, spk.shape)
    lm2d = face.project(lm3d, cfg.image_size)

    record = {
        "clip_id": plan.clip_id,
        "speaker": spk.name,
        "speaker_index": np.int32(spk.index),
        "fps": np.float32(cfg.fps),
        "sample_rate": np.int32(cfg.sample_rate),
        "audio": audio.astype(np.float32),
        "motion": motion,
        "landmarks_3d": lm3d.astype(np.float32),
        "landmarks_2d": lm2d.astype(np.float32),
        "style_params": spk.style.to_array(),
        "transcript": text,
        "metadata": json.dumps({
            "split": plan.split,
            "sentence_index": plan.sentence,
            "voice": dataclasses.asdict(spk.voice),
            "style": dataclasses.asdict(spk.style),
            "face_shape": spk.shape.to_array().tolist(),
            "appearance": spk.appearance.to_array().tolist(),
            "phonemes": [[p.ipa, round(p.start, 5), round(p.end, 5), p.stress] for p in utt.phonemes],
        }),
    }
    if cfg.with_frames:
        gaze = motion[:, [SYNTHTALK_SPEC.index("gaze_x"), SYNTHTALK_SPEC.index("gaze_y")]]
        frames = raster.render_frames(lm2d, spk.appearance, cfg.image_size, gaze=gaze)
        record["frames"] = [schema.encode_png(f) for f in frames]
    return record

