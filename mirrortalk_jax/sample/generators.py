"""One interface for every motion generator: frame-aligned audio + a style reference -> motion.

    generator = runs.loader.load_generator("runs/mirrortalk")           # any trained generator run
    motion = generator.generate(audio, reference, rng, num_steps=20)    # (B, T, D) numpy, any T
    sampler = generators.eval_sampler("mirrortalk")                     # traceable, for the trainer

Every consumer goes through this: the evaluation suite (evaluate/suite.py), the trainer's periodic samples and
previews (`eval_sampler`), `mirrortalk generate` and its Python API (generate/talking_face.py) and the exported
artifacts. None of them asks which model it holds. The non-learned baselines (sample/baselines.py) implement
it too.

Inputs, for every generator:
  audio      (B, T, F) float32 frame-aligned audio features (data.audio_features; `audio_feature` names the
             kind the generator was trained on): T motion frames at the dataset's fps.
  reference  `Reference`: (B, R, D) motion of a clip in the target style, its (B, R) valid mask and optionally
             its (B, R, F) audio (ICS-A2M's prompt; without it the prompt's audio is the features' mean).
  rng        one key; the same inputs and key give the same motion.
  frame_mask (B, T) bool, optional: False past the end of a shorter clip in a padded batch.
Sampling settings (keyword arguments) use one name per idea; a generator refuses the ones it has no use for:
  num_steps       DDIM / ODE steps (0: the run's own evaluation setting)
  chunk_frames    long audio in constant memory: chunks of this many frames (0: the training window)
  overlap_frames  frames each chunk continues from the previous one
  guidance        {"audio": w_a, "style": w_s, <region>: w_s of that region}; which keys a model reads is in
                  its class (MirrorTalk: all; DreamTalk and ICS-A2M: "style")
Compilation happens once per model structure and settings (sample/compiled.py), whatever the audio length
when chunked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.sample import compiled
from mirrortalk_jax.sample import diffusion as samplers
from mirrortalk_jax.sample import dreamtalk as dreamtalk_sampling
from mirrortalk_jax.sample import mimictalk as a2m_sampling
from mirrortalk_jax.sample import mirrortalk as mirrortalk_sampling

EvalSampler = Callable[[nnx.Module, dict[str, jax.Array], jax.Array], jax.Array]


@flax.struct.dataclass
class Reference:
    """A style reference, batched: motion (B, R, D), mask (B, R) bool, audio (B, R, F) or None."""

    motion: jax.Array | np.ndarray
    mask: jax.Array | np.ndarray
    audio: jax.Array | np.ndarray | None = None

    @classmethod
    def of_clips(cls, motions: list[np.ndarray], frames: int, audios: list[np.ndarray] | None = None) -> Reference:
        """Each clip's centre crop of `frames` frames (zero-padded and masked when shorter), stacked."""
        crops = [centre_crop(m, frames) for m in motions]
        audio = None if audios is None else np.stack([centre_crop(a, frames)[0] for a in audios])
        return cls(np.stack([m for m, _ in crops]), np.stack([k for _, k in crops]), audio)


