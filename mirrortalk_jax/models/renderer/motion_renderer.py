"""Our one-shot renderer: a portrait + its motion + target motion (any dataset's motion space) -> the target frame.

    model = create_model(config.model, spec, nnx.Rngs(0))
    frame = model.render(source_image, source_motion, driving_motion)   # (B, H, W, 3) in [-1, 1]

Design, and why. The motion our models produce is a low-dimensional vector per frame (pose 6 + expression
coefficients: SynthTalk's channels, or the PCA mesh space of `mirrortalk data prepare`), not keypoints, so
the renderer follows the descriptor-driven family (PIRenderer) rather than keypoint-driven warpers (FOMM,
TPSMM, LivePortrait), and takes the cheap parts of both:

- The motion encoder sees the source's motion, the target's and their difference: like LivePortrait's
  source/driving keypoints, it lets the network express "move from here to there" instead of inferring the
  source's expression from pixels. A descriptor z modulates every block by AdaIN (PIRenderer, StyleGAN).
- Warp in feature space, once, at 1/2^levels resolution (FOMM, LivePortrait): the source encoder's features
  at that resolution are warped by a flow an AdaIN hourglass predicts from them and z, with an occlusion map
  (FOMM) so the decoder knows where to paint instead (an open mouth, a turned cheek). The finer encoder levels
  are warped by the same flow, upsampled, and enter the decoder as skips: sharp texture without a second flow.
- The flow head and the colour head start at zero, so training begins from the identity warp (the portrait's
  pixels in place, nothing painted). An auxiliary loss on the source warped by the flow alone (PIRenderer's warp stage,
  `loss.warp`) shapes the flow early.
- Only 2-D ops that export everywhere: convolutions, AdaIN, pixel shuffles, bilinear resizes, and a 4-D bilinear
  `grid_sample` written as gathers (models/nn/warp.py). No 3-D feature volume and no 5-D grid_sample (the op
  that blocks LivePortrait's ONNX export), and no custom kernels.
- Speed: no convolution runs at full resolution. The encoder reads 2x2 pixel blocks as channels
  (space-to-depth) and the decoder ends at half resolution with a pixel shuffle into a colour residual added to
  the source's own pixels, warped by the same flow (sharp texture at the cost of one 3-channel gather).
  All wide layers run at the warp resolution or below.

Shapes: images (B, H, W, 3) in [-1, 1] with H, W multiples of 2^(encoder levels + hourglass levels); motion (B, D).
Training (`loss`) is self-reenactment: the batch's `source_frame` and `source_motion` (another frame of the same
clip) and the window's `frames` and `motion` as targets, with the shared renderer losses (losses.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.models.nn import image_layers as il
from mirrortalk_jax.models.nn import warp
from mirrortalk_jax.models.nn.layers import dense
from mirrortalk_jax.models.registry import Part, register
from mirrortalk_jax.models.renderer.losses import RenderLosses, check_perceptual, to_unit

LEAKY_SLOPE = 0.2


def _act(x: jax.Array) -> jax.Array:
    return jax.nn.leaky_relu(x, LEAKY_SLOPE)


def identity_grid(height: int, width: int) -> np.ndarray:
    """(h, w, 2) sampling grid (x, y) of pixel centres in grid_sample's align_corners=False convention."""
    x = (2.0 * np.arange(width, dtype=np.float32) + 1.0) / width - 1.0
    y = (2.0 * np.arange(height, dtype=np.float32) + 1.0) / height - 1.0
    return np.stack(np.broadcast_arrays(x[None, :], y[:, None]), axis=-1).astype(np.float32)


def upsample(x: jax.Array, factor: int) -> jax.Array:
    """Bilinear (half-pixel) upsampling of a flow or mask by an integer factor: (B, h, w, C) -> (B, fh, fw, C)."""
    return x if factor == 1 else warp.resize_bilinear(x, (x.shape[1] * factor, x.shape[2] * factor))


class MotionEncoder(nnx.Module):
    """(source motion, driving motion) (B, D) each -> descriptor z (B, descriptor_dim)."""

    def __init__(self, motion_dim: int, hidden: int, descriptor_dim: int, rngs: nnx.Rngs):
        self.first = dense(3 * motion_dim, hidden, ("motion", "mlp"), rngs)
        self.second = dense(hidden, hidden, ("mlp", "embed"), rngs)
        self.out = dense(hidden, descriptor_dim, ("embed", "mlp"), rngs)

    def __call__(self, source: jax.Array, driving: jax.Array) -> jax.Array:
        x = jnp.concatenate([source, driving, driving - source], axis=-1)
        return self.out(_act(self.second(_act(self.first(x)))))


