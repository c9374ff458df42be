"""SDSE, MirrorTalk's semantically disentangled style encoder, and its stage-1 training model.

`StyleEncoder` maps a masked motion clip (B, R, D) to a style code (B, S):

    motion -> Linear + learned positions -> N x pre-LN transformer layers (masked self-attention)
           -> memory read: frames query M learned style slots, the read is added back residually
           -> attention pooling (a learned query over the valid frames) -> pooled (B, H)
           -> style head -> style code (B, S);  content head -> content projection (B, E)

Padding never reaches a valid frame: padded inputs are zeroed, attention keys are masked, and the memory read
and the feed-forwards are per-frame, so a clip's code does not depend on what lies behind its mask.

`StyleEncoderModel` (registered as "style_encoder") trains SDSE (stage 1) with a speaker triplet loss and the
disentanglement terms of `mirrortalk_jax.objectives.disentangle`; see `StyleEncoderModel.loss`.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.models.nn import layer_stack, layers
from mirrortalk_jax.models.nn.sharding import constrain
from mirrortalk_jax.models.registry import Part, register
from mirrortalk_jax.objectives import disentangle

# Logical axes of the frames (B, R, H) between layers (models/nn/sharding.py; a no-op outside a mesh).
FRAME_AXES = ("batch", "length", "embed")


class EncoderLayer(nnx.Module):
    """Pre-LN transformer layer: x + SelfAttn(LN(x)), then x + MLP(LN(x)). (B, R, H) -> (B, R, H)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, rngs: nnx.Rngs):
        self.attn_norm = layers.layer_norm(dim, rngs)
        self.attn = layers.Attention(dim, num_heads, rngs)
        self.mlp_norm = layers.layer_norm(dim, rngs)
        self.mlp_in = layers.dense(dim, mlp_dim, ("embed", "mlp"), rngs)
        self.mlp_out = layers.dense(mlp_dim, dim, ("mlp", "embed"), rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        h = self.attn_norm(x)
        x = x + self.attn(h, h, mask)
        return constrain(x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.mlp_norm(x)))), FRAME_AXES)


