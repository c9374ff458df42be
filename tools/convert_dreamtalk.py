"""Converts DreamTalk's released weights into checkpoints this project loads.

    python tools/convert_dreamtalk.py --denoiser denoising_network.pth --out ckpt/dreamtalk [--config released]
    python tools/convert_dreamtalk.py --denoiser ... --renderer renderer.pt --out ckpt/dreamtalk

Writes OUT/denoiser (models.dreamtalk, from the `diff_net.*` tensors of `model_state_dict`) and, with
--renderer, OUT/renderer (PIRenderer, from `net_G_ema`). Either file may be the original torch file (read with
torch.load(weights_only=True); needs the `torch` extra) or a safetensors export of the same state dict.

--config: `released` (configs/dreamtalk.py:released, the default), a config file[:variant], or the original's
hyperparameters as a JSON file (the layout of tests/fixtures/dreamtalk_denoiser/config.json), for checkpoints
of other sizes. Exits 2 with a message naming every missing, unused or mis-shaped tensor when a file does not
fit the configured model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere: configs/ lives next to the package

from mirrortalk_jax import base_config
from mirrortalk_jax.convert import dreamtalk, pirenderer
from mirrortalk_jax.convert.sources import ConversionError


def model_config(spec: str):
    """`released`, a .json of the original's hyperparameters, or a config file[:variant] -> our model config."""
    if spec == "released":
        return base_config.load_config_file(str(ROOT / "configs" / "dreamtalk.py"), "released").model
    if spec.endswith(".json"):
        return dreamtalk.model_config_from_original(json.loads(Path(spec).read_text()))
    return base_config.load_config_file(spec).model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--denoiser", help="denoising_network.pth (torch) or a .safetensors export")
    parser.add_argument("--renderer", help="renderer.pt (PIRenderer; key net_G_ema) or a .safetensors export")
    parser.add_argument("--out", required=True, help="new folder; gets denoiser/ and renderer/ subfolders")
    parser.add_argument("--config", default="released",
                        help="'released', a config file[:variant], or the original's config as .json")
    args = parser.parse_args(argv)
    if not (args.denoiser or args.renderer):
        parser.error("give --denoiser and/or --renderer")
    out = Path(args.out)
    try:
        if args.denoiser:
            config = model_config(args.config)
            path = dreamtalk.convert_checkpoint(args.denoiser, out / "denoiser", config)
            print(f"wrote {path} (DreamTalk denoiser, d_model {config.d_model}, "
                  f"{config.decoder.num_layers} decoder layers per stack)")
        if args.renderer:
            print(f"wrote {pirenderer.convert_renderer(args.renderer, out / 'renderer')} (PIRenderer)")
    except (ConversionError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"convert_dreamtalk: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
