"""Personalization: a trained renderer adapted to one person from a short video (what `mirrortalk personalize` runs).

    result = personalize("runs/renderer", "her.mp4", "runs/her", Settings(steps=300))
    renderer = runs.loader.load_model(result.renderer).model      # loads like any renderer

Steps, each resumable (a re-run with the same OUT finishes what is missing):
  OUT/data      the video prepared like `mirrortalk data prepare` does, projected into the base renderer's motion
                space (its run records the basis); its last `tail_seconds` are split "heldout_tail" (validation),
                the first `seconds` before it are the training split (0: all of them)
  OUT/init      the personalized renderer at step 0 (models/renderer/personalized.py): the base's weights, the
                static appearance set from the base's one-shot encoding of the first training frame, LoRA B = 0
  OUT/run       a training run of the shared trainer from OUT/init: the base renderer's own data windows and
                losses, eval/psnr on the held-out tail; stopped runs resume exactly from their last checkpoint
  OUT/renderer  the result with the LoRA merged into the kernels (a converted folder: loader.load_model,
                `mirrortalk export renderer`); OUT/run keeps the adapters apart for inspection
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import ml_collections
import numpy as np
from flax import nnx

from mirrortalk_jax.data import publishing, schema
from mirrortalk_jax.data.sources import ClipSource, load_info
from mirrortalk_jax.models import registry
from mirrortalk_jax.models.renderer import personalized
from mirrortalk_jax.runs import converted, loader
from mirrortalk_jax.train import trainer

RENDERERS = ("motion_renderer", "pirenderer")
TAIL_SPLIT = "heldout_tail"


@dataclasses.dataclass(frozen=True)
class Settings:
    steps: int = 300
    rank: int = 2  # LoRA rank (MimicTalk's table: 2); 0: no LoRA
    static: bool = True  # optimise the person's appearance
    targets: tuple[str, ...] = (".*",)  # regexes over the base's kernel paths that get LoRA
    seconds: float = 0.0  # seconds of the video to adapt on (before the tail); 0: all
    tail_seconds: float = 2.0  # the video's last seconds, held out for validation
    learning_rate: float = 2e-3
    batch_size: int = 8
    eval_every: int = 50
    checkpoint_every: int = 50

    def __post_init__(self):
        if self.steps < 1 or self.rank < 0 or self.batch_size < 1:
            raise ValueError(f"need steps >= 1, rank >= 0, batch_size >= 1; got {self}")
        if not self.static and self.rank == 0:
            raise ValueError("nothing to adapt: give a LoRA rank > 0 or keep the static appearance")
        if self.tail_seconds <= 0:
            raise ValueError(f"tail_seconds must be > 0 (the held-out validation), got {self.tail_seconds}")


@dataclasses.dataclass(frozen=True)
class Result:
    data: Path
    run: Path
    renderer: Path
    base: Path


def base_renderer(run: str | os.PathLike) -> loader.StoredModel:
    """The base renderer's stored run, refused (ValueError naming it) unless it is a renderer trained on a
    prepared dataset, whose motion basis projects the person's video into its space."""
    stored = loader.stored_model(run, what="--renderer")
    name = stored.model_config.get("name")
    if name not in RENDERERS:
        raise ValueError(f"--renderer {run} holds a {name!r} model; personalization adapts a renderer: "
                         f"{list(RENDERERS)}")
    if stored.motion_basis is None:
        raise ValueError(f"--renderer {run} records no real-face motion basis: personalize a renderer trained on "
                         "a dataset from `mirrortalk data prepare` (configs/real_corpus.py:<corpus>,renderer or "
                         ",pirenderer), so the person's video can be projected into its motion space")
    return stored


