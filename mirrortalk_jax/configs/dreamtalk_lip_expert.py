r"""DreamTalk's style-aware lip expert (stage 1 of DreamTalk training; never released), trained on SynthTalk.

    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/dreamtalk_lip_expert.py:tiny --workdir=runs/dt_lip_expert_tiny

Variants:
  tiny     2-core CPU, about a minute; SynthTalk tiny (built if missing), log-mel audio, its own small style
           encoder trained jointly.
  default  SynthTalk default at the paper's widths (style encoder of the DreamTalk denoiser's size).
  real     a dataset in the record schema with BFM-64 expression motion and precomputed wav2vec2 features
           (MEAD + HDTF in the paper): set --config.data.dataset_dir=... ; `audio_dim` is the width of the
           per-frame features (2 x 1024 for 50 Hz wav2vec2 rows paired per 25 fps frame).

Frozen style source instead of its own: --config.model.style_encoder_workdir=RUN, a trained DreamTalk
denoiser run (mirrortalk_jax/configs/dreamtalk.py), a converted DreamTalk checkpoint, an SDSE run (mirrortalk_jax/configs/style_encoder.py)
or any run whose model has style_code(motion, mask); its weights are loaded at the start and frozen.
--config.model.conditional=False trains the unconditional expert of the paper's ablation (Table IV).

Watch train/accuracy and train/pos_prob vs train/neg_prob (chance accuracy 0.6, the share of negatives).
"""

import ml_collections

from mirrortalk_jax import base_config


def get_config(arg: str | None = None):
    variant = base_config.variant(arg, ("tiny", "default", "real"), "default")
    tiny = variant == "tiny"
    config = base_config.base_config()
    config.data.synthtalk_variant = "tiny" if tiny else "default"
    config.data.window_frames = 32
    config.data.reference_frames = 48 if tiny else 128  # the style clip (DreamTalk: up to 256 frames)

    m = config.model
    m.name = "dreamtalk_lip_expert"
    m.window = 5  # frames per sync window (the paper does not give n; SyncNet uses 5)
    m.audio_dim = 4 * 80  # log-mel: 4 frames of 80 bands per video frame
    m.audio_mean, m.audio_std = -7.5, 3.7  # fixed input standardisation of SynthTalk log-mel
    m.hidden = 64 if tiny else 256
    m.style_hidden = 16 if tiny else 64  # style features concatenated into both encoders
    m.embed_dim = 32 if tiny else 128
    m.similarity = "affine"  # P_sync = (cos + 1) / 2; "relu": relu embeddings, P_sync = cos (Wav2Lip)
    m.conditional = True
    # Training pairs: aligned, the same clip shifted by near / far frames, and the rest (0.2) another speaker.
    m.positive_prob, m.near_shift_prob, m.far_shift_prob = 0.4, 0.2, 0.2
    m.near_shift, m.far_shift = (2, 5), (5, 10)
    m.pairs_per_clip = 16
    # Style source: a trained run to load and freeze, or (empty) this expert's own style encoder.
    m.style_encoder_workdir = ""
    m.style_encoder = ml_collections.ConfigDict(dict(
        kind="sdse",  # "dreamtalk": the DreamTalk denoiser's architecture (the paper); "sdse": MirrorTalk's
        hidden=32 if tiny else 256, num_heads=4 if tiny else 8, mlp_dim=64 if tiny else 1024,
        num_layers=1 if tiny else 3, style_dim=32 if tiny else 256, num_slots=0,
        max_frames=max(config.data.window_frames, config.data.reference_frames)))

    if tiny:
        base_config.cpu_budget(config, batch_size=16, num_steps=300, warmup_steps=20, eval_every=100,
                               learning_rate=2e-3)
    elif variant == "default":
        config.train.batch_size = 64
        config.train.num_steps = 20_000
        config.train.learning_rate = 3e-4
    else:  # real data: BFM-64 expressions, wav2vec2 features
        config.data.dataset_dir = ""  # required: a dataset in the record schema
        config.data.audio_feature = "precomputed"
        config.data.reference_frames = 256
        m.audio_dim = 2048
        m.audio_mean, m.audio_std = 0.0, 1.0
        m.style_encoder.update(max_frames=256)
        config.train.batch_size = 64
        config.train.num_steps = 100_000
        config.train.learning_rate = 1e-4
    return config
