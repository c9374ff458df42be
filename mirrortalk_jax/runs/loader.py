"""The one loader of models on disk: training runs (a workdir with checkpoints/) and converted checkpoints (a
folder with model.json, written by tools/convert_*.py), and how composite models get their parts.

    loaded = loader.load_model("runs/motion_expert")            # the trained model (EMA weights when kept)
    config, spec = loader.stored_model("ckpt/dreamtalk")        # what is stored, read without any arrays
    recipe = loader.recipe(config.model, spec)                  # factory(rngs) + the runs to load into it

A trained run is restored parameters-only: the train state's params (or EMA params) and model state are read,
the optimizer moments never are. A run stores the configs of the parts it was built with (a frozen expert, a
pretrained style encoder), so loading it needs only its own folder.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
from etils import epath
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from mirrortalk_jax import storage
from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.models import abstract, registry
from mirrortalk_jax.runs import checkpointing, converted

Factory = Callable[[nnx.Rngs], nnx.Module]


@dataclasses.dataclass
class LoadedRun:
    model: nnx.Module
    config: ml_collections.ConfigDict  # the run's config ({"model": ...} only for a converted checkpoint)
    spec: MotionSpec | None
    step: int  # 0 for a converted checkpoint

    @property
    def model_config(self) -> ml_collections.ConfigDict:
        return self.config.model


@dataclasses.dataclass(frozen=True)
class StoredModel:
    """What a run or converted checkpoint stores about its model, read without any arrays."""

    config: ml_collections.ConfigDict  # the full config of a run; {"model": ...} for a converted checkpoint
    spec: MotionSpec | None  # None: a converted checkpoint that records no motion space
    parts: Mapping[str, Any]  # {part: stored part} the model was built with (see `Recipe.parts`)
    step: int
    run_dir: epath.Path  # local or gs://
    motion_basis: str | None = None  # the dataset's fitted mesh basis (JSON) for a real-face motion space

    @property
    def model_config(self) -> ml_collections.ConfigDict:
        return self.config.model


def is_training_run(path: str | os.PathLike) -> bool:
    return (storage.path(path) / "checkpoints").is_dir()


def _open(run_dir: epath.Path) -> checkpointing.Checkpointer:
    ckpt = checkpointing.Checkpointer(run_dir / "checkpoints", async_save=False)
    if ckpt.latest_step() is None:
        ckpt.close()
        raise FileNotFoundError(f"{run_dir / 'checkpoints'} holds no finished checkpoint")
    return ckpt


def stored_model(path: str | os.PathLike, *, expect: str | None = None, what: str = "checkpoint",
                 step: int | None = None) -> StoredModel:
    """The config, motion space and part configs stored at `path` (no arrays are read).

    expect: the registry model name it must hold (e.g. "pirenderer"); `what` names `path` in messages.
    """
    path = storage.path(path)
    if converted.is_converted(path):
        meta = converted.load_meta(path)
        stored = StoredModel(ml_collections.ConfigDict(meta["config"]), converted.motion_spec(path),
                             {}, 0, path)
    elif is_training_run(path):
        ckpt = _open(path)
        try:
            step = ckpt.latest_step() if step is None else step
            meta = ckpt.saved_meta(step)
        finally:
            ckpt.close()
        stored = StoredModel(ml_collections.ConfigDict(meta["config"]), MotionSpec.from_json(meta["motion_spec"]),
                             meta.get("parts") or {}, step, path, meta.get("motion_basis"))
    elif not path.exists():
        raise FileNotFoundError(f"{what} {path}: no such folder")
    else:
        raise FileNotFoundError(f"{what} {path}: neither a converted checkpoint (a folder with model.json, as "
                                "tools/convert_*.py write) nor a training run (a workdir with checkpoints/)")
    if expect is not None and stored.model_config.get("name") != expect:
        raise ValueError(f"{what} {path} holds a {stored.model_config.get('name')!r} model; expected a {expect!r} "
                         "checkpoint")
    return stored


# ----- Composite models: parts from runs -----

@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to build a registry model whose parts may come from runs.

    factory: rngs -> the model with all its parts (fresh weights; nothing is read from disk).
    init_from: (subtree, run dir) pairs whose weights a fresh training run loads into the model.
    parts: {part: {"model": config, "motion_spec": json or None, "parts": {...}}} of the parts taken from runs,
      stored in a run's checkpoint so that loading it needs no other folder.
    """

    factory: Factory
    init_from: tuple[tuple[str, str], ...]
    parts: Mapping[str, Any]


def _check_part_space(run: str, run_spec: MotionSpec | None, spec: MotionSpec | None, same_name: bool) -> None:
    if spec is None or run_spec is None:
        return
    if run_spec.dim != spec.dim or (same_name and run_spec.name != spec.name):
        raise ValueError(f"{run} was trained on motion space {run_spec.name!r} ({run_spec.dim} channels); "
                         f"this model uses {spec.name!r} ({spec.dim})")