class StyleEncoder(nnx.Module):
    """SDSE: masked motion clip (B, R, D) -> style code (B, S) (and a content projection (B, E)).

    Args:
      motion_dim: D.
      hidden: H, the transformer width.
      num_layers, num_heads, mlp_dim: transformer encoder shape.
      num_slots: M, learned style memory slots.
      style_dim: S.
      content_dim: E, width of the content projection (compared with content features by the model's loss).
      max_frames: longest clip accepted (size of the learned positional table).
      scan_layers: the transformer layers as one stacked module applied by nnx.scan (params `layers/<name>` with
        a leading (num_layers,) axis; `layer_stack.convert_layer_layout` converts from `layers/<i>/<name>`).
      remat: "none", "full" or "dots": what the backward pass recomputes (models/nn/layer_stack.py).
    """

    def __init__(self, motion_dim: int, hidden: int, num_layers: int, num_heads: int, mlp_dim: int,
                 num_slots: int, style_dim: int, content_dim: int, max_frames: int, rngs: nnx.Rngs, *,
                 scan_layers: bool = False, remat: str = "none"):
        self.max_frames = max_frames
        self.remat = layer_stack.check_remat(remat)
        self.motion_in = layers.dense(motion_dim, hidden, ("motion", "embed"), rngs)
        self.positions = layers.param(rngs, layers.scaled_normal(0.02), (max_frames, hidden), ("length", "embed"))
        self.layers = layer_stack.create_blocks(lambda r: EncoderLayer(hidden, num_heads, mlp_dim, r), num_layers,
                                                rngs, scan=scan_layers)
        # Style memory: M slots of width H, read by every frame. Slots have no mesh axis of their own ("length"
        # maps to none): the table is small. M = 0 removes the memory bank (the paper's ablation).
        if num_slots > 0:
            self.memory = layers.param(rngs, layers.scaled_normal(1.0), (num_slots, hidden), ("length", "embed"))
            self.memory_norm = layers.layer_norm(hidden, rngs)
            self.memory_read = layers.Attention(hidden, num_heads, rngs)
        else:
            self.memory = self.memory_norm = self.memory_read = None
        self.pool_norm = layers.layer_norm(hidden, rngs)
        self.pool_query = layers.param(rngs, layers.scaled_normal(1.0), (1, hidden), ("length", "embed"))
        self.pool = layers.Attention(hidden, num_heads, rngs)
        self.out_norm = layers.layer_norm(hidden, rngs)
        self.style_head = layers.dense(hidden, style_dim, ("embed", "mlp"), rngs)
        self.content_head = layers.dense(hidden, content_dim, ("embed", "mlp"), rngs)

    def pooled(self, motion: jax.Array, mask: jax.Array) -> jax.Array:
        """(B, R, D), (B, R) bool -> (B, H) pooled clip representation."""
        if motion.ndim != 3 or mask.shape != motion.shape[:2]:
            raise ValueError(f"StyleEncoder expects motion (B, R, D) and mask (B, R), got {motion.shape} "
                             f"and {mask.shape}")
        length = motion.shape[1]
        if length > self.max_frames:
            raise ValueError(f"clip of {length} frames is longer than the encoder's max_frames={self.max_frames}; "
                             "raise model.max_frames")
        mask = mask.astype(bool)
        # Zero the padding first so that anything behind the mask (even NaN) cannot leak through 0 * x.
        motion = jnp.where(mask[..., None], motion, 0.0)
        x = constrain(self.motion_in(motion) + self.positions[...][None, :length], FRAME_AXES)
        x = layer_stack.apply_blocks(self.layers, x, mask, remat=self.remat)
        if self.memory is not None:
            memory = jnp.broadcast_to(self.memory[...][None], (x.shape[0],) + self.memory.shape)
            x = x + self.memory_read(self.memory_norm(x), memory)
        query = jnp.broadcast_to(self.pool_query[...][None], (x.shape[0], 1, x.shape[-1]))
        pooled = self.pool(query, self.pool_norm(x), mask)[:, 0]
        return self.out_norm(pooled)

    def encode(self, motion: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(B, R, D), (B, R) -> (style code (B, S), content projection (B, E))."""
        pooled = self.pooled(motion, mask)
        return self.style_head(pooled), self.content_head(pooled)

    def __call__(self, motion: jax.Array, mask: jax.Array) -> jax.Array:
        """(B, R, D), (B, R) bool -> style code (B, S)."""
        return self.style_head(self.pooled(motion, mask))


# ----- Content encoders (frozen) -----


class ContentEncoder(Protocol):
    """What SDSE's losses need from a content encoder (e.g. models.mirrortalk.motion_expert's pretrained expert)."""

    def content_embedding(self, audio_features: jax.Array, mask: jax.Array) -> jax.Array:
        """(B, L, F), (B, L) bool -> (B, E)."""


class RandomContentProjection(nnx.Module):
    """Default content encoder: a fixed random projection of the clip's mean audio features. (B, L, F) -> (B, E).

    A stand-in for the pretrained motion expert. Note that on SynthTalk the mean spectrum also identifies the
    speaker's voice, so this "content" carries speaker information too, and HSIC against it pulls against the
    triplet loss: keep the HSIC weight modest with it (a lip-sync expert's embedding is far less
    speaker-specific).
    """

    def __init__(self, audio_dim: int, content_dim: int, rngs: nnx.Rngs):
        self.projection = layers.Frozen(layers.fan_in_normal((0,))(rngs.params(), (audio_dim, content_dim)))

    def content_embedding(self, audio_features: jax.Array, mask: jax.Array) -> jax.Array:
        weights = mask.astype(audio_features.dtype)[..., None]
        mean = (audio_features * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)
        # Log-mel features sit around -5..5; the fixed scale keeps the embedding near unit range.
        return (0.2 * mean) @ self.projection[...]


# ----- Stage-1 training model -----


def _stack_clips(*clips: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """[(B, Ti, D), (B, Ti)] -> (sum of B, max Ti, D), (sum of B, max Ti): end-padded and masked."""
    length = max(m.shape[1] for m, _ in clips)
    motions = [jnp.pad(m, ((0, 0), (0, length - m.shape[1]), (0, 0))) for m, _ in clips]
    masks = [jnp.pad(k.astype(bool), ((0, 0), (0, length - k.shape[1]))) for _, k in clips]
    return jnp.concatenate(motions), jnp.concatenate(masks)


class StyleEncoderModel(nnx.Module):
    """SDSE with its stage-1 losses. The trainer calls `loss`; downstream models call `encoder`.

    Args:
      encoder: the StyleEncoder to train.
      content_encoder: the content encoder (see `ContentEncoder`), never trained here: a part from a run (a
        motion expert; its weights loaded by the run loader, kept as Params and frozen through `frozen_parts`),
        or a fixed module whose Params become `Frozen` variables (`content_from_run` False).
      content_from_run: whether `content_encoder` is a part from a run.
      num_speakers: > 0 adds a linear speaker classifier on the style code (0 disables it).
      weights: loss weights {"triplet", "hsic", "ortho", "content", "cls"}.
      margin: triplet margin; metric: "cosine" or "l2" (see `disentangle.distance`).
      hard_negatives: pick the closest other-speaker positive as negative instead of a random one.
    """

    def __init__(self, encoder: StyleEncoder, content_encoder: nnx.Module, *, num_speakers: int,
                 weights: dict[str, float], margin: float, metric: str = "cosine", hard_negatives: bool = False,
                 content_from_run: bool = False, rngs: nnx.Rngs):
        if not hasattr(content_encoder, "content_embedding"):
            raise TypeError(f"content encoder {type(content_encoder).__name__} has no content_embedding(audio, mask)")
        unknown = set(weights) - {"triplet", "hsic", "ortho", "content", "cls"}
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}")
        self.encoder = encoder
        self.content_encoder = content_encoder if content_from_run else layers.freeze(content_encoder)
        self.frozen_parts = ("content_encoder",) if content_from_run else ()
        # A tuple, not a dict: static module attributes end up in the (hashable) graphdef.
        self.weights = tuple(sorted((k, float(v)) for k, v in weights.items()))
        self.margin, self.metric, self.hard_negatives = float(margin), metric, hard_negatives
        self.num_speakers = num_speakers
        style_dim = encoder.style_head.out_features
        # Speakers have no mesh axis of their own; "kv" maps to none (the classifier is small).
        self.classifier = layers.dense(style_dim, num_speakers, ("mlp", "kv"), rngs) if num_speakers > 0 else None

    def content_features(self, batch: dict[str, jax.Array]) -> jax.Array:
        """(B, E) content features of the batch windows, from the frozen content encoder (no gradient)."""
        if "audio_features" not in batch:
            raise KeyError("the style encoder's disentanglement losses need batch['audio_features']; "
                           "set data.audio_feature to log_mel, mfcc or precomputed")
        feats = self.content_encoder.content_embedding(batch["audio_features"], batch["motion_mask"])
        return jax.lax.stop_gradient(feats)

    def loss(self, batch: dict[str, jax.Array], rng: jax.Array, train: bool) -> tuple[jax.Array, dict[str, Any]]:
        """Stage-1 SDSE objective on a global batch.

        anchor = SDSE(reference_motion), positive = SDSE(the window's own motion) (same speaker, another
        utterance), negative = the positive of another speaker (`disentangle.batch_negatives`). Terms:
          triplet: max(0, d(a, p) - d(a, n) + margin), masked where the batch has a single speaker;
          hsic:    HSIC(style code of the window, content features of the window);
          ortho:   orthogonality(style code, content projection) of the window;
          content: 1 - cos(content projection, content features): keeps the content head on content, so that
                   orthogonality to it means something (otherwise the head could just collapse);
          cls:     speaker cross-entropy on anchor and positive codes (when num_speakers > 0).
        """
        del train  # no dropout: the same computation at train and eval time
        w = dict(self.weights)
        speakers = batch["speaker_index"].astype(jnp.int32)
        # One encoder pass over references and windows (padded to a common length; padding is masked and
        # does not change a code): half the graph to compile, and larger matmuls.
        b = speakers.shape[0]
        codes, projections = self.encoder.encode(*_stack_clips(
            (batch["reference_motion"], batch["reference_mask"]), (batch["motion"], batch["motion_mask"])))
        anchor, positive, content_proj = codes[:b], codes[b:], projections[b:]
        content = self.content_features(batch)
        if content.shape[-1] != content_proj.shape[-1]:
            raise ValueError(f"content encoder gives {content.shape[-1]} features but the style encoder's content "
                             f"head has {content_proj.shape[-1]}: set model.content_dim to match")

        dists = disentangle.pairwise_distance(anchor, positive, self.metric)  # (B, B) anchor i -> positive j
        negatives = disentangle.batch_negatives(rng, speakers, dists if self.hard_negatives else None)
        valid = disentangle.has_negative(speakers)
        trip = disentangle.triplet(anchor, positive, positive[negatives], self.margin, self.metric, weights=valid)
        dep = disentangle.hsic(positive, content)
        ortho = disentangle.orthogonality(positive, content_proj)
        align = disentangle.distance(content_proj, content, "cosine").mean()
        total = w.get("triplet", 1.0) * trip + w.get("hsic", 0.0) * dep + w.get("ortho", 0.0) * ortho \
            + w.get("content", 0.0) * align

        same = speakers[:, None] == speakers[None, :]
        nearest = jnp.argmin(dists, axis=1)
        metrics = {
            "triplet": trip, "hsic": dep, "ortho": ortho, "content_align": align,
            "code_norm": jnp.linalg.norm(anchor, axis=-1).mean(),
            # Retrieval: is the positive nearest to each anchor one of the anchor's speaker?
            "retrieval_acc": same[jnp.arange(speakers.shape[0]), nearest].astype(jnp.float32).mean(),
            "d_pos": jnp.diagonal(dists).mean(),
            "d_neg": jnp.sum(jnp.where(same, 0.0, dists)) / jnp.maximum(jnp.sum(~same), 1),
        }
        if self.classifier is not None:
            logits = self.classifier(jnp.concatenate([anchor, positive]))
            labels = jnp.concatenate([speakers, speakers])
            # Speaker ids outside [0, num_speakers) (model.num_speakers smaller than the dataset's) are left
            # out of the loss rather than clipped onto a wrong class; `cls_ignored` makes that visible.
            known = (labels >= 0) & (labels < self.num_speakers)
            safe = jnp.where(known, labels, 0)
            nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), safe[:, None], axis=1)[:, 0]
            count = jnp.maximum(known.sum(), 1)
            cls = jnp.sum(jnp.where(known, nll, 0.0)) / count
            total = total + w.get("cls", 0.0) * cls
            metrics["cls"] = cls
            metrics["cls_acc"] = jnp.sum(known & (jnp.argmax(logits, -1) == labels)) / count
            metrics["cls_ignored"] = 1.0 - known.mean()
        return total, metrics


@register("style_encoder", parts={"content_encoder": Part("content_encoder_workdir")})
def create_style_encoder_model(config, spec: MotionSpec, rngs: nnx.Rngs, content_encoder: nnx.Module | None = None
                               ) -> StyleEncoderModel:
    """The registry factory. The content encoder is the `content_encoder` part (the motion expert of
    `config.content_encoder_workdir`, frozen) when given, else a fixed `RandomContentProjection` of the mean
    audio features."""
    if content_encoder is not None and not hasattr(content_encoder, "content_embedding"):
        raise TypeError(f"model.content_encoder_workdir={config.get('content_encoder_workdir')} holds a "
                        f"{type(content_encoder).__name__}, which has no content_embedding(audio_features, mask); "
                        "point it at a motion expert")
    encoder = StyleEncoder(motion_dim=spec.dim, hidden=config.hidden, num_layers=config.num_layers,
                           num_heads=config.num_heads, mlp_dim=config.mlp_dim, num_slots=config.num_slots,
                           style_dim=config.style_dim, content_dim=config.content_dim,
                           max_frames=config.max_frames, rngs=rngs, scan_layers=config.get("scan_layers", False),
                           remat=config.get("remat", "none"))
    from_run = content_encoder is not None
    if content_encoder is None:
        content_encoder = RandomContentProjection(config.audio_dim, config.content_dim, rngs)
    weights = {k: float(config.loss_weights[k]) for k in config.loss_weights}
    return StyleEncoderModel(encoder, content_encoder, num_speakers=config.num_speakers, weights=weights,
                             margin=config.margin, metric=config.get("distance", "cosine"),
                             hard_negatives=config.get("hard_negatives", False), content_from_run=from_run,
                             rngs=rngs)
