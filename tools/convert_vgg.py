"""Converts torchvision's VGG19 weights (`vgg19-dcbb9e9d.pth`) into a feature network this project loads.

    python tools/convert_vgg.py --weights vgg19-dcbb9e9d.pth --out ckpt/vgg19 [--layers relu1_1 relu2_1 ...]

The weights are the file torchvision downloads for `vgg19(weights="IMAGENET1K_V1")`; supply it yourself, nothing
is downloaded here. It may be the original torch file (read with torch.load(weights_only=True); needs the `torch`
extra) or a safetensors file holding the same state dict (`features.*`; `classifier.*` is dropped). `--layers`
chooses the reluB_K activations the model returns (default relu1_1 relu2_1 relu3_1 relu4_1 relu5_1); they are
stored in the folder's model config. The output folder loads with runs.loader.load_model and feeds
models.vgg.vgg19.perceptual_distance. Exits 2 with a message naming every missing, unused or mis-shaped tensor
when the file does not fit the configured model.
"""

from __future__ import annotations

import argparse
import sys

from mirrortalk_jax import base_config
from mirrortalk_jax.convert import vgg
from mirrortalk_jax.models.vgg import vgg19

DEFAULT_CONFIG = base_config.config_path("vgg19") + ":released"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="vgg19-dcbb9e9d.pth (torch) or a .safetensors export")
    parser.add_argument("--out", required=True, help="new folder for the converted checkpoint")
    parser.add_argument("--layers", nargs="+", default=None,
                        help="reluB_K layers to return, in order (spaces or commas; default: the config's, "
                             f"{' '.join(vgg19.DEFAULT_LAYERS)})")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="config file[:variant] (default: %(default)s)")
    args = parser.parse_args(argv)
    config = base_config.load_config_file(args.config).model
    try:
        if args.layers is not None:
            config.layers = vgg19.check_layers([n for item in args.layers for n in item.split(",") if n])
        out = vgg.convert_checkpoint(args.weights, args.out, config)
    except (ValueError, FileExistsError) as e:  # ConversionError is a ValueError, as are unknown layer names
        print(f"convert_vgg: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} (vgg19, channels {tuple(config.channels)}, layers {' '.join(config.layers)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