def centre_crop(rows: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, F) -> the centre `frames` rows (frames, F) float32, zero-padded at the end when T is shorter, and the
    (frames,) mask of real rows."""
    start = max((rows.shape[0] - frames) // 2, 0)
    piece = rows[start:start + frames]
    out = np.zeros((frames, rows.shape[1]), np.float32)
    out[:len(piece)] = piece
    return out, np.arange(frames) < len(piece)


class MotionGenerator:
    """What every generator offers (see the module docstring). Subclasses set the class attributes and
    `generate`; `accepts` lists the sampling settings they read."""

    name: ClassVar[str] = ""
    accepts: ClassVar[frozenset[str]] = frozenset()
    guidance_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, spec: MotionSpec | None, audio_feature: str, reference_frames: int, window_frames: int):
        self.spec, self.audio_feature = spec, audio_feature
        self.reference_frames, self.window_frames = int(reference_frames), int(window_frames)

    def generate(self, audio: np.ndarray | jax.Array, reference: Reference, rng: jax.Array, *,
                 frame_mask: np.ndarray | None = None, **sampling: Any) -> np.ndarray:
        """(B, T, F) audio + reference -> (B, T, D) float32 motion."""
        raise NotImplementedError

    def check(self, audio, reference: Reference, sampling: Mapping[str, Any]) -> None:
        """Refuses settings the generator does not read and inputs of the wrong shape, naming what was expected."""
        unknown = sorted(set(sampling) - self.accepts)
        if unknown:
            raise TypeError(f"{self.name} generator takes the sampling settings {sorted(self.accepts)}; "
                            f"got {unknown}")
        extra = sorted(set(sampling.get("guidance") or {}) - self.guidance_keys)
        if extra:
            raise ValueError(f"{self.name} reads guidance {sorted(self.guidance_keys)}; got {extra}")
        if np.ndim(audio) != 3:
            raise ValueError(f"audio must be (B, T, F) frame-aligned features, got shape {np.shape(audio)}")
        if self.spec is not None and reference.motion.shape[-1] != self.spec.dim:
            raise ValueError(f"reference motion has {reference.motion.shape[-1]} channels; {self.name} generates "
                             f"the {self.spec.dim}-channel motion space {self.spec.name!r}")


class TrainedGenerator(MotionGenerator):
    """A generator backed by a trained (or converted) model."""

    def __init__(self, model: nnx.Module, config, spec: MotionSpec | None):
        data = config.get("data", {})
        super().__init__(spec, data.get("audio_feature", ""), int(data.get("reference_frames", 0)),
                         int(data.get("window_frames", 0)))
        self.model, self.config = model, config

    @staticmethod
    def sample_for_eval(model: nnx.Module, batch: dict[str, jax.Array], rng: jax.Array) -> jax.Array:
        """Motion for the held-out windows of a batch, traceable (the trainer's periodic samples)."""
        raise NotImplementedError


class MirrorTalkGenerator(TrainedGenerator):
    """DDIM on the region-gated diffusion transformer; long audio in overlapping inpainted chunks."""

    name = "mirrortalk"
    accepts = frozenset({"num_steps", "chunk_frames", "overlap_frames", "guidance", "sampler"})
    guidance_keys = frozenset({"audio", "style", "lower", "upper", "eyes", "pose"})
    sample_for_eval = staticmethod(mirrortalk_sampling.generate_for_eval)

    def guidance(self, scales: Mapping[str, float] | None) -> samplers.Guidance:
        if not scales:
            return samplers.NO_GUIDANCE
        regions = {k: v for k, v in scales.items() if k not in ("audio", "style")}
        style = float(scales.get("style", 1.0))
        return samplers.Guidance(float(scales.get("audio", 1.0)),
                                 samplers.region_scale_vector(self.spec, regions, style) if regions else style)

    def generate(self, audio, reference, rng, *, frame_mask=None, **sampling):
        self.check(audio, reference, sampling)
        chunk = int(sampling.get("chunk_frames") or self.window_frames or audio.shape[1])
        out = mirrortalk_sampling.generate(
            self.model, jnp.asarray(audio, jnp.float32), jnp.asarray(reference.motion, jnp.float32),
            jnp.asarray(reference.mask), rng, chunk_frames=chunk,
            overlap_frames=min(int(sampling.get("overlap_frames", 8)), max(chunk - 1, 0)),
            num_steps=int(sampling.get("num_steps") or self.model.eval_sampler_steps),
            sampler=sampling.get("sampler", "ddim"), guidance=self.guidance(sampling.get("guidance")))
        return np.array(out, np.float32)  # a writable copy


def _overrides(sampling: Mapping[str, Any], steps_key: str) -> dict[str, Any]:
    """The common settings a caller gave, under the sampler's own names: num_steps -> `steps_key`, guidance's
    style scale -> guidance_scale (absent ones keep the run's values)."""
    out: dict[str, Any] = {}
    if sampling.get("num_steps"):
        out[steps_key] = int(sampling["num_steps"])
    if sampling.get("guidance"):
        out["guidance_scale"] = float(sampling["guidance"]["style"])
    return out


class DreamTalkGenerator(TrainedGenerator):
    """DreamTalk's DDIM, every frame denoised from its own audio window (so any length in one pass); frames
    outside a clip read the features' mean, the zero rows the original sees there."""

    name = "dreamtalk"
    accepts = frozenset({"num_steps", "chunk_frames", "guidance"})  # chunks need no overlap: windows are per frame
    guidance_keys = frozenset({"style"})
    sample_for_eval = staticmethod(dreamtalk_sampling.generate_for_eval)

    def generate(self, audio, reference, rng, *, frame_mask=None, **sampling):
        self.check(audio, reference, sampling)
        model = self.model
        audio = np.asarray(audio, np.float32)
        if frame_mask is not None:
            audio = np.where(np.asarray(frame_mask)[..., None], audio, np.float32(model.audio_mean))
        b, t = audio.shape[:2]
        rows = audio.reshape(b, t * model.audio_stride, -1)
        settings = _overrides(sampling, "num_steps")
        if sampling.get("chunk_frames"):
            settings["chunk_frames"] = int(sampling["chunk_frames"])
        out = dreamtalk_sampling.sample_model(model, jnp.asarray(rows), jnp.asarray(reference.motion, jnp.float32),
                                              jnp.asarray(reference.mask), rng, **settings)
        return np.array(out, np.float32)  # a writable copy


class IcsA2MGenerator(TrainedGenerator):
    """MimicTalk's in-context flow matching: the reference clip (motion and, when known, its audio) is the prompt
    prepended in time; the run's `eval_sampling` (ODE grid, guidance on the prompt, temperature). Frames past a
    clip's end are masked out of attention, so padding a batch changes nothing."""

    name = "mimictalk_a2m"
    accepts = frozenset({"num_steps", "guidance"})  # one pass over the whole clip (TalkingFace.stream chunks it)
    guidance_keys = frozenset({"style"})
    sample_for_eval = staticmethod(a2m_sampling.generate_for_eval)

    def generate(self, audio, reference, rng, *, frame_mask=None, **sampling):
        self.check(audio, reference, sampling)
        model = self.model
        audio = np.asarray(audio, np.float32)
        b, t = audio.shape[:2]
        ref_frames = reference.motion.shape[1]
        prompt_audio = (np.full((b, ref_frames, audio.shape[-1]), model.audio_mean, np.float32)
                        if reference.audio is None else np.asarray(reference.audio, np.float32))
        frame_mask = np.ones((b, t), bool) if frame_mask is None else np.asarray(frame_mask, bool)
        audio = np.where(frame_mask[..., None], audio, np.float32(model.audio_mean))  # as a shorter clip's zeros
        settings = {**dict(model.eval_sampling), **_overrides(sampling, "steps")}
        rate = model.audio_rate
        out = a2m_sampling.generate(
            model, jnp.asarray(audio.reshape(b, t * rate, -1)), rng,
            prompt_motion=jnp.asarray(reference.motion, jnp.float32),
            prompt_audio=jnp.asarray(prompt_audio.reshape(b, ref_frames * rate, -1)),
            prompt_mask=jnp.asarray(reference.mask), frame_mask=jnp.asarray(frame_mask), **settings)
        return np.array(out, np.float32)  # a writable copy


class RegressionGenerator(TrainedGenerator):
    """The audio-only regression baseline (configs/synthtalk_regression.py): the reference is not read."""

    name = "audio_regression"

    def generate(self, audio, reference, rng, *, frame_mask=None, **sampling):
        self.check(audio, reference, {})  # sampling settings mean nothing to a regressor: ignored
        return np.array(compiled.bind(_regress, self.model)(jnp.asarray(audio, jnp.float32)), np.float32)


def _regress(model, audio):
    return model(audio)


TRAINED: dict[str, type[TrainedGenerator]] = {
    cls.name: cls for cls in (MirrorTalkGenerator, DreamTalkGenerator, IcsA2MGenerator, RegressionGenerator)}


def eval_sampler(model_name: str) -> EvalSampler | None:
    """`sample_for_eval` of the model's generator (traced inside the trainer's jitted step); None for models that
    do not sample motion (experts, style encoders, the regression baseline)."""
    cls = TRAINED.get(model_name)
    if cls is None or cls.sample_for_eval is TrainedGenerator.sample_for_eval:
        return None
    return cls.sample_for_eval
