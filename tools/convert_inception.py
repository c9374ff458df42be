"""Converts pytorch-fid's FID Inception weights into a checkpoint this project loads (FID features).

    python tools/convert_inception.py --checkpoint=pt_inception-2015-12-05-6726825d.pth --out=ckpt/fid_inception

The checkpoint is the file pytorch-fid downloads on first use (its release `fid_weights`); supply it yourself,
nothing is downloaded here. It may be the original torch file (read with torch.load(weights_only=True); needs
the `torch` extra) or a safetensors file holding the same state dict. The output folder loads with
`mirrortalk_jax.evaluate.inception.load_inception` and feeds `evaluate.fid` through `InceptionFeatures`.
Exits 2 with a message naming every missing, unused or mis-shaped tensor when the file is not pytorch-fid's
Inception (torchvision's ImageNet Inception, with 1000 classes and AuxLogits, is refused: its FID differs).
"""

from __future__ import annotations

import argparse
import sys

from mirrortalk_jax.convert.foreign import ConversionError
from mirrortalk_jax.evaluate import inception


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="pt_inception-2015-12-05-6726825d.pth (torch) or a .safetensors file with its keys")
    parser.add_argument("--out", required=True, help="new folder for the converted checkpoint")
    args = parser.parse_args(argv)
    try:
        out = inception.convert_checkpoint(args.checkpoint, args.out)
    except (ConversionError, FileExistsError) as e:
        print(f"convert_inception: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({inception.NAME}, pool3 features of dimension {inception.FEATURE_DIM})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
