"""Converts a MimicTalk ICS-A2M checkpoint (audio-to-motion, `InContextAudio2MotionModel`) for this project.

    python tools/convert_mimictalk.py --checkpoint=checkpoints/240112_icl_audio2secc_vox2_cmlr/model_ckpt_steps_N.ckpt \
        --out=ckpt/mimictalk_a2m [--config=mirrortalk_jax/configs/mimictalk_a2m.py:released] [--ignore='sync_expert\\..*']

The checkpoint may be the release's torch file (read with torch.load(weights_only=True); needs the `torch`
extra; weights under ['state_dict']['model'] or flat 'model.'-prefixed keys) or a safetensors export. Without
--config the architecture (mode, widths, depth, heads, aux features) is read from the tensors' shapes. The
output folder loads with runs.loader.load_model. Exits 2 with a message naming every missing, unused or
mis-shaped tensor when the file does not fit.
"""

from __future__ import annotations

import argparse
import sys

from mirrortalk_jax import base_config
from mirrortalk_jax.convert import mimictalk
from mirrortalk_jax.convert.foreign import ConversionError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="model_ckpt_steps_*.ckpt (torch) or .safetensors")
    parser.add_argument("--out", required=True, help="new folder for the converted checkpoint")
    parser.add_argument("--config", default=None, help="config file[:variant]; default: read from the checkpoint")
    parser.add_argument("--audio_rate", type=int, default=2, help="audio frames per motion frame (HuBERT 50 Hz: 2)")
    parser.add_argument("--ignore", action="append", default=[], help="regex of source keys to drop (repeatable)")
    args = parser.parse_args(argv)
    try:
        config = None
        if args.config:
            config = base_config.load_config_file(args.config).model
        else:
            tensors = mimictalk.read_checkpoint(args.checkpoint, ignore=args.ignore)
            config = mimictalk.config_from_tensors(tensors, audio_rate=args.audio_rate)
        out, config = mimictalk.convert_checkpoint(args.checkpoint, args.out, config, ignore=args.ignore)
    except (ConversionError, FileExistsError, FileNotFoundError) as e:
        print(f"convert_mimictalk: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} (mimictalk_a2m, mode {config.mode}, {config.depth} blocks x {config.dim}, "
          f"aux features {'on' if config.use_aux_features else 'off'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
