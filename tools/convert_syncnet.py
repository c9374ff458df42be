"""Converts syncnet_python's SyncNet weights (`syncnet_v2.model`) into a checkpoint this project loads.

    python tools/convert_syncnet.py --checkpoint=syncnet_v2.model --out=ckpt/syncnet [--config=mirrortalk_jax/configs/released/syncnet.py:released]

The checkpoint may be the original torch file (read with torch.load(weights_only=True); needs the `torch` extra)
or a safetensors export of the same state dict. The output folder loads with runs.loader.load_model and
feeds evaluate.lse.SyncNetEmbedder (LSE-C / LSE-D). Exits 2 with a message naming every missing, unused or
mis-shaped tensor when the file does not fit the configured model.
"""

from __future__ import annotations

import argparse
import sys

from mirrortalk_jax import base_config
from mirrortalk_jax.convert import syncnet
from mirrortalk_jax.convert.foreign import ConversionError

DEFAULT_CONFIG = base_config.config_path("syncnet") + ":released"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="syncnet_v2.model (torch) or a .safetensors export")
    parser.add_argument("--out", required=True, help="new folder for the converted checkpoint")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="config file[:variant] (default: %(default)s)")
    args = parser.parse_args(argv)
    config = base_config.load_config_file(args.config).model
    try:
        out = syncnet.convert_checkpoint(args.checkpoint, args.out, config)
    except (ConversionError, FileExistsError) as e:
        print(f"convert_syncnet: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} (syncnet, embedding size {config.num_layers_in_fc_layers}, "
          f"width divisor {config.width_divisor})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
