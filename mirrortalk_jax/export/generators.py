"""Motion generators as jax.export artifacts: MirrorTalk and MimicTalk's ICS-A2M, one window of audio -> motion.

    export_generator("runs/hdtf/mirrortalk", "artifacts/mirrortalk")     # mirrortalk export generator ...
    motion = runtime.load("artifacts/mirrortalk")(audio=..., reference_motion=..., reference_mask=...,
                                                  reference_audio=..., seed=np.int32(0))["motion"]

The artifact is the generator's `sample_for_eval`-free sampling path with its run's evaluation settings baked in
(DDIM steps for MirrorTalk; the ODE grid, prompt guidance and temperature for ICS-A2M): it takes `window` frames
of frame-aligned audio features (the manifest names the kind and its frontend), a style reference and a seed, and
returns the motion of those frames. The batch is symbolic. Longer speech is cut into windows by the caller and
joined with a cross-fade, as `generate/talking_face.py`'s streaming does; the motion then drives an exported
renderer (export/renderers.py). Both load with export/runtime.py: jax and numpy only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp

from mirrortalk_jax.export.artifact import DEFAULT_PLATFORMS, ExportSpec, TensorSpec, export_model
from mirrortalk_jax.export.runtime import BATCH
from mirrortalk_jax.runs import loader
from mirrortalk_jax.sample import generators
from mirrortalk_jax.sample import mimictalk as a2m_sampling
from mirrortalk_jax.sample import mirrortalk as mirrortalk_sampling


def _mirrortalk(model, audio, reference_motion, reference_mask, reference_audio, seed):
    del reference_audio  # the SDSE reads motion only
    style = model.style_code(reference_motion, reference_mask > 0.5)
    return {"motion": mirrortalk_sampling.sample(model, audio, style, jax.random.key(seed),
                                                 num_steps=model.eval_sampler_steps)}


def _ics_a2m(model, audio, reference_motion, reference_mask, reference_audio, seed):
    b, t, _ = audio.shape
    rate, frames = model.audio_rate, reference_motion.shape[1]
    out = a2m_sampling.sample(model, audio.reshape(b, t * rate, -1), rng=jax.random.key(seed),
                              prompt_motion=reference_motion,
                              prompt_audio=reference_audio.reshape(b, frames * rate, -1),
                              prompt_mask=reference_mask > 0.5, frame_mask=jnp.ones((b, t), bool),
                              **dict(model.eval_sampling))
    return {"motion": out["motion"]}


APPLY = {"mirrortalk": _mirrortalk, "mimictalk_a2m": _ics_a2m}


def generator_spec(generator: generators.TrainedGenerator, audio_width: int, window: int) -> ExportSpec:
    spec, r = generator.spec, max(generator.reference_frames, 1)
    motion = f"motion in the {spec.name!r} space ({spec.dim} channels)"
    return ExportSpec(
        inputs=(TensorSpec("audio", (BATCH, window, audio_width), description=(
                    f"{generator.audio_feature} features per 25 fps frame (data/audio_features.py)")),
                TensorSpec("reference_motion", (BATCH, r, spec.dim), description=f"the style reference's {motion}, "
                           "a centre crop, zero-padded"),
                TensorSpec("reference_mask", (BATCH, r), description="1 on the reference's real frames, 0 on padding"),
                TensorSpec("reference_audio", (BATCH, r, audio_width), description=(
                    "the reference's audio features (ICS-A2M's prompt; ignored by MirrorTalk)")),
                TensorSpec("seed", (), "int32", "the sampling noise's seed")),
        outputs=(TensorSpec("motion", (BATCH, window, spec.dim), description=motion),),
        apply=APPLY[generator.name],
        conventions={"frame_rate": spec.fps, "window_frames": window, "reference_frames": r,
                     "audio_feature": generator.audio_feature, "motion_space": spec.to_json(),
                     "sampling": {"mirrortalk": "DDIM, the run's eval_sampler_steps, no guidance",
                                  "mimictalk_a2m": "the run's eval_sampling"}[generator.name],
                     "long_audio": "windows joined by a cross-fade of their overlap (generate/talking_face.py)"})


def export_generator(run: str | os.PathLike, out_dir: str | os.PathLike, *, window: int | None = None,
                     platforms: Sequence[str] = DEFAULT_PLATFORMS) -> Path:
    """Exports a trained MirrorTalk or ICS-A2M run (window: frames per call, default its training window)."""
    generator = loader.load_generator(run, what="--checkpoint")
    if generator.name not in APPLY:
        raise ValueError(f"--checkpoint {run} holds a {generator.name!r} model; exportable generators: "
                         f"{sorted(APPLY)}")
    window = int(window or generator.window_frames)
    return export_model(generator.model, generator_spec(generator, _audio_width(generator), window), out_dir,
                        model_name=generator.name, platforms=platforms,
                        model_config=generator.config.model.to_dict(),
                        source={"training_run": Path(run).name})


def _audio_width(generator: generators.TrainedGenerator) -> int:
    """Frame-aligned feature width of the run's audio_feature (log-mel or MFCC of the default frontend)."""
    import numpy as np

    from mirrortalk_jax.data import audio_features

    return audio_features.audio_frame_features(np.zeros(16000, np.float32), 25,
                                               kind=generator.audio_feature).shape[1]
