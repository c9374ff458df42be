"""Converts DreamTalk's released weights into checkpoints this project loads.

    python tools/convert_dreamtalk.py --denoiser denoising_network.pth --out ckpt/dreamtalk [--config released]
    python tools/convert_dreamtalk.py --denoiser ... --renderer renderer.pt --out ckpt/dreamtalk \
        [--renderer_config released]

Writes OUT/denoiser (models.dreamtalk.denoiser, from the `diff_net.*` tensors of `model_state_dict`) and, with
--renderer, OUT/renderer (PIRenderer, from `net_G_ema`). Either file may be the original torch file (read with
torch.load(weights_only=True); needs the `torch` extra) or a safetensors export of the same state dict.

--config (the denoiser's sizes): `released` (mirrortalk_jax/configs/dreamtalk.py:released, the default), a config
file[:variant], or the original's hyperparameters as a JSON file (the layout of
tests/fixtures/dreamtalk_denoiser/config.json), for checkpoints of other sizes.
--renderer_config (the renderer's sizes): `released` (generators/renderer_conf.yaml of the original, the
default), a config file[:variant] (e.g. mirrortalk_jax/configs/released/pirenderer.py:small), or the original's renderer_conf as
YAML (the layout of generators/renderer_conf.yaml) or JSON (that structure, or a file holding it under
`renderer_conf`, as tests/fixtures/dreamtalk_renderer/config.json).

OUT is written as a whole or not at all: everything is converted into a temporary folder next to OUT, which
is renamed to OUT only when every conversion succeeded (runs.converted.new_folder). An existing non-empty
OUT is refused and left as it is. Exits 2 with a message naming every missing, unused or mis-shaped tensor
when a file does not fit the configured model; nothing is written then.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere, installed or not

from mirrortalk_jax import base_config
from mirrortalk_jax.convert import dreamtalk, pirenderer
from mirrortalk_jax.runs import converted
from mirrortalk_jax.convert.foreign import ConversionError
from mirrortalk_jax.models.pirenderer import renderer as pirenderer_model


def model_config(spec: str):
    """`released`, a .json of the original's hyperparameters, or a config file[:variant] -> our model config."""
    if spec == "released":
        return base_config.load_config_file(base_config.config_path("dreamtalk"), "released").model
    if spec.endswith(".json"):
        return dreamtalk.model_config_from_original(json.loads(Path(spec).read_text()))
    return base_config.load_config_file(spec).model


def renderer_config(spec: str):
    """`released`, the original's renderer_conf as .yaml/.yml or .json (bare, or under `renderer_conf`), or a
    config file[:variant] -> our PIRenderer model config."""
    if spec == "released":
        return base_config.load_config_file(base_config.config_path("pirenderer"), "released").model
    if not spec.endswith((".json", ".yaml", ".yml")):
        config = base_config.load_config_file(spec).model
        if config.get("name") != "pirenderer":
            raise ConversionError(f"--renderer_config {spec}: a config of model {config.get('name')!r}, "
                                  "not 'pirenderer'")
        return config
    text = Path(spec).read_text()
    if spec.endswith(".json"):
        conf = json.loads(text)
    else:
        import yaml  # PyYAML comes with flax; only needed for the original's .yaml files

        try:
            conf = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConversionError(f"--renderer_config {spec}: not valid YAML ({e})") from e
    conf = conf.get("renderer_conf", conf) if isinstance(conf, dict) else conf
    try:
        return pirenderer_model.model_config(conf)
    except (KeyError, TypeError) as e:
        raise ConversionError(f"--renderer_config {spec}: not a PIRenderer renderer_conf (needs common, "
                              f"mapping_net, warpping_net and editing_net sections; missing {e})") from e


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--denoiser", help="denoising_network.pth (torch) or a .safetensors export")
    parser.add_argument("--renderer", help="renderer.pt (PIRenderer; key net_G_ema) or a .safetensors export")
    parser.add_argument("--out", required=True, help="new folder; gets denoiser/ and renderer/ subfolders")
    parser.add_argument("--config", default="released",
                        help="denoiser sizes: 'released', a config file[:variant], or the original's config as .json")
    parser.add_argument("--renderer_config", default="released",
                        help="renderer sizes: 'released', a config file[:variant], or the original's renderer_conf "
                             "as .yaml or .json")
    args = parser.parse_args(argv)
    if not (args.denoiser or args.renderer):
        parser.error("give --denoiser and/or --renderer")
    out = Path(args.out).expanduser().absolute()
    done = []
    try:
        # Configs first: a bad flag fails before any tensor is read.
        denoiser_config = model_config(args.config) if args.denoiser else None
        renderer_conf = renderer_config(args.renderer_config) if args.renderer else None
        with converted.new_folder(out) as tmp:
            if args.denoiser:
                dreamtalk.convert_checkpoint(args.denoiser, tmp / "denoiser", denoiser_config)
                done.append(f"{out / 'denoiser'} (DreamTalk denoiser, d_model {denoiser_config.d_model}, "
                            f"{denoiser_config.decoder.num_layers} decoder layers per stack)")
            if args.renderer:
                pirenderer.convert_renderer(args.renderer, tmp / "renderer", renderer_conf)
                done.append(f"{out / 'renderer'} (PIRenderer, descriptor {renderer_conf.descriptor_nc}, "
                            f"max {renderer_conf.max_nc} channels)")
    except (ConversionError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"convert_dreamtalk: {e}", file=sys.stderr)
        if not isinstance(e, FileExistsError):
            print(f"convert_dreamtalk: nothing written to {out}", file=sys.stderr)
        return 2
    for line in done:
        print(f"wrote {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
