"""Model factories by name, so a config picks the model without the trainer importing it.

Composite models receive their parts (a pretrained style encoder, a frozen expert) already built; a factory never
reads another run from disk. A factory declares its parts when it registers:

    @register("mirrortalk", parts={"style_encoder": Part("style_encoder_workdir", "style_encoder"),
                                   "motion_expert": Part("motion_expert_workdir")})
    def create(config, spec, rngs, *, style_encoder, motion_expert=None): ...

`create_model` builds a part from its sub-config itself (no disk); a part that comes from a run (trained workdir
or converted folder) is built by the caller (`runs.loader.recipe`, which the trainer and `loader.load_model` use
to load its weights). A model names the parts it keeps frozen in `frozen_parts`; `frozen_subtrees` collects them
over the whole model.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
from flax import nnx

from mirrortalk_jax.data.motion_spec import MotionSpec


class TrainableModel(Protocol):
    """What the trainer needs from a model."""

    def loss(self, batch: dict[str, jax.Array], rng: jax.Array, train: bool) -> tuple[jax.Array, dict[str, Any]]:
        """Scalar loss and a dict of scalar metrics for a global batch."""


@dataclasses.dataclass(frozen=True)
class Part:
    """A module a composite model receives instead of constructing it.

    run_key: the model-config field naming a run (training workdir or converted folder) to take the part from,
      architecture and weights; empty or absent in the config: not from a run.
    config_key: otherwise, the model-config field holding a registry model config to build the part from, fresh
      (trained with the composite model); None: the part is absent then (the model may build its own).
    """

    run_key: str
    config_key: str | None = None
    same_motion_space: bool = True  # False: any motion space of the data's width (e.g. a style source)
    # When a part from a run draws its initial weights (replaced by the run's, so only the draws it takes matter):
    # True: from the composite's stream before the composite's own layers (a composite that reads the part's
    # widths); False: as if after them, so the composite's own initialisation is the same with or without it.
    # A part built from a sub-config always draws first.
    drawn_first: bool = False


Factory = Callable[..., nnx.Module]  # (config, spec, rngs, **parts) -> model


@dataclasses.dataclass(frozen=True)
class _Entry:
    factory: Factory
    parts: Mapping[str, Part]


_ENTRIES: dict[str, _Entry] = {}
# Model name -> module that registers it; only the module of the requested model is imported.
_MODULES = {
    "audio_regression": "mirrortalk_jax.models.baselines.regression",
    "motion_expert": "mirrortalk_jax.models.mirrortalk.motion_expert",
    "style_encoder": "mirrortalk_jax.models.mirrortalk.style_encoder",
    "mirrortalk": "mirrortalk_jax.models.mirrortalk.generator",
    "dreamtalk": "mirrortalk_jax.models.dreamtalk.denoiser",
    "dreamtalk_lip_expert": "mirrortalk_jax.models.dreamtalk.lip_expert",
    "dreamtalk_style_predictor": "mirrortalk_jax.models.dreamtalk.style_predictor",
    "pirenderer": "mirrortalk_jax.models.pirenderer.renderer",
    "motion_renderer": "mirrortalk_jax.models.renderer.motion_renderer",
    "personalized_renderer": "mirrortalk_jax.models.renderer.personalized",
    "syncnet": "mirrortalk_jax.models.syncnet.model",
    "vgg19": "mirrortalk_jax.models.vgg.vgg19",
    "mimictalk_a2m": "mirrortalk_jax.models.mimictalk.a2m",
    "hubert": "mirrortalk_jax.models.audio_encoders.wav2vec2",
    "wav2vec2": "mirrortalk_jax.models.audio_encoders.wav2vec2",
}


def register(name: str, parts: Mapping[str, Part] | None = None) -> Callable[[Factory], Factory]:
    def wrap(factory: Factory) -> Factory:
        if name in _ENTRIES:
            raise ValueError(f"model {name!r} registered twice")
        _ENTRIES[name] = _Entry(factory, dict(parts or {}))
        return factory
    return wrap


def _entry(name: str) -> _Entry:
    if name not in _ENTRIES:  # user code may have registered its own model already
        if name not in _MODULES:
            raise ValueError(f"unknown model {name!r}; known: {sorted(set(_MODULES) | set(_ENTRIES))}")
        importlib.import_module(_MODULES[name])  # registers its factory
    return _ENTRIES[name]


def parts_of(name: str) -> Mapping[str, Part]:
    """The parts the registry model `name` receives."""
    return _entry(name).parts


def part_run(model_config, part: Part) -> str:
    """The run a part comes from according to `model_config` ("" when none)."""
    return str(model_config.get(part.run_key, "") or "")


def create_model(model_config, spec: MotionSpec | None, rngs: nnx.Rngs, **parts: nnx.Module) -> nnx.Module:
    """Instantiates `model_config.name` with its config, the dataset's motion space and its parts.

    A part not given is built here from its sub-config (`Part.config_key`); one that the config takes from a run
    must be given (see `runs.loader.recipe`).
    """
    entry = _entry(model_config.name)
    unknown = set(parts) - set(entry.parts)
    if unknown:
        raise TypeError(f"model {model_config.name!r} takes no parts {sorted(unknown)}; its parts: "
                        f"{sorted(entry.parts)}")
    for name, part in entry.parts.items():
        if name in parts:
            continue
        if run := part_run(model_config, part):
            raise ValueError(f"model {model_config.name!r}: part {name!r} comes from the run {run} "
                             f"(model.{part.run_key}); build it with runs.loader.recipe, which reads that run")
        if part.config_key is not None:
            parts[name] = create_model(model_config[part.config_key], spec, rngs)
    return entry.factory(model_config, spec, rngs, **parts)


def frozen_subtrees(model: nnx.Module) -> tuple[str, ...]:
    """Paths ("a/b") of every subtree the trainer must not update: the `frozen_parts` each module names."""
    frozen = []
    for path, module in nnx.iter_graph(model):
        if isinstance(module, nnx.Module):
            prefix = "/".join(map(str, path))
            frozen += [f"{prefix}/{p}" if prefix else p for p in getattr(module, "frozen_parts", ())]
    # A frozen part covers what lies under it.
    return tuple(p for p in frozen if not any(p.startswith(q + "/") for q in frozen))
