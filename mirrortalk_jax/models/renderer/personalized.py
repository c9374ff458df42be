"""A renderer adapted to one person: MimicTalk's static-dynamic hybrid adaptation for any renderer of the renderer
interface (ours, the PIRenderer port).

    model = create_model(config, spec, rngs, renderer=base)     # base: a trained renderer, frozen here
    model.set_appearance(frame, motion)                         # the static part starts from a one-shot encoding
    loss, metrics = model.loss(batch, rng, train=True)          # the base's own self-reenactment loss
    frames = model.render_frames(source_image, source_motion, model.driving(motion))

Two parts, each switchable (`model.static`, `model.lora.rank`), which is MimicTalk's ablation:
- static: the person's appearance as free parameters, in the form the base renderer's `encode` gives it (ours:
  the portrait's pixels and source-encoder features; PIRenderer: its pixels and warping-net input features),
  initialised from the one-shot encoding of a frame of the person and optimised. It replaces the portrait: a
  static personalized renderer draws the person whatever `source_image` it is given, moved from the anchor
  frame's motion (MimicTalk's person-specific tri-plane plays this role).
- dynamic: LoRA (models/nn/lora.py) on the base's convolution and linear kernels chosen by `lora.targets`
  (regexes over kernel paths such as "flow/.*"), rank `lora.rank`.
The base renderer's weights are frozen (`Frozen` variables: no gradient is computed for them, none is stored
in the optimizer); its training-only discriminator, when its loss has one, keeps training.

`merged(model, config)` folds the LoRA into the kernels for inference at no extra cost: a static renderer stays a
`personalized_renderer` of rank 0 (base + appearance); a LoRA-only one becomes a plain renderer of the base's kind.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.models.nn import layers, lora
from mirrortalk_jax.models.registry import Part, register
from mirrortalk_jax.models.renderer.losses import to_unit

# Never adapted or frozen here: the training objective (discriminator) and frozen feature networks.
_OBJECTIVE = ("losses", "perceptual_net")


def default_config(base_model: ml_collections.ConfigDict | None = None, *, rank: int = 2, static: bool = True,
                   targets: tuple[str, ...] = (".*",)) -> ml_collections.ConfigDict:
    """The personalized renderer's model config; `base_model`: the base renderer's model config, built fresh
    (weights from an initial checkpoint), or set `renderer` to the base run instead."""
    return ml_collections.ConfigDict({
        "name": "personalized_renderer", "renderer": "",
        "renderer_model": ml_collections.ConfigDict(base_model.to_dict()) if base_model is not None else None,
        "lora": {"rank": int(rank), "alpha": float(max(rank, 1)), "targets": tuple(targets)},
        "static": bool(static),
        # The render size of exports and benchmarks: the base's.
        "image_size": tuple(base_model.image_size) if base_model is not None else (256, 256)})


class PersonalizedRenderer(nnx.Module):
    """See the module docstring. `renderer`: the base renderer (weights as trained; frozen here)."""

    def __init__(self, config: ml_collections.ConfigDict, renderer: nnx.Module, motion_dim: int,
                 rngs: nnx.Rngs):
        for name in vars(renderer).copy():
            child = getattr(renderer, name)
            if isinstance(child, nnx.Module) and name not in _OBJECTIVE:
                setattr(renderer, name, layers.freeze(child))
        self.renderer = renderer
        self.image_size = tuple(renderer.image_size)
        rank = int(config.lora.rank)
        self.lora_paths = tuple(lora.kernel_paths(renderer, tuple(config.lora.targets), exclude=_OBJECTIVE)
                                ) if rank else ()
        if rank and not self.lora_paths:
            raise ValueError(f"lora.targets {tuple(config.lora.targets)} match no kernel of the "
                             f"{type(renderer).__name__}; paths look like 'flow/head/kernel'")
        kernels = dict(nnx.to_flat_state(nnx.state(renderer)))
        self.lora = nnx.List([lora.KernelLoRA(kernels[p].shape, rank, rngs, alpha=float(config.lora.alpha),
                                              out_axis=lora.out_axis(renderer, p)) for p in self.lora_paths])
        self.static = bool(config.static)
        self.motion_dim = int(motion_dim)
        if self.static:
            h, w = self.image_size
            shapes = jax.eval_shape(lambda x: renderer.encode(x), jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32))
            leaves, self.appearance_tree = jax.tree.flatten(shapes)
            # Pixels unannotated, feature channels on "mlp" like the layers that make them.
            self.appearance = nnx.List([layers.param(rngs, nnx.initializers.zeros, leaf.shape,
                                                     (None, None, None, None if leaf.shape[-1] == 3 else "mlp"))
                                        for leaf in leaves])
            self.anchor_motion = layers.Frozen(jnp.zeros((1, self.motion_dim), jnp.float32))

    # ----- the adapted network -----

    def adapted(self) -> nnx.Module:
        """The base renderer with every adapted kernel replaced by kernel + its LoRA update."""
        return lora.with_updates(self.renderer, self.lora_paths, self.lora) if self.lora_paths else self.renderer

    def person_appearance(self, batch: int) -> dict:
        """The optimised appearance, repeated over `batch`."""
        values = [jnp.broadcast_to(p[...], (batch, *p.shape[1:])) for p in self.appearance]
        return jax.tree.unflatten(self.appearance_tree, values)

    def set_appearance(self, frame: np.ndarray, motion: np.ndarray) -> None:
        """Starts the static part from the base's one-shot encoding of `frame` (H, W, 3) uint8, whose motion is
        `motion` (D,) (the anchor every driving motion is relative to)."""
        if not self.static:
            raise ValueError("this personalized renderer has no static part (model.static is False)")
        frame = np.asarray(frame)
        if frame.shape != (*self.image_size, 3) or frame.dtype != np.uint8:
            raise ValueError(f"anchor frame: expected {(*self.image_size, 3)} uint8, got {frame.shape} {frame.dtype}")
        motion = np.asarray(motion, np.float32).reshape(-1)
        if motion.shape != (self.motion_dim,):
            raise ValueError(f"anchor motion: expected ({self.motion_dim},), got {motion.shape}")
        encoded = jax.tree.leaves(self.renderer.encode(to_unit(jnp.asarray(frame)[None])))
        for param, value in zip(self.appearance, encoded, strict=True):
            param[...] = value
        self.anchor_motion[...] = jnp.asarray(motion)[None]

    # ----- training (the shared trainer) -----

    def loss(self, batch: dict[str, jax.Array], rng: jax.Array, train: bool) -> tuple[jax.Array, dict]:
        """The base renderer's self-reenactment loss on the person's frames, drawn from the optimised appearance
        (static) or from the batch's source frames (LoRA only)."""
        renderer = self.adapted()
        if not self.static:
            return renderer.loss(batch, rng, train)
        b = batch["source_frame"].shape[0]
        return renderer.loss(batch, rng, train, appearance=self.person_appearance(b),
                             source_motion=jnp.broadcast_to(self.anchor_motion[...], (b, self.motion_dim)))

    # ----- the renderer interface (models/renderer/__init__.py) -----

    def driving(self, motion: jax.Array | np.ndarray, start: int = 0, stop: int | None = None) -> jax.Array:
        return self.renderer.driving(motion, start, stop)

    def render_frames(self, source_image: jax.Array, source_motion: jax.Array, driving: jax.Array) -> jax.Array:
        """(n, H, W, 3) frames in [-1, 1]. A static renderer draws the person's optimised appearance from the
        anchor's motion and ignores `source_image` / `source_motion`."""
        renderer = self.adapted()
        if not self.static:
            return renderer.render_frames(source_image, source_motion, driving)
        n = driving.shape[0]
        return renderer.render_appearance(self.person_appearance(n),
                                          jnp.broadcast_to(self.anchor_motion[...], (n, self.motion_dim)), driving)


