r"""VGG19 features (torchvision `vgg19().features`, weights `vgg19-dcbb9e9d.pth`) for perceptual losses and an
LPIPS-style distance; evaluation / loss network only, never trained here.

    python tools/convert_vgg.py --weights vgg19-dcbb9e9d.pth --out ckpt/vgg19 [--layers relu1_1 relu3_1]

The weights are user-supplied (nothing is downloaded); the converter builds the `released` variant unless told
otherwise (--config=mirrortalk_jax/configs/released/vgg19.py:small). Variants: `released` (torchvision's widths 64,
128, 256, 512, 512 per block; 20.0 M parameters in the 16 convs) and `small` (8, 8, 16, 16, 16: test sizes).
`model.layers` names the reluB_K activations the model returns, in order (default relu1_1 ... relu5_1, the layers
of PIRenderer's and pix2pixHD's perceptual losses); the convs past the deepest one named do not run.
"""

from mirrortalk_jax import base_config
from mirrortalk_jax.models.vgg import vgg19

SMALL_CHANNELS = (8, 8, 16, 16, 16)


def get_config(arg: str | None = None):
    variant = base_config.variant(arg, ("released", "small"), "released")
    config = base_config.base_config()
    config.model.name = "vgg19"
    config.model.channels = vgg19.RELEASED_CHANNELS if variant == "released" else SMALL_CHANNELS
    config.model.layers = vgg19.DEFAULT_LAYERS
    # float32-exact convolutions on GPU/TPU (their default precision is lower), so the distance does not depend
    # on the accelerator; "default" is faster where exactness does not matter (a training loss).
    config.model.precision = "highest"
    return config