class ModulatedConv(nnx.Module):
    """conv3x3(act(AdaIN(x, z))): the hourglass and decoder's unit."""

    def __init__(self, in_ch: int, out_ch: int, descriptor_dim: int, rngs: nnx.Rngs, *, stride: int = 1):
        self.norm = il.AdaIN(in_ch, descriptor_dim, rngs, hidden=min(128, 2 * descriptor_dim))
        self.conv = il.conv2d(in_ch, out_ch, 3, rngs, stride=stride, padding=1)

    def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
        return self.conv(_act(self.norm(x, z)))


class ResBlock(nnx.Module):
    def __init__(self, channels: int, descriptor_dim: int, rngs: nnx.Rngs):
        self.a = ModulatedConv(channels, channels, descriptor_dim, rngs)
        self.b = ModulatedConv(channels, channels, descriptor_dim, rngs)

    def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
        return x + self.b(self.a(x, z), z)


def space_to_depth(x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H/2, W/2, 4C): each 2x2 block of pixels becomes one pixel's channels."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // 2, w // 2, 4 * c)


def depth_to_space(x: jax.Array) -> jax.Array:
    """(B, h, w, 4C) -> (B, 2h, 2w, C), the inverse of `space_to_depth` (pixel shuffle)."""
    b, h, w, c4 = x.shape
    c = c4 // 4
    return x.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, c)


class SourceEncoder(nnx.Module):
    """Image (B, H, W, 3) -> features at H/2, H/4, ..., H/2^levels. The first level reads the image's 2x2 blocks
    as channels (space-to-depth), so no convolution runs at full resolution."""

    def __init__(self, channels: tuple[int, ...], rngs: nnx.Rngs, image_nc: int = 3):
        self.first = il.conv2d(4 * image_nc, channels[0], 3, rngs, padding=1, axes=(None, "mlp"))
        self.down = nnx.List([il.conv2d(channels[i], channels[i + 1], 3, rngs, stride=2, padding=1)
                              for i in range(len(channels) - 1)])

    def __call__(self, image: jax.Array) -> list[jax.Array]:
        features = [_act(self.first(space_to_depth(image)))]
        for conv in self.down:
            features.append(_act(conv(features[-1])))
        return features


