r"""Audio-only motion regression on SynthTalk: the smallest end-to-end training run, and a baseline.

    python -m mirrortalk_jax.main --config=configs/synthtalk_regression.py:tiny --workdir=runs/regression_tiny

Variants: `tiny` (2-core CPU, about a minute; builds SynthTalk tiny if missing) and `default`.
"""

from mirrortalk_jax import base_config


def get_config(arg: str | None = None):
    variant = arg or "default"
    if variant not in ("tiny", "default"):
        raise ValueError(f"unknown variant {variant!r}: use tiny or default")
    config = base_config.base_config()
    config.data.synthtalk_variant = variant
    config.model.name = "audio_regression"
    config.model.audio_dim = 4 * 80  # 4 log-mel frames of 80 bands per video frame
    config.model.hidden = 64 if variant == "tiny" else 256
    config.model.num_layers = 2 if variant == "tiny" else 6
    config.model.kernel_size = 5
    if variant == "tiny":
        config.train.batch_size = 8
        config.train.num_steps = 200
        config.train.warmup_steps = 20
        config.train.log_every = 20
        config.train.eval_every = 100
        config.train.checkpoint_every = 100
    return config