def prepare_person(video: str | os.PathLike, out: Path, base: loader.StoredModel, settings: Settings,
                   log: Callable[[str], None] = print) -> Path:
    """`video` prepared into `out` (see the module docstring); a prepared dataset folder is used as it is (it must
    be in the base's motion space). ValueError naming the video when nothing usable comes out of it."""
    from mirrortalk_jax.data.prepare import builders, clips, dataset

    if (Path(video) / "dataset_info.json").is_file():
        spec = ClipSource(video, "train").spec
        if spec.dim != base.spec.dim or spec.name != base.spec.name:
            raise ValueError(f"--video {video}: a dataset in motion space {spec.name!r} ({spec.dim}); the renderer "
                             f"renders {base.spec.name!r} ({base.spec.dim})")
        return Path(video)
    wanted = {"video": os.fspath(video), "seconds": settings.seconds, "tail_seconds": settings.tail_seconds}
    record = out.parent / "data_settings.json"
    if (out / "dataset_info.json").is_file() and record.is_file():  # prepared by an earlier run of this job
        found = json.loads(record.read_text())
        if found != wanted:
            raise ValueError(f"{out} was prepared with {found}; this run asks for {wanted}: give a new --out")
        return out
    size = int(tuple(base.model_config.image_size)[0])
    prep = dataset.PrepareSettings(options=clips.Options(image_size=size, min_seconds=0.5), runner="local",
                                   basis=base.motion_basis, tail_seconds=settings.tail_seconds,
                                   head_seconds=settings.seconds)
    try:
        report = builders.prepare([os.fspath(video)], out, prep, log=log)
    except builders.DatasetNotWritten as e:
        raise ValueError(f"--video {video}: nothing to adapt on; {_reason(out)}") from e
    splits = set(load_info(out).splits)
    if TAIL_SPLIT not in splits:
        raise ValueError(f"--video {video}: too short to hold out its last {settings.tail_seconds:g} s for "
                         f"validation and adapt on the rest ({report['seconds']} s of face kept)")
    record.write_text(json.dumps(wanted))
    return out


def _reason(out: Path) -> str:
    try:
        entries = json.loads((out / "prepare_report.json").read_text())["entries"]
        return "; ".join(f"{e['status']}: {e['reason']}" for e in entries) or "no usable face segment"
    except (OSError, ValueError, KeyError):
        return "no usable face segment"


def training_config(base: loader.StoredModel, data: Path, settings: Settings, init: Path
                    ) -> ml_collections.ConfigDict:
    """The base run's own config (its data windows, losses, mesh) with the personalized model and schedule."""
    config = ml_collections.ConfigDict(base.config.to_dict())
    config.model = personalized.default_config(base.model_config, rank=settings.rank, static=settings.static,
                                               targets=settings.targets)
    config.data.dataset_dir = os.fspath(data)
    config.data.train_split, config.data.eval_split = "train", TAIL_SPLIT
    config.train.update(num_steps=settings.steps, batch_size=settings.batch_size,
                        learning_rate=settings.learning_rate, warmup_steps=min(20, settings.steps // 10),
                        final_lr_fraction=1.0, weight_decay=0.0, ema_decay=0.0, param_groups=(),
                        init_from=(("", os.fspath(init)),), eval_every=settings.eval_every,
                        checkpoint_every=settings.checkpoint_every, log_every=min(20, settings.steps))
    return config


def initial_model(base_run: Path, config: ml_collections.ConfigDict, data: Path) -> nnx.Module:
    """The personalized renderer at step 0: the base's weights, the appearance from the first training frame."""
    base = loader.load_model(base_run, what="--renderer")
    source = ClipSource(data, "train")
    model = registry.create_model(config.model, source.spec, nnx.Rngs(config.train.seed), renderer=base.model)
    if model.static:
        first = source[0]
        model.set_appearance(schema.decode_frames(first["frames"][:1])[0], np.asarray(first["motion"][0]))
    return model


def personalize(renderer: str | os.PathLike, video: str | os.PathLike, out: str | os.PathLike,
                settings: Settings = Settings(), log: Callable[[str], None] = print) -> Result:
    """Adapts the renderer at `renderer` (a training run on a prepared dataset) to the person in `video` (a video
    file or a prepared dataset), writing everything under `out` (see the module docstring)."""
    out = Path(out).expanduser()
    base = base_renderer(renderer)
    data = prepare_person(video, out / "data", base, settings, log)
    init = out / "init"
    config = training_config(base, data, settings, init)
    if not converted.is_converted(init):
        model = initial_model(Path(renderer), config, data)
        converted.save(init, nnx.state(model), model_config=config.model, motion_spec=base.spec,
                       source=f"{renderer} adapted to {video}", extra={"motion_basis": base.motion_basis})
    trainer.train_and_evaluate(config, out / "run")
    result = out / "renderer"
    if not converted.is_converted(result) or converted.load_meta(result).get("step") != settings.steps:
        run = loader.load_model(out / "run", what="personalized run")
        model, model_config = personalized.merged(run.model, run.model_config)
        # Written beside the result, then swapped in by one rename: an earlier (shorter) adaptation's result
        # stays whole until the new one is complete.
        staged = out / f".renderer.step{run.step}"
        shutil.rmtree(staged, ignore_errors=True)  # left by a run stopped between the save and the swap
        converted.save(staged, nnx.state(model), model_config=model_config, motion_spec=base.spec,
                       source=f"{renderer} adapted to {video} ({run.step} steps), LoRA merged",
                       extra={"motion_basis": base.motion_basis, "step": run.step,
                              "settings": dataclasses.asdict(settings)})
        publishing.publish(staged, result)
    return Result(data, out / "run", result, Path(renderer))
