"""Converts a Hugging Face HuBERT / wav2vec 2.0 model folder into a checkpoint this project loads.

    python tools/convert_hf_audio.py --hf_dir=hubert-large-ls960-ft --out=ckpt/hubert_large
    python tools/convert_hf_audio.py --hf_dir=wav2vec2-large-xlsr-53-english --weights=.../pytorch_model.bin \
        --out=ckpt/wav2vec2_xlsr

The folder holds config.json (which decides the architecture: model_type, sizes, layer-norm arrangement) and the
weights as safetensors (model.safetensors or sharded with an index); `--weights` points at another file instead,
e.g. a pytorch_model.bin (read with torch.load(weights_only=True); needs the `torch` extra). Base models
(HubertModel / Wav2Vec2Model) and *ForCTC / *ForPreTraining checkpoints (prefixed keys; their heads are dropped)
both work. The output folder stores the model config and loads with runs.loader.load_model or
runs.loader.load_model, and feeds `mirrortalk features`. Exits 2 with a message naming every missing,
unused or mis-shaped tensor when the weights do not fit the config.
"""

from __future__ import annotations

import argparse
import sys

from mirrortalk_jax.convert import hf_audio
from mirrortalk_jax.runs.converted import model_config
from mirrortalk_jax.convert.foreign import ConversionError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hf_dir", required=True, help="Hugging Face model folder (config.json + weights)")
    parser.add_argument("--out", required=True, help="new folder for the converted checkpoint")
    parser.add_argument("--weights", default=None, help="weights file, if not the folder's safetensors")
    args = parser.parse_args(argv)
    try:
        out = hf_audio.convert_folder(args.hf_dir, args.out, weights=args.weights)
    except (ConversionError, FileExistsError) as e:
        print(f"convert_hf_audio: {e}", file=sys.stderr)
        return 2
    c = model_config(out)
    arrangement = "pre-LN" if c.do_stable_layer_norm else "post-LN"
    print(f"wrote {out} ({c.name}, {c.num_hidden_layers} layers x {c.hidden_size}, {arrangement}, "
          f"{c.feat_extract_norm}-norm conv encoder)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
