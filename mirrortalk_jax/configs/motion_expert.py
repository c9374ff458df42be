r"""The motion expert (lip-sync expert on lower-face motion) trained on SynthTalk.

    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/motion_expert.py:tiny --workdir=runs/motion_expert_tiny

Variants: `tiny` (2-core CPU, about a minute; builds SynthTalk tiny if missing) and `default`. Watch
`train/accuracy` and `train/pos_prob` vs `train/neg_prob` in WORKDIR/metrics.jsonl (chance accuracy is 0.6, the
share of negatives).
"""

from mirrortalk_jax import base_config


def get_config(arg: str | None = None):
    variant = base_config.variant(arg, ("tiny", "default"), "default")
    config = base_config.base_config()
    config.data.synthtalk_variant = variant
    config.model.name = "motion_expert"
    config.model.window = 5  # K frames per window, as SyncNet
    config.model.audio_dim = 4 * 80  # 4 log-mel frames of 80 bands per video frame
    config.model.hidden = 64 if variant == "tiny" else 256
    config.model.embed_dim = 32 if variant == "tiny" else 128
    # Training pairs: aligned, same clip shifted by near_shift / far_shift frames (either direction), and the
    # rest (here 0.2) audio from another batch element, preferably another speaker.
    config.model.positive_prob = 0.4
    config.model.near_shift_prob = 0.2
    config.model.far_shift_prob = 0.2
    config.model.near_shift = (2, 5)  # inclusive range of frames
    config.model.far_shift = (5, 10)
    config.model.pairs_per_clip = 16  # pairs drawn from each window per step: more signal per decoded batch
    # Audio input standardisation (fixed): log-mel with floor log(1e-5) is about -7.5 +- 3.7 on SynthTalk.
    # Set 0 / 1 (or your features' statistics) for other `data.audio_feature`s.
    config.model.audio_mean = -7.5
    config.model.audio_std = 3.7
    config.model.init_logit_scale = 5.0
    if variant == "tiny":
        base_config.cpu_budget(config, batch_size=16, num_steps=300, warmup_steps=20, eval_every=100,
                               learning_rate=2e-3)
    else:
        config.train.batch_size = 64
        config.train.num_steps = 20_000
    return config
