r"""Renderer training by self-reenactment: ours (motion_renderer) or the PIRenderer port, on any dataset with frames.

    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/renderer.py:tiny --workdir=runs/renderer_tiny

Variants (`<size>[,pirenderer][,gan]`):
  tiny    SynthTalk tiny (64x64 frames) on a 2-core CPU in minutes.
  base    256x256 (a prepared dataset: --config.data.dataset_dir=DATASET from `mirrortalk data prepare`).
  large   512x512.
Options:
  pirenderer  train the PIRenderer port instead (same data, same losses; its mapping net reads a 27-frame motion
              window around the frame it draws). To fine-tune the released weights, convert them
              (tools/convert_dreamtalk.py), train at size base or large (the released architecture) and load them:
              --config.train.init_from='(("", "ckpt/dreamtalk/renderer"),)' on a dataset in their 73-coefficient
              3DMM space; on another motion space (a prepared dataset's mesh space) load all but the mapping
              net's input layer: '(("warping_net", R, "warping_net"), ("editing_net", R, "editing_net"),
              ("mapping_net/encoder", R, "mapping_net/encoder"))' with R the converted folder.
  gan         add the PatchGAN adversarial loss and the discriminator feature-matching (perceptual) loss.
The VGG19 perceptual loss (PIRenderer's) takes a network converted from torchvision weights:
    python tools/convert_vgg.py --weights vgg19-dcbb9e9d.pth --out ckpt/vgg19
    ... --config.model.perceptual_net=ckpt/vgg19 --config.model.loss.perceptual=1.0

Self-reenactment: each example is a window of `data.window_frames` frames of a clip (the targets) and another
frame of the same clip (`data.source_frame`, the portrait). Watch train/psnr and eval/psnr in metrics.jsonl.
"""

from mirrortalk_jax import base_config
from mirrortalk_jax.models.pirenderer import renderer as pirenderer
from mirrortalk_jax.models.renderer import losses

SIZES = {"tiny": 64, "base": 256, "large": 512}

# Ours, per size: encoder channels from half resolution down to the warp level, the flow hourglass below it.
OURS = {
    "tiny": {"channels": (32, 64), "hourglass": (64, 96), "res_blocks": 2, "motion_hidden": 128,
             "descriptor_dim": 64},
    "base": {"channels": (32, 64, 128), "hourglass": (128, 192), "res_blocks": 2, "motion_hidden": 256,
             "descriptor_dim": 128},
    "large": {"channels": (32, 64, 128, 256), "hourglass": (256, 256), "res_blocks": 3, "motion_hidden": 256,
              "descriptor_dim": 256},
}
# The PIRenderer port trained from scratch at the tiny size (the released sizes for base / large).
PIRENDERER_TINY = {
    "common": {"image_nc": 3, "descriptor_nc": 64, "max_nc": 64, "use_spect": False},
    "mapping_net": {"coeff_nc": 0, "descriptor_nc": 64, "layer": 3},
    "warpping_net": {"encoder_layer": 5, "decoder_layer": 3, "base_nc": 16},
    "editing_net": {"layer": 3, "num_res_blocks": 2, "base_nc": 16},
}


def get_config(arg: str | None = None):
    size, options = base_config.variant_and_options(arg, tuple(SIZES), "tiny", ("pirenderer", "gan"))
    side = SIZES[size]
    config = base_config.base_config()
    config.data.synthtalk_variant = "tiny" if size == "tiny" else "default"
    config.data.audio_feature = "none"  # renderers read frames and motion only
    config.data.reference_frames = 1
    config.data.source_frame = True
    if "pirenderer" in options:
        conf = PIRENDERER_TINY if size == "tiny" else {**pirenderer.RELEASED_CONF, "mapping_net": {
            **pirenderer.RELEASED_CONF["mapping_net"], "coeff_nc": 0}}
        config.model = pirenderer.model_config(conf, image_size=(side, side))
        config.data.window_frames = 2 * pirenderer.SEMANTIC_RADIUS + 1  # the motion window; one target frame
        config.data.frames = "centre"
    else:
        config.model.name = "motion_renderer"
        config.model.update(OURS[size])
        config.model.image_size = (side, side)
        config.data.window_frames = 2  # targets per source portrait: two frames share one source encoding
        config.data.frames = "window"
    config.model.perceptual_net = ""  # a converted VGG19 (frozen) for loss.perceptual
    config.model.loss = losses.default_config(ms_ssim_scales=3 if size == "tiny" else 5)
    if "gan" in options:
        config.model.loss.adversarial = 0.1
        config.model.loss.feature_matching = 1.0
    if size == "tiny":
        # 16 target frames per step for both renderers: ours draws 2 per portrait, PIRenderer 1.
        base_config.cpu_budget(config, batch_size=16 if "pirenderer" in options else 8, num_steps=400,
                               warmup_steps=20, eval_every=100, learning_rate=2e-3)
    else:
        config.train.batch_size = 32 if "pirenderer" in options else 16  # 32 target frames per step
        config.train.num_steps = 200_000
        config.train.learning_rate = 2e-4
        config.train.weight_decay = 0.0
    return config
