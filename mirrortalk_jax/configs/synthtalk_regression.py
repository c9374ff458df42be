r"""Audio-only motion regression on SynthTalk: the smallest end-to-end training run, and a baseline.

    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/synthtalk_regression.py:tiny --workdir=runs/regression_tiny

Variants: `tiny` (2-core CPU, about a minute; builds SynthTalk tiny if missing) and `default`.
"""

from mirrortalk_jax import base_config


def get_config(arg: str | None = None):
    variant = base_config.variant(arg, ("tiny", "default"), "default")
    config = base_config.base_config()
    config.data.synthtalk_variant = variant
    config.model.name = "audio_regression"
    config.model.audio_dim = 4 * 80  # 4 log-mel frames of 80 bands per video frame
    config.model.hidden = 64 if variant == "tiny" else 256
    config.model.num_layers = 2 if variant == "tiny" else 6
    config.model.kernel_size = 5
    if variant == "tiny":
        base_config.cpu_budget(config, batch_size=8, num_steps=200, warmup_steps=20, eval_every=100)
    return config
