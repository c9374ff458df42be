"""Torch-free renderer artifacts: a converted (or trained) renderer -> jax.export computation + weights + manifest.

    export_renderer("ckpt/dreamtalk/renderer", "exports/pirenderer")        # a converted checkpoint folder
    export_renderer(model, "exports/pirenderer", config=model_config)      # or a model in memory
    mirrortalk export renderer --checkpoint ckpt/dreamtalk/renderer --out exports/pirenderer
    mirrortalk export renderer --checkpoint runs/renderer_base --out exports/renderer   # a trained run

Each renderer registry model names its interface in SPECS (inputs, outputs, conventions); adding another
renderer is one more entry. The artifact is run by runtime.py with jax + numpy only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import ml_collections
from flax import nnx

from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.export.artifact import (
    BATCH,
    DEFAULT_PLATFORMS,
    ExportSpec,
    TensorSpec,
    directory_sha256,
    export_model,
)


def pirenderer_spec(config: ml_collections.ConfigDict, image_size: tuple[int, int],
                    spec: MotionSpec | None = None) -> ExportSpec:
    """PIRenderer (DreamTalk's renderer): portrait + per-frame 27-frame motion windows -> rendered frames.
    A PIRenderer trained on a dataset's motion space (coeff_nc 0 in its config) reads that space's width."""
    from mirrortalk_jax.models.pirenderer import renderer as pirenderer

    coeff_nc = config.coeff_nc or (spec.dim if spec is not None else 0)
    if coeff_nc <= 0:
        raise ValueError("exporting a PIRenderer of a dataset's motion space needs that space (its run records it)")
    h, w = image_size
    window = 2 * pirenderer.SEMANTIC_RADIUS + 1
    image = (BATCH, h, w, config.image_nc)
    return ExportSpec(
        inputs=(TensorSpec("source_image", image, description=(
                    "the portrait, RGB in [-1, 1] (uint8 / 127.5 - 1), one copy per frame")),
                TensorSpec("driving_source", (BATCH, window, coeff_nc), description=(
                    f"per frame, the motion of frames i-{pirenderer.SEMANTIC_RADIUS}..i+{pirenderer.SEMANTIC_RADIUS}"
                    " (clamped at the clip ends) x " + (
                        "coefficients: 64 BFM expression, 3 angles, 3 translation, 3 crop (s, tx, ty)"
                        if config.coeff_nc else f"the {spec.name!r} motion channels {list(spec.channels)}")))),
        outputs=(TensorSpec("fake_image", image, description="the rendered frames, RGB in [-1, 1] (tanh)"),),
        apply=lambda model, source_image, driving_source: {"fake_image": model.render(source_image, driving_source)},
        conventions={
            "layout": "NHWC, batch first (frames along the batch)",
            "image_size": [h, w],
            "value_range": "images in [-1, 1]; to uint8 as the original demo: clip to [-1, 1], then "
                           "uint8((x + 1) / 2 * 255) (truncation)",
            "motion_window": {"frames": window, "radius": pirenderer.SEMANTIC_RADIUS,
                              "edges": "repeat the first / last frame"},
            "frame_rate": 25,
            "original": "ali-vilab/dreamtalk generators/face_model.py FaceGenerator (PIRenderer), net_G_ema",
        })


def motion_renderer_spec(config: ml_collections.ConfigDict, image_size: tuple[int, int],
                         spec: MotionSpec | None = None) -> ExportSpec:
    """Our renderer: portrait + its motion + the target frame's motion -> the frame, per frame (no window)."""
    if spec is None:
        raise ValueError("exporting a motion_renderer needs its motion space (a trained run records it)")
    h, w = image_size
    image = (BATCH, h, w, 3)
    motion = f"motion in the {spec.name!r} space, channels {list(spec.channels)}"
    return ExportSpec(
        inputs=(TensorSpec("source_image", image, description=(
                    "the portrait, RGB in [-1, 1] (uint8 / 127.5 - 1), one copy per frame")),
                TensorSpec("source_motion", (BATCH, spec.dim), description=f"the portrait's own {motion}"),
                TensorSpec("driving_motion", (BATCH, spec.dim), description=f"each frame's target {motion}")),
        outputs=(TensorSpec("image", image, description="the rendered frames, RGB in [-1, 1] (clipped)"),),
        apply=lambda model, source_image, source_motion, driving_motion: {
            "image": model.render(source_image, source_motion, driving_motion)},
        conventions={
            "layout": "NHWC, batch first (frames along the batch)",
            "image_size": [h, w],
            "value_range": "images in [-1, 1]; to uint8: round((clip(x, -1, 1) + 1) * 127.5)",
            "motion_space": spec.to_json(),
            "frame_rate": spec.fps,
            "original": "mirrortalk_jax models/renderer/motion_renderer.py",
        })


def personalized_spec(config: ml_collections.ConfigDict, image_size: tuple[int, int],
                      spec: MotionSpec | None = None) -> ExportSpec:
    """A personalized renderer (models/renderer/personalized.py, LoRA merged): its base renderer's interface.
    With a static appearance the portrait inputs are still taken, so one runtime serves both, but ignored: the
    person's optimised appearance is drawn."""
    import dataclasses

    base = SPECS[config.renderer_model.name](config.renderer_model, image_size, spec)
    names = [t.name for t in base.inputs]
    output = base.outputs[0].name

    def apply(model, *inputs):
        given = dict(zip(names, inputs))
        driving = inputs[-1]
        return {output: model.render_frames(given["source_image"], given.get("source_motion"), driving)}

    note = ("the person's optimised appearance is drawn; source inputs are ignored" if config.static else
            "a one-shot renderer with person-adapted weights")
    return dataclasses.replace(base, apply=apply, conventions={**base.conventions, "personalized": note})


# Registry model name -> its export interface.
SPECS: dict[str, Callable[..., ExportSpec]] = {
    "pirenderer": pirenderer_spec,
    "motion_renderer": motion_renderer_spec,
    "personalized_renderer": personalized_spec,
}


def export_renderer(model_or_run: nnx.Module | str | os.PathLike, out_dir: str | os.PathLike, *,
                    config: ml_collections.ConfigDict | None = None, spec: MotionSpec | None = None,
                    image_size: Sequence[int] | None = None, platforms: Sequence[str] = DEFAULT_PLATFORMS) -> Path:
    """Exports a renderer: a training run's workdir or a converted checkpoint folder (runs.loader.load_model),
    or a model with its `config` (and motion `spec` for renderers of a motion space).

    `image_size` (H, W): default the config's `image_size` (256x256 for the released PIRenderer). The batch
    size stays symbolic. The manifest records where the weights came from: the original checkpoint's sha256
    when a converter recorded it and the converted folder's, or the run and its step. Training-only parts (the
    losses' discriminator) are left out.
    """
    source: dict[str, object] = {}
    if isinstance(model_or_run, str | os.PathLike):
        from mirrortalk_jax.runs import converted, loader

        directory = Path(model_or_run)
        loaded = loader.load_model(directory, what="renderer")
        model, config, spec = loaded.model, loaded.model_config, loaded.spec
        if converted.is_converted(directory):
            meta = converted.load_meta(directory)
            source = {"checkpoint": meta.get("source") or None, "sha256": meta.get("source_sha256"),
                      "converted_checkpoint": directory.name, "converted_sha256": directory_sha256(directory)}
        else:
            source = {"training_run": directory.name, "step": loaded.step}
    else:
        model = model_or_run
        if config is None:
            raise ValueError("pass config= (the model's config) when exporting a model object")
    if config.name not in SPECS:
        raise ValueError(f"no export interface for model {config.name!r}; renderers known: {sorted(SPECS)}")
    size = tuple(int(s) for s in (image_size or config.get("image_size", (256, 256))))
    if len(size) != 2:
        raise ValueError(f"image_size must be (height, width), got {size}")
    # The training objective (discriminator, perceptual net) is no part of it, at any depth (a personalized
    # renderer holds its base's).
    holders = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.Module) and getattr(m, "training_only", ())]
    for holder in holders:
        for name in holder.training_only:
            setattr(holder, name, None)
    return export_model(model, SPECS[config.name](config, size, spec), out_dir, model_name=config.name,
                        platforms=platforms, model_config=config.to_dict(), source=source)