def merged(model: PersonalizedRenderer, config: ml_collections.ConfigDict
           ) -> tuple[nnx.Module, ml_collections.ConfigDict]:
    """(inference model, its model config) with the LoRA folded into the kernels (see the module docstring)."""
    if config.get("renderer_model") is None:
        raise ValueError("merging needs the base renderer's model config (model.renderer_model)")
    base = nnx.clone(model.adapted())  # concrete arrays: kernel + update computed once, here
    if not model.static:  # the base renderer's own kind, its weights Params again
        graphdef, frozen, rest = nnx.split(base, layers.Frozen, ...)
        plain = jax.tree.map(lambda v: nnx.Param(v.get_value(), **v.get_metadata()), frozen,
                             is_leaf=lambda x: isinstance(x, nnx.Variable))
        return nnx.merge(graphdef, plain, rest), ml_collections.ConfigDict(config.renderer_model.to_dict())
    out_config = ml_collections.ConfigDict(config.to_dict())
    out_config.lora.rank, out_config.renderer = 0, ""
    out = PersonalizedRenderer(out_config, base, model.motion_dim, nnx.Rngs(0))
    for target, value in zip(out.appearance, model.appearance, strict=True):
        target[...] = value[...]
    out.anchor_motion[...] = model.anchor_motion[...]
    return out, out_config


@register("personalized_renderer", parts={"renderer": Part("renderer", "renderer_model")})
def _build(config, spec: MotionSpec, rngs: nnx.Rngs, *, renderer: nnx.Module) -> PersonalizedRenderer:
    if spec is None:
        raise ValueError("personalized_renderer renders a dataset's motion space: build it with its MotionSpec")
    return PersonalizedRenderer(config, renderer, spec.dim, rngs)
