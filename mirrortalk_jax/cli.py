"""The `mirrortalk` command: user-facing jobs, one module each in mirrortalk_jax/commands/.

    mirrortalk data build   [--variant default|tiny] [--data_dir DIR] [--overwrite] [--workers N]
    mirrortalk data inspect DATASET_DIR
    mirrortalk data preview DATASET_DIR [--split train] [--index 0] [--out preview.mp4]
    mirrortalk generate --model dreamtalk --denoiser DIR --renderer DIR --audio WAV
        (--audio_features F.npy | --audio_encoder DIR) --image PNG (--style_clip F | --style_predictor RUN)
        [--pose F] --out OUT.mp4
    mirrortalk generate --model mirrortalk|mimictalk --generator RUN --renderer RUN --image PHOTO --audio WAV
        --reference STYLE.mp4 --out OUT.mp4
    mirrortalk personalize --renderer RUN --video PERSON.mp4 --out DIR [--steps N] [--rank R] [--seconds S]
    mirrortalk serve --model NAME=RUN --renderer RUN        (the web demo; the `demo` extra)

`mirrortalk --help` lists every job. Training has its own Flax-examples-style entry point:
python -m mirrortalk_jax.main --config=... --workdir=...
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module defines add_parser(subparsers) and sets `func` on its parsers; heavy imports stay inside the jobs.
COMMANDS = ("data", "demo", "evaluate", "evaluate_renderers", "generate", "export", "features", "personalize",
            "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mirrortalk", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    jobs = parser.add_subparsers(dest="job", required=True)
    for name in COMMANDS:
        module_name = f"mirrortalk_jax.commands.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue  # a job whose module is not part of this install
        module.add_parser(jobs)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, IndexError) as e:
        # Bad input is the user's to fix: say what is wrong without a traceback.
        print(f"mirrortalk: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
