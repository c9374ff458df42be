"""A PatchGAN discriminator (pix2pix / pix2pixHD): strided 4x4 convolutions, one real/fake logit per patch.

Its intermediate activations double as the feature pyramid of the feature-matching loss (pix2pixHD), the
perceptual loss that needs no pretrained network: it is trained here, with the renderer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mirrortalk_jax.models.nn import image_layers as il

LEAKY_SLOPE = 0.2


class PatchDiscriminator(nnx.Module):
    """(B, H, W, 3) in [-1, 1] -> (features [(B, H/2^i, W/2^i, C_i)], logits (B, H/2^n, W/2^n, 1)).

    `channels` (C_1..C_n): one stride-2 convolution per entry; then a stride-1 4x4 convolution to the logit.
    Instance norm after every convolution but the first (pix2pix's choice for small batches).
    """

    def __init__(self, channels: tuple[int, ...], rngs: nnx.Rngs, image_nc: int = 3):
        if not channels:
            raise ValueError("discriminator channels must name at least one layer")
        ins = (image_nc, *channels[:-1])
        self.convs = nnx.List([il.conv2d(i, o, 4, rngs, stride=2, padding=1, axes=(None if k == 0 else "embed", "mlp"))
                               for k, (i, o) in enumerate(zip(ins, channels))])
        self.head = il.conv2d(channels[-1], 1, 3, rngs, padding=1, axes=("embed", None))

    def __call__(self, images: jax.Array) -> tuple[list[jax.Array], jax.Array]:
        features, x = [], images
        for k, conv in enumerate(self.convs):
            x = conv(x)
            x = jax.nn.leaky_relu(x if k == 0 else il.instance_norm(x), LEAKY_SLOPE)
            features.append(x)
        return features, self.head(x).astype(jnp.float32)
