"""PIRenderer's face generator (`FaceGenerator`, as shipped with DreamTalk), an exact port in NHWC.

Renders a portrait under new 3DMM motion: a MappingNet turns a 27-frame window of coefficients (64 expression +
3 angles + 3 translations + 3 crop) into a descriptor z; a WarpingNet (AdaIN hourglass) predicts a flow at 1/4
resolution and warps the source image with it; an EditingNet (encoder + AdaIN residual decoder) repairs the warped
image into the final frame. Numerics follow the original (`generators/face_model.py`, `base_function.py`,
`flow_util.py` of ali-vilab/dreamtalk): LeakyReLU 0.1, InstanceNorm/LayerNorm2d eps 1e-5, torch's grid_sample
and resize conventions (models/nn/warp.py). Layouts: images (B, H, W, 3) in [-1, 1]; motion windows (B, 27, 73).

    model = create_model(configs.released.pirenderer.get_config("released").model, None, nnx.Rngs(0))
    out = model(source_image, driving_source)        # dict: descriptor, hourglass_out, flow_field, warp_image, fake_image

Weights of the released checkpoint (`renderer.pt`, key `net_G_ema`) load through convert/pirenderer.py. The
original's FineADAINResBlock2d overwrites its first branch, so conv1/norm1 of those blocks are kept as
parameters (the checkpoint has them) but never computed; the output is identical.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from mirrortalk_jax.models.nn import image_layers as il
from mirrortalk_jax.models.nn import warp
from mirrortalk_jax.models.registry import Part, register
from mirrortalk_jax.models.renderer.losses import RenderLosses, check_perceptual, to_unit

LEAKY_SLOPE = 0.1  # nn.LeakyReLU(0.1) everywhere in the renderer
SEMANTIC_RADIUS = 13  # the demo's window: frames i-13 .. i+13
# The released renderer (generators/renderer_conf.yaml), in the original's structure.
RELEASED_CONF = {
    "common": {"image_nc": 3, "descriptor_nc": 256, "max_nc": 256, "use_spect": False},
    "mapping_net": {"coeff_nc": 73, "descriptor_nc": 256, "layer": 3},
    "warpping_net": {"encoder_layer": 5, "decoder_layer": 3, "base_nc": 32},
    "editing_net": {"layer": 3, "num_res_blocks": 2, "base_nc": 64},
}


def _act(x: jax.Array) -> jax.Array:
    return jax.nn.leaky_relu(x, LEAKY_SLOPE)


def model_config(renderer_conf: Mapping[str, Any] = RELEASED_CONF, *,
                 image_size: tuple[int, int] = (256, 256)) -> ml_collections.ConfigDict:
    """Our model config from the original's renderer_conf structure (common / mapping_net / warpping_net /
    editing_net), so any size of the original converts. `image_size` is the default render size (exports,
    benchmarks); the network itself is fully convolutional (H, W multiples of 32)."""
    common, mapping = renderer_conf["common"], renderer_conf["mapping_net"]
    warping, editing = renderer_conf["warpping_net"], renderer_conf["editing_net"]
    if common.get("use_spect", False):
        raise ValueError("spectral-norm renderers (use_spect: true) are not supported; the released one has none")
    if mapping["descriptor_nc"] != common["descriptor_nc"]:
        raise ValueError(f"mapping_net.descriptor_nc {mapping['descriptor_nc']} != common.descriptor_nc "
                         f"{common['descriptor_nc']}")
    config = ml_collections.ConfigDict()
    config.name = "pirenderer"
    config.image_nc = int(common["image_nc"])
    config.coeff_nc = int(mapping["coeff_nc"])
    config.descriptor_nc = int(common["descriptor_nc"])
    config.max_nc = int(common["max_nc"])
    config.mapping_layers = int(mapping["layer"])
    config.warping = ml_collections.ConfigDict({"base_nc": int(warping["base_nc"]),
                                                "encoder_layers": int(warping["encoder_layer"]),
                                                "decoder_layers": int(warping["decoder_layer"])})
    config.editing = ml_collections.ConfigDict({"base_nc": int(editing["base_nc"]), "layers": int(editing["layer"]),
                                                "num_res_blocks": int(editing["num_res_blocks"])})
    config.image_size = tuple(int(s) for s in image_size)
    # Convolution precision on GPU/TPU: "default" lets them use TF32 (as the original under cuDNN's default
    # allow_tf32); "highest" is float32-exact. CPUs compute float32 either way.
    config.precision = "default"
    return config


def motion_windows(motion: np.ndarray | jax.Array, radius: int = SEMANTIC_RADIUS, start: int = 0,
                   stop: int | None = None) -> jax.Array:
    """Per-frame windows of a motion sequence, as the demo's `obtain_seq_index` (edges repeat the end frames).

    (N, D) -> (stop - start, 2 * radius + 1, D): window i holds frames clamp(i - radius .. i + radius, 0, N - 1),
    for frames i = start .. stop - 1 (default all N; a slice lets long clips be rendered batch by batch).
    """
    n = motion.shape[0]
    frames = np.arange(start, n if stop is None else stop)
    index = np.clip(frames[:, None] + np.arange(-radius, radius + 1)[None, :], 0, n - 1)
    return jnp.asarray(motion)[index]


class MappingNet(nnx.Module):
    """Motion window (B, T, coeff_nc) -> descriptor (B, descriptor_nc). T = 27 shrinks to 21, 15, 9, 3, then avg."""

    def __init__(self, coeff_nc: int, descriptor_nc: int, layers: int, rngs: nnx.Rngs,
                 precision: str | None = None):
        self.first = il.conv1d(coeff_nc, descriptor_nc, 7, rngs, axes=("motion", "embed"), precision=precision)
        self.encoder = nnx.List([il.conv1d(descriptor_nc, descriptor_nc, 3, rngs, dilation=3, precision=precision)
                                 for _ in range(layers)])

    def __call__(self, coeffs: jax.Array) -> jax.Array:
        out = self.first(coeffs)
        for conv in self.encoder:
            out = conv(_act(out)) + out[:, 3:-3]  # the residual is the un-activated input, centre-cropped
        return jnp.mean(out, axis=1)


class AdaINEncoderBlock(nnx.Module):
    """x -> conv_1(act(norm_1(conv_0(act(norm_0(x, z))), z))); conv_0 k4 s2 p1 halves H and W."""

    def __init__(self, in_ch: int, out_ch: int, descriptor_nc: int, rngs: nnx.Rngs, precision: str | None = None):
        self.norm_0 = il.AdaIN(in_ch, descriptor_nc, rngs)
        self.conv_0 = il.conv2d(in_ch, out_ch, 4, rngs, precision=precision, stride=2, padding=1)
        self.norm_1 = il.AdaIN(out_ch, descriptor_nc, rngs)
        self.conv_1 = il.conv2d(out_ch, out_ch, 3, rngs, precision=precision, padding=1)

    def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
        x = self.conv_0(_act(self.norm_0(x, z)))
        return self.conv_1(_act(self.norm_1(x, z)))


class AdaINDecoderBlock(nnx.Module):
    """Residual 2x upsampling: conv_s(act(norm_s(x))) + conv_1(act(norm_1(conv_0(act(norm_0(x)))))), with
    conv_s and conv_1 torch ConvTranspose2d(k3, s2, p1, output_padding 1)."""

    def __init__(self, in_ch: int, out_ch: int, descriptor_nc: int, rngs: nnx.Rngs, precision: str | None = None):
        self.norm_0 = il.AdaIN(in_ch, descriptor_nc, rngs)
        self.conv_0 = il.conv2d(in_ch, out_ch, 3, rngs, precision=precision, padding=1)
        self.norm_1 = il.AdaIN(out_ch, descriptor_nc, rngs)
        self.conv_1 = il.ConvTranspose2x(out_ch, out_ch, rngs, ("embed", "mlp"), precision)
        self.norm_s = il.AdaIN(in_ch, descriptor_nc, rngs)
        self.conv_s = il.ConvTranspose2x(in_ch, out_ch, rngs, ("embed", "mlp"), precision)

    def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
        shortcut = self.conv_s(_act(self.norm_s(x, z)))
        dx = self.conv_0(_act(self.norm_0(x, z)))
        return shortcut + self.conv_1(_act(self.norm_1(dx, z)))


class WarpingNet(nnx.Module):
    """AdaIN hourglass -> flow at 1/4 resolution -> warped source.

    Encoder: input conv (k7) then `encoder_layers` stride-2 blocks (all outputs kept). Decoder: blocks for levels
    L-1 .. L-D (keys "4", "3", "2" for the released sizes, as the original's decoder4..2), each followed by a
    channel concat [block output, skip]. Channels at level i: min(base_nc * 2^i, max_nc).
    """

    def __init__(self, image_nc: int, descriptor_nc: int, base_nc: int, max_nc: int, encoder_layers: int,
                 decoder_layers: int, rngs: nnx.Rngs, precision: str | None = None):
        if not 0 < decoder_layers <= encoder_layers:
            raise ValueError(f"need 0 < decoder_layers <= encoder_layers, got {decoder_layers}, {encoder_layers}")
        ch = [min(base_nc * 2 ** i, max_nc) for i in range(encoder_layers + 1)]
        self.levels = tuple(range(encoder_layers - decoder_layers, encoder_layers))[::-1]  # deepest first
        self.input_layer = il.conv2d(image_nc, base_nc, 7, rngs, padding=3, axes=(None, "mlp"), precision=precision)
        self.encoder = nnx.List([AdaINEncoderBlock(ch[i], ch[i + 1], descriptor_nc, rngs, precision)
                                 for i in range(encoder_layers)])
        self.decoder = nnx.Dict({str(i): AdaINDecoderBlock(ch[i + 1] * (1 if i == encoder_layers - 1 else 2),
                                                           ch[i], descriptor_nc, rngs, precision)
                                for i in self.levels})
        out_ch = 2 * ch[self.levels[-1]]
        self.flow_norm = il.LayerNorm2d(out_ch, rngs)
        self.flow_conv = il.conv2d(out_ch, 2, 7, rngs, precision=precision, padding=3, axes=("embed", None))

    def __call__(self, image: jax.Array, z: jax.Array, features: jax.Array | None = None) -> dict[str, jax.Array]:
        """image (B, H, W, C), z (B, D) -> hourglass_out (B, H/4, W/4, 2 ch), flow_field (B, H/4, W/4, 2) in
        pixels of that grid (x, y), deformation (same, in [-1, 1] units), warp_image (B, H, W, C).
        `features`: the input layer's output on `image` when already computed (`PIRenderer.encode`)."""
        skips = [self.input_layer(image) if features is None else features]
        for block in self.encoder:
            skips.append(block(skips[-1], z))
        out = skips.pop()
        for level in self.levels:
            out = jnp.concatenate([self.decoder[str(level)](out, z), skips.pop()], axis=-1)
        flow = self.flow_conv(_act(self.flow_norm(out)))
        deformation = warp.flow_to_deformation(flow)
        return {"hourglass_out": out, "flow_field": flow, "deformation": deformation,
                "warp_image": warp.warp_image(image, deformation)}


class ConvNormAct(nnx.Module):
    """Conv2d (stride 1, same padding) -> LayerNorm2d -> LeakyReLU: the original's FirstBlock2d / Jump."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, rngs: nnx.Rngs, *, axes: il.Axes = ("embed", "mlp"),
                 precision: str | None = None):
        self.conv = il.conv2d(in_ch, out_ch, kernel, rngs, precision=precision, padding=kernel // 2, axes=axes)
        self.norm = il.LayerNorm2d(out_ch, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return _act(self.norm(self.conv(x)))


class UpConvNormAct(nnx.Module):
    """The original's UpBlock2d: nearest 2x upsample -> Conv2d k3 p1 -> LayerNorm2d -> LeakyReLU."""

    def __init__(self, in_ch: int, out_ch: int, rngs: nnx.Rngs, precision: str | None = None):
        self.conv = il.UpsampleConv(in_ch, out_ch, rngs, ("embed", "mlp"), precision)
        self.norm = il.LayerNorm2d(out_ch, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return _act(self.norm(self.conv(x)))


class FineAdaINResBlock(nnx.Module):
    """The original's FineADAINResBlock2d: out = norm2(conv2(x), z) + x (its conv1/norm1 branch is overwritten
    in the original's forward, so it is stored but not computed)."""

    def __init__(self, channels: int, descriptor_nc: int, rngs: nnx.Rngs, precision: str | None = None):
        self.conv1 = il.conv2d(channels, channels, 3, rngs, precision=precision, padding=1)
        self.norm1 = il.AdaIN(channels, descriptor_nc, rngs)
        self.conv2 = il.conv2d(channels, channels, 3, rngs, precision=precision, padding=1)
        self.norm2 = il.AdaIN(channels, descriptor_nc, rngs)

    def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
        return self.norm2(self.conv2(x), z) + x


class EditingNet(nnx.Module):
    """(source, warped) -> final image in [-1, 1]. Encoder: first conv k7, then `layers` x (conv k3, LN, act,
    avg-pool 2). Decoder for levels L-1 .. 0: AdaIN res blocks, upsampling conv, plus a `jump` conv of the skip."""

    def __init__(self, image_nc: int, descriptor_nc: int, base_nc: int, max_nc: int, layers: int,
                 num_res_blocks: int, rngs: nnx.Rngs, precision: str | None = None):
        ch = [min(base_nc * 2 ** i, max_nc) for i in range(layers + 1)]
        self.first = ConvNormAct(2 * image_nc, base_nc, 7, rngs, axes=(None, "mlp"), precision=precision)
        self.down = nnx.List([ConvNormAct(ch[i], ch[i + 1], 3, rngs, precision=precision) for i in range(layers)])
        self.res = nnx.List([nnx.List([FineAdaINResBlock(ch[i + 1], descriptor_nc, rngs, precision)
                                       for _ in range(num_res_blocks)]) for i in range(layers)])
        self.up = nnx.List([UpConvNormAct(ch[i + 1], ch[i], rngs, precision) for i in range(layers)])
        self.jump = nnx.List([ConvNormAct(ch[i], ch[i], 3, rngs, precision=precision) for i in range(layers)])
        self.final = il.conv2d(base_nc, image_nc, 7, rngs, precision=precision, padding=3, axes=("embed", None))

    def __call__(self, image: jax.Array, warped: jax.Array, z: jax.Array) -> jax.Array:
        x = self.first(jnp.concatenate([image, warped], axis=-1))
        skips = [x]
        for down in self.down:
            x = il.avg_pool2(down(x))
            skips.append(x)
        out = skips.pop()
        for i in reversed(range(len(self.up))):
            for block in self.res[i]:
                out = block(out, z)
            out = self.jump[i](skips.pop()) + self.up[i](out)
        return jnp.tanh(self.final(out))


class PIRenderer(nnx.Module):
    """source_image (B, H, W, 3) in [-1, 1], driving_source (B, 27, coeff_nc) -> dict of
    descriptor (B, D), hourglass_out, flow_field (B, H/4, W/4, 2), warp_image and fake_image (B, H, W, 3)."""

    # Held for training only: export and inference builds leave them out (export/renderers.py).
    training_only = ("losses", "perceptual_net")

    def __init__(self, config: ml_collections.ConfigDict, rngs: nnx.Rngs, *,
                 perceptual_net: nnx.Module | None = None):
        d, m = config.descriptor_nc, config.max_nc
        precision = config.get("precision", "default")
        self.image_size = tuple(config.get("image_size", (256, 256)))
        self.mapping_net = MappingNet(config.coeff_nc, d, config.mapping_layers, rngs, precision)
        self.warping_net = WarpingNet(config.image_nc, d, config.warping.base_nc, m, config.warping.encoder_layers,
                                      config.warping.decoder_layers, rngs, precision)
        self.editing_net = EditingNet(config.image_nc, d, config.editing.base_nc, m, config.editing.layers,
                                      config.editing.num_res_blocks, rngs, precision)
        self.multiple = 2 ** max(config.warping.encoder_layers, config.editing.layers)
        # Training (fine-tuning released weights, or from scratch on a dataset's motion space): the renderers'
        # shared losses, created last so a config without them builds exactly the converted port.
        self.losses = RenderLosses(config.loss, rngs) if "loss" in config else None
        check_perceptual(config, perceptual_net)
        self.perceptual_net = perceptual_net  # frozen: a pretrained feature network (a run's part)
        self.frozen_parts = ("perceptual_net",) if perceptual_net is not None else ()

    def encode(self, source_image: jax.Array) -> dict[str, jax.Array]:
        """The portrait's appearance, the part of the network that sees no motion: its pixels (B, H, W, 3) and the
        warping net's input features (B, H, W, base_nc). Personalization (models/renderer/personalized.py)
        optimises a person's appearance in this form."""
        h, w = source_image.shape[1:3]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"image size {h}x{w}: height and width must be multiples of {self.multiple}")
        return {"image": source_image, "features": self.warping_net.input_layer(source_image)}

    def decode(self, appearance: dict[str, jax.Array], driving_source: jax.Array, *,
               stage: str = "full") -> dict[str, jax.Array]:
        """An appearance from `encode` driven by motion windows (B, 27, coeff_nc); outputs as `__call__`."""
        descriptor = self.mapping_net(driving_source)
        out = {"descriptor": descriptor,
               **self.warping_net(appearance["image"], descriptor, features=appearance["features"])}
        if stage == "full":
            out["fake_image"] = self.editing_net(appearance["image"], out["warp_image"], descriptor)
        elif stage != "warp":
            raise ValueError(f"unknown stage {stage!r}: use 'full' or 'warp'")
        return out

    def __call__(self, source_image: jax.Array, driving_source: jax.Array, *,
                 stage: str = "full") -> dict[str, jax.Array]:
        """stage "warp" skips the EditingNet (the original's stage='warp'); "full" adds `fake_image`."""
        return self.decode(self.encode(source_image), driving_source, stage=stage)

    def render(self, source_image: jax.Array, driving_source: jax.Array) -> jax.Array:
        """Only the final frames, (B, H, W, 3) in [-1, 1]: what exports and video writers need."""
        return self(source_image, driving_source)["fake_image"]


    # The renderer interface (models/renderer/__init__.py), shared with our renderer.
    def driving(self, motion: jax.Array | np.ndarray, start: int = 0, stop: int | None = None) -> jax.Array:
        """Per-frame driving input of frames start..stop-1 of a clip's motion (T, D): their 27-frame windows."""
        return motion_windows(motion, start=start, stop=stop)

    def render_frames(self, source_image: jax.Array, source_motion: jax.Array, driving: jax.Array) -> jax.Array:
        """(n, H, W, 3) portraits in [-1, 1], (n, D) their motion (unused: PIRenderer reads only the target's),
        (n, 27, D) from `driving` -> (n, H, W, 3) frames."""
        del source_motion
        return self.render(source_image, driving)

    def render_appearance(self, appearance: dict, source_motion: jax.Array, driving: jax.Array) -> jax.Array:
        """`render_frames` from an appearance (`encode`, batch n) instead of portraits."""
        del source_motion
        return self.decode(appearance, driving)["fake_image"]

    def loss(self, batch: dict[str, jax.Array], rng: jax.Array, train: bool, *, appearance: dict | None = None,
             source_motion: jax.Array | None = None) -> tuple[jax.Array, dict]:
        """Self-reenactment as in PIRenderer's training: the window's centre frame is drawn from the clip's
        `source_frame` and the motion window around it; the warp stage's output is scored too (`loss.warp`).

        Reads source_frame (B, H, W, 3) uint8, motion (B, T, coeff_nc) (T >= 25, e.g. 27), frames (B, 1, H, W, 3)
        uint8 (the centre frame: data.frames = "centre") and motion_mask (B, T). `appearance` (batch B, as
        `encode` gives) replaces the encoded source frames (personalization); PIRenderer reads no source motion."""
        del rng, train, source_motion
        if self.losses is None:
            raise ValueError("this PIRenderer config has no `loss` section; it cannot be trained")
        motion = batch["motion"]
        centre = motion.shape[1] // 2
        if appearance is None:
            appearance = self.encode(to_unit(batch["source_frame"]))
        out = self.decode(appearance, motion)
        return self.losses(out["fake_image"], batch["frames"][:, 0], batch["motion_mask"][:, centre],
                           warped=out["warp_image"], perceptual_net=self.perceptual_net)


@nnx.jit(static_argnames="stage")
def forward(model: PIRenderer, source_image: jax.Array, driving_source: jax.Array, stage: str = "full"
            ) -> dict[str, jax.Array]:
    """`model(source_image, driving_source, stage=stage)` compiled once per model structure and input shapes."""
    return model(source_image, driving_source, stage=stage)


@register("pirenderer", parts={"perceptual_net": Part("perceptual_net", same_motion_space=False)})
def _build(config, spec, rngs: nnx.Rngs, *, perceptual_net: nnx.Module | None = None) -> PIRenderer:
    """coeff_nc 0 takes the motion space's width (training on a dataset's own motion); the released port reads
    73 3DMM coefficients (64 expression, 6 pose, 3 crop) and is built without a spec."""
    if spec is not None and config.coeff_nc in (0, spec.dim):
        config = config.copy_and_resolve_references()
        config.coeff_nc = spec.dim
    elif spec is not None:
        raise ValueError(f"pirenderer coeff_nc={config.coeff_nc} does not match the dataset's motion space "
                         f"{spec.name!r} of {spec.dim} channels; set model.coeff_nc=0 to take the dataset's")
    elif config.coeff_nc <= 0:
        raise ValueError("pirenderer coeff_nc=0 takes the motion width from a dataset: build it with a MotionSpec")
    return PIRenderer(config, rngs, perceptual_net=perceptual_net)
