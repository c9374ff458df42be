r"""Speech encoders (HuBERT, wav2vec 2.0) at the sizes of the released checkpoints, and how features are cut.

    python tools/convert_hf_audio.py --hf_dir=hubert-large-ls960-ft --out=ckpt/hubert_large
    python benchmarks/audio_features.py --config=mirrortalk_jax/configs/released/audio_encoders.py:hubert_large

Variants (the `model` part is `config_from_hf` of the Hugging Face config.json of the named checkpoint, so a
checkpoint converted with tools/convert_hf_audio.py builds exactly this model):

  hubert_large           facebook/hubert-large-ls960-ft: MimicTalk's encoder (last_hidden_state, 1024-d, 50 Hz)
  wav2vec2_large_xlsr53  jonatasgrosman/wav2vec2-large-xlsr-53-english (and facebook/wav2vec2-large-xlsr-53):
                         DreamTalk's encoder (last_hidden_state, 1024-d, 50 Hz)
  hubert_base            facebook/hubert-base-ls960 (group-norm conv encoder, post-LN transformer, 768-d)
  wav2vec2_base          facebook/wav2vec2-base-960h (same layout as hubert_base)
  tiny                   the structure of the large models at widths 32/24 and 2 layers (tests, CPU demos)

`features` sets what `mirrortalk features` extracts: the hidden-state `layer` (-1 = last_hidden_state, the
layer both talking-head systems use) and the chunking of long audio (`chunk_frames` output frames per chunk,
`context_frames` of extra audio on each side; see mirrortalk_jax/data/encoder_features.py).
"""

import ml_collections

from mirrortalk_jax import base_config
from mirrortalk_jax.models.audio_encoders.wav2vec2 import config_from_hf

_CONV = {"conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
         "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "layer_norm_eps": 1e-5,
         "feat_extract_activation": "gelu", "hidden_act": "gelu"}
_LARGE = {**_CONV, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
          "feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True}
_BASE = {**_CONV, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
         "feat_extract_norm": "group", "do_stable_layer_norm": False, "conv_bias": False}

# The fields of each released config.json that the port reads (the rest are training or head settings).
HF_CONFIGS = {
    "hubert_large": {"model_type": "hubert", **_LARGE},
    "wav2vec2_large_xlsr53": {"model_type": "wav2vec2", **_LARGE},
    "hubert_base": {"model_type": "hubert", **_BASE},
    "wav2vec2_base": {"model_type": "wav2vec2", **_BASE},
    "tiny": {"model_type": "hubert", **_LARGE, "conv_dim": [24] * 7, "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 4, "intermediate_size": 64},
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = base_config.variant(arg, tuple(HF_CONFIGS), "hubert_large")
    config = ml_collections.ConfigDict()
    config.model = config_from_hf(HF_CONFIGS[variant])
    config.features = ml_collections.ConfigDict()
    config.features.layer = -1
    # 20 s of output per chunk with 2 s of context each side; long audio then costs 1.2x one-shot compute.
    config.features.chunk_frames = 1000
    config.features.context_frames = 100
    config.features.batch_size = 4
    return config
