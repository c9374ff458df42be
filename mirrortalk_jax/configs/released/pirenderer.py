r"""PIRenderer face generator as shipped with DreamTalk (renderer.pt, key net_G_ema); inference port.

    python tools/convert_dreamtalk.py --renderer checkpoints/renderer.pt --out ckpt/dreamtalk   # converts it
    mirrortalk export renderer --checkpoint ckpt/dreamtalk/renderer --out exports/pirenderer    # torch-free artifact
    python benchmarks/render_speed.py                                                           # s/frame, memory

Variants: `released` (generators/renderer_conf.yaml: descriptor 256, max 256 channels, warping base 32 with 5
encoder / 3 decoder levels, editing base 64 with 3 levels and 2 AdaIN res blocks; 22.5 M parameters; 256x256)
and `small` (the reference fixture's sizes: descriptor 24, max 16 channels, bases 8; 0.37 M parameters; 64x64).
`model.image_size` is only the default render size: the network is fully convolutional (multiples of 32).
"""

import ml_collections

from mirrortalk_jax import base_config
from mirrortalk_jax.models.pirenderer import renderer as pirenderer

SMALL_CONF = {
    "common": {"image_nc": 3, "descriptor_nc": 24, "max_nc": 16, "use_spect": False},
    "mapping_net": {"coeff_nc": 73, "descriptor_nc": 24, "layer": 3},
    "warpping_net": {"encoder_layer": 5, "decoder_layer": 3, "base_nc": 8},
    "editing_net": {"layer": 3, "num_res_blocks": 2, "base_nc": 8},
}


def get_config(arg: str | None = None):
    variant = base_config.variant(arg, ("released", "small"), "released")
    config = base_config.base_config()
    if variant == "released":
        config.model = pirenderer.model_config(pirenderer.RELEASED_CONF, image_size=(256, 256))
    else:
        config.model = pirenderer.model_config(SMALL_CONF, image_size=(64, 64))
    config.render = ml_collections.ConfigDict()
    config.render.batch_size = 16  # frames per renderer call, as the original demo
    return config