class FlowNet(nnx.Module):
    """AdaIN hourglass on the coarsest source features -> flow (B, h, w, 2) in grid units and occlusion (B, h, w, 1).

    The head is zero-initialised: an untrained renderer warps by identity and sees almost no occlusion
    (sigmoid(0 + 4) = 0.98 visible).
    """

    def __init__(self, in_ch: int, channels: tuple[int, ...], descriptor_dim: int, rngs: nnx.Rngs):
        ins = (in_ch, *channels[:-1])
        self.down = nnx.List([ModulatedConv(i, o, descriptor_dim, rngs, stride=2) for i, o in zip(ins, channels)])
        self.up = nnx.List([il.UpsampleConv(o, i, rngs) for i, o in zip(ins, channels)])
        self.up_norm = nnx.List([il.AdaIN(o, descriptor_dim, rngs, hidden=min(128, 2 * descriptor_dim))
                                 for o in channels])
        self.head = nnx.Conv(2 * in_ch, 3, kernel_size=(3, 3), padding=((1, 1), (1, 1)),
                             kernel_init=nnx.with_partitioning(nnx.initializers.zeros, ("conv", "conv", "embed", None)),
                             bias_init=nnx.with_partitioning(nnx.initializers.zeros, (None,)), rngs=rngs)

    def __call__(self, x: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        skips = [x]
        for block in self.down:
            skips.append(block(skips[-1], z))
        out = skips.pop()
        for up, norm in zip(reversed(self.up), reversed(self.up_norm)):
            out = up(_act(norm(out, z))) + skips.pop()
        head = self.head(jnp.concatenate([_act(out), x], axis=-1))
        return head[..., :2], jax.nn.sigmoid(head[..., 2:] + 4.0)  # occlusion starts near 1: "all visible"


class MotionRenderer(nnx.Module):
    """See the module docstring. Config fields: channels (half resolution first; the last is the warp level),
    hourglass (channels of the flow net's levels), res_blocks, motion_hidden, descriptor_dim, image_size, loss."""

    # Held for training only: export and inference builds leave them out (export/renderers.py).
    training_only = ("losses", "perceptual_net")

    def __init__(self, config: ml_collections.ConfigDict, spec: MotionSpec, rngs: nnx.Rngs, *,
                 perceptual_net: nnx.Module | None = None):
        channels, hourglass = tuple(config.channels), tuple(config.hourglass)
        if len(channels) < 2 or not hourglass:
            raise ValueError(f"renderer needs >= 2 encoder levels and >= 1 hourglass level, got channels={channels}"
                             f", hourglass={hourglass}")
        self.motion_dim = spec.dim
        self.image_size = tuple(config.image_size)
        self.multiple = 2 ** (len(channels) + len(hourglass))
        d = int(config.descriptor_dim)
        self.motion_encoder = MotionEncoder(spec.dim, int(config.motion_hidden), d, rngs)
        self.source_encoder = SourceEncoder(channels, rngs)
        self.flow = FlowNet(channels[-1], hourglass, d, rngs)
        self.res = nnx.List([ResBlock(channels[-1], d, rngs) for _ in range(int(config.res_blocks))])
        self.up = nnx.List([il.UpsampleConv(channels[i + 1], channels[i], rngs)
                            for i in reversed(range(len(channels) - 1))])
        self.fuse = nnx.List([ModulatedConv(2 * channels[i], channels[i], d, rngs)
                              for i in reversed(range(len(channels) - 1))])
        # Per 2x2 output block: the colour correction added to the warped source's pixel.
        # Zero-initialised like the flow head: an untrained renderer returns the portrait itself (identity warp, no
        # residual), a face every landmark tracker finds, which evaluation and personalization start from.
        zeros = nnx.initializers.zeros
        self.to_rgb = nnx.Conv(channels[0], 4 * 3, kernel_size=(3, 3), padding=((1, 1), (1, 1)),
                               kernel_init=nnx.with_partitioning(zeros, ("conv", "conv", "embed", None)),
                               bias_init=nnx.with_partitioning(zeros, (None,)), rngs=rngs)
        self.losses = RenderLosses(config.loss, rngs) if "loss" in config else None
        check_perceptual(config, perceptual_net)
        self.perceptual_net = perceptual_net  # frozen: a pretrained feature network (a run's part)
        self.frozen_parts = ("perceptual_net",) if perceptual_net is not None else ()

    def encode(self, source_image: jax.Array) -> dict[str, jax.Array | tuple[jax.Array, ...]]:
        """The portrait's appearance, what `decode` warps: its pixels (B, H, W, 3) and the source encoder's features
        (B, H/2^k, W/2^k, C_k) for k = 1..levels. Independent of any motion, so a clip's portrait is encoded once,
        and personalization (models/renderer/personalized.py) can optimise a person's appearance directly."""
        h, w = source_image.shape[1:3]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"image size {h}x{w}: height and width must be multiples of {self.multiple}")
        return {"image": source_image, "features": tuple(self.source_encoder(source_image))}

    def decode(self, appearance: dict, source_motion: jax.Array, driving_motion: jax.Array) -> dict[str, jax.Array]:
        """An appearance from `encode` (batch B) moved from `source_motion` (B, D) to `driving_motion` (B, D);
        outputs as `__call__`."""
        source_image, features = appearance["image"], list(appearance["features"])
        b = source_image.shape[0]
        for name, m in (("source_motion", source_motion), ("driving_motion", driving_motion)):
            if m.shape != (b, self.motion_dim):
                raise ValueError(f"{name}: expected (batch {b}, motion dim {self.motion_dim}), got {m.shape}")
        z = self.motion_encoder(source_motion, driving_motion)
        coarse = features[-1]
        flow, occlusion = self.flow(coarse, z)
        levels = len(features)

        def warp_level(x: jax.Array, factor: int, mask: bool = True) -> jax.Array:
            grid = identity_grid(x.shape[1], x.shape[2]) + upsample(flow, factor)
            warped = warp.grid_sample(x, grid)
            return warped * upsample(occlusion, factor) if mask else warped

        out = warp_level(coarse, 1)
        for block in self.res:
            out = block(out, z)
        for k, (up, fuse) in enumerate(zip(self.up, self.fuse)):
            level = levels - 2 - k
            out = fuse(jnp.concatenate([up(out), warp_level(features[level], 2 ** (levels - 1 - level))], -1), z)
        # Full resolution: the source's own pixels, warped, plus what the decoder paints where they do not fit
        # (mouth interior, disocclusions, shading): sharp texture for the cost of one 3-channel gather. A residual,
        # not a blend with a learned mask: such a mask saturates to "keep the warp" early in training and then
        # no gradient reaches the decoder (measured: the decoder went unused on SynthTalk).
        warped = warp_level(source_image, 2 ** levels, mask=False)
        residual = depth_to_space(self.to_rgb(_act(out)))
        return {"image": warped + residual, "warped_source": warped, "residual": residual, "flow": flow,
                "occlusion": occlusion}

    def __call__(self, source_image: jax.Array, source_motion: jax.Array,
                 driving_motion: jax.Array) -> dict[str, jax.Array]:
        """-> image (B, H, W, 3) (unclipped: the losses see values past [-1, 1]; `render` clips), warped_source
        and residual (B, H, W, 3) (image = warped_source + residual), flow (B, h, w, 2) in grid units and
        occlusion (B, h, w, 1) at the warp level."""
        return self.decode(self.encode(source_image), source_motion, driving_motion)

    def render(self, source_image: jax.Array, source_motion: jax.Array, driving_motion: jax.Array) -> jax.Array:
        """Only the frames, (B, H, W, 3) clipped to [-1, 1]: what exports and video writers need."""
        return jnp.clip(self(source_image, source_motion, driving_motion)["image"], -1.0, 1.0)

    # The renderer interface (models/renderer/__init__.py), shared with the PIRenderer port.
    def driving(self, motion: jax.Array | np.ndarray, start: int = 0, stop: int | None = None) -> jax.Array:
        """Per-frame driving input of frames start..stop-1 of a clip's motion (T, D): the frames' own motion."""
        return jnp.asarray(motion)[start:stop]

    def render_frames(self, source_image: jax.Array, source_motion: jax.Array, driving: jax.Array) -> jax.Array:
        """(n, H, W, 3) portraits in [-1, 1], (n, D) their motion, (n, D) from `driving` -> (n, H, W, 3) frames."""
        return self.render(source_image, source_motion, driving)

    def render_appearance(self, appearance: dict, source_motion: jax.Array, driving: jax.Array) -> jax.Array:
        """`render_frames` from an appearance (`encode`, batch n) instead of portraits."""
        return jnp.clip(self.decode(appearance, source_motion, driving)["image"], -1.0, 1.0)

    def loss(self, batch: dict[str, jax.Array], rng: jax.Array, train: bool, *, appearance: dict | None = None,
             source_motion: jax.Array | None = None) -> tuple[jax.Array, dict]:
        """Self-reenactment: every frame of the window (B, L) is rendered from the clip's `source_frame`.

        Reads source_frame (B, H, W, 3) uint8, source_motion (B, D), frames (B, L, H, W, 3) uint8, motion (B, L, D)
        and motion_mask (B, L) (padding frames weigh 0). `appearance` (batch B, as `encode` gives) and
        `source_motion` (B, D) replace the encoded source frames and their motion (personalization)."""
        del rng, train  # deterministic objective
        if self.losses is None:
            raise ValueError("this renderer's config has no `loss` section; it cannot be trained")
        frames, motion = batch["frames"], batch["motion"]
        b, length = motion.shape[:2]
        if appearance is None:
            appearance = self.encode(to_unit(batch["source_frame"]))
        source_motion = batch["source_motion"] if source_motion is None else source_motion
        # Each portrait's encoding serves its L targets: (B, ...) -> (B * L, ...), target-major like `flat`.
        per_target = lambda x: jnp.repeat(x, length, axis=0)  # noqa: E731
        flat = lambda x: x.reshape(b * length, *x.shape[2:])  # noqa: E731
        out = self.decode(jax.tree.map(per_target, appearance), per_target(source_motion), flat(motion))
        loss, metrics = self.losses(out["image"], flat(frames), flat(batch["motion_mask"]),
                                    warped=out["warped_source"], perceptual_net=self.perceptual_net)
        metrics["occlusion"] = jnp.mean(out["occlusion"])
        return loss, metrics


@register("motion_renderer", parts={"perceptual_net": Part("perceptual_net", same_motion_space=False)})
def _build(config, spec: MotionSpec, rngs: nnx.Rngs, *, perceptual_net: nnx.Module | None = None) -> MotionRenderer:
    if spec is None:
        raise ValueError("motion_renderer renders a dataset's motion space: build it with the dataset's MotionSpec")
    return MotionRenderer(config, spec, rngs, perceptual_net=perceptual_net)