def recipe(model_config: ml_collections.ConfigDict, spec: MotionSpec | None, *,
           stored_parts: Mapping[str, Any] | None = None) -> Recipe:
    """The recipe of `model_config` on `spec`.

    A part taken from a run is built from that run's stored config (its architecture) and listed in `init_from`
    (its weights); `stored_parts` (what a run recorded) replaces reading the part runs, so a trained composite
    run loads without them. A part built from a sub-config may itself take parts from runs: those are listed
    under its subtree ("style_encoder/content_encoder").
    """
    built: dict[str, Recipe] = {}
    init_from: list[tuple[str, str]] = []
    stored: dict[str, Any] = {}
    for name, part in registry.parts_of(model_config.name).items():
        run = registry.part_run(model_config, part)
        if run:
            saved = (stored_parts or {}).get(name)
            if saved is not None:
                part_config = ml_collections.ConfigDict(saved["model"])
                part_spec = MotionSpec.from_json(saved["motion_spec"]) if saved.get("motion_spec") else None
                nested = saved.get("parts") or {}
            else:
                found = stored_model(run, what=f"model.{part.run_key}")
                part_config, part_spec, nested = found.model_config, found.spec, found.parts
            _check_part_space(run, part_spec, spec, part.same_motion_space)
            built[name] = recipe(part_config, part_spec or spec, stored_parts=nested)
            init_from.append((name, run))
            stored[name] = {"model": part_config.to_dict(),
                            "motion_spec": part_spec.to_json() if part_spec is not None else None,
                            "parts": dict(built[name].parts)}
        elif part.config_key is not None:
            sub = recipe(model_config[part.config_key], spec,
                         stored_parts=((stored_parts or {}).get(name) or {}).get("parts"))
            built[name] = sub
            init_from += [(f"{name}/{subtree}", sub_run) for subtree, sub_run in sub.init_from]
            if sub.parts:
                stored[name] = {"parts": dict(sub.parts)}

    drawn_after = [name for name, part in registry.parts_of(model_config.name).items()
                   if registry.part_run(model_config, part) and not part.drawn_first]

    def factory(rngs: nnx.Rngs) -> nnx.Module:
        parts = {n: r.factory(rngs) for n, r in built.items() if n not in drawn_after}
        if not drawn_after:
            return registry.create_model(model_config, spec, rngs, **parts)
        # Parts from runs that are drawn after the composite's layers (`Part.drawn_first`): built from a copy
        # of the stream, whose draws are then counted on `rngs` once the composite has drawn its own.
        scratch = nnx.clone(rngs)
        start = {name: stream.count[...] for name, stream in scratch.items()}
        parts |= {n: built[n].factory(scratch) for n in drawn_after}
        model = registry.create_model(model_config, spec, rngs, **parts)
        for name, stream in rngs.items():
            stream.count[...] = stream.count[...] + scratch[name].count[...] - start[name]
        return model
    return Recipe(factory, tuple(init_from), stored)


def architecture(path: str | os.PathLike, spec: MotionSpec | None, rngs: nnx.Rngs) -> nnx.Module:
    """A freshly initialised model with the architecture stored at `path` (no weights are read)."""
    found = stored_model(path)
    _check_part_space(str(path), found.spec, spec, True)
    return recipe(found.model_config, found.spec or spec, stored_parts=found.parts).factory(rngs)


# ----- Loading weights -----

def load_model(path: str | os.PathLike, *, step: int | None = None, use_ema: bool = True, expect: str | None = None,
               what: str = "checkpoint") -> LoadedRun:
    """The model stored at `path` with its weights: a run's EMA parameters when it kept them and `use_ema`.

    Trained runs are restored parameters-only, replicated on this process's devices (the caller re-shards what
    it keeps); converted checkpoints onto the default device. `expect` / `what`: see `stored_model`.
    """
    found = stored_model(path, expect=expect, what=what, step=step)
    build = recipe(found.model_config, found.spec, stored_parts=found.parts).factory
    build_abstract = lambda: build(nnx.Rngs(0))  # noqa: E731
    if found.step == 0 and converted.is_converted(found.run_dir):
        variables = converted.restore(found.run_dir, abstract.abstract_variables(build_abstract))
        return LoadedRun(abstract.merge(build_abstract, variables), found.config, found.spec, 0)
    return LoadedRun(_restore_trained(found, build_abstract, use_ema), found.config, found.spec, found.step)


def _restore_trained(found: StoredModel, build: Callable[[], nnx.Module], use_ema: bool) -> nnx.Module:
    """The model of a training run's checkpoint (parameters-only restore), replicated on this process's devices."""
    graphdef, params, rest = nnx.split(nnx.eval_shape(build), nnx.Param, ...)
    replicated = NamedSharding(jax.sharding.Mesh(jax.local_devices(), ("devices",)), PartitionSpec())
    # Targets in the train state's own structure (nnx.State of Variables), on this process's devices.
    target = lambda tree: jax.tree.map(  # noqa: E731
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), tree)
    ckpt = _open(found.run_dir)
    try:
        fields = ckpt.restore_fields(found.step, {"params": target(params), "ema_params": target(params),
                                                  "model_state": target(rest)})
    finally:
        ckpt.close()
    chosen = fields["ema_params"] if use_ema and fields["ema_params"] is not None else fields["params"]
    return nnx.merge(graphdef, chosen, fields["model_state"])


def load_generator(path: str | os.PathLike, *, expect: str | None = None, what: str = "generator"):
    """The motion generator (sample/generators.py) of a trained run or converted checkpoint, chosen by its model
    name; refused, naming `what`, when the model does not generate motion."""
    from mirrortalk_jax.sample import generators

    name = stored_model(path, expect=expect, what=what).model_config.name
    if name not in generators.TRAINED:
        raise ValueError(f"{what} {path}: model {name!r} does not generate motion; generators: "
                         f"{sorted(generators.TRAINED)}")
    run = load_model(path, expect=name, what=what)
    return generators.TRAINED[name](run.model, run.config, run.spec)
