r"""SyncNet (syncnet_python `SyncNetModel.S`, weights `syncnet_v2.model`) for LSE-C / LSE-D; evaluation only.

    python tools/convert_syncnet.py --checkpoint=syncnet_v2.model --out=ckpt/syncnet

The weights are user-supplied (not on PyPI); the converter builds the `released` variant unless told otherwise
(--config=mirrortalk_jax/configs/released/syncnet.py:tiny). Variants: `released` (the published network: 13.6 M parameters, 1024-d
embeddings) and `tiny` (every channel count / 8, 128-d embeddings: the size of the test fixture).
Use the converted checkpoint with evaluate.lse.SyncNetEmbedder and evaluate.sync.clip_sync.
"""

from mirrortalk_jax import base_config


def get_config(arg: str | None = None):
    variant = base_config.variant(arg, ("released", "tiny"), "released")
    config = base_config.base_config()
    config.model.name = "syncnet"
    config.model.num_layers_in_fc_layers = 1024 if variant == "released" else 128  # embedding size (original name)
    config.model.width_divisor = 1 if variant == "released" else 8  # released channel counts are divided by it
    # float32-exact convolutions on GPU/TPU (their default precision is lower); the metric should not depend
    # on the accelerator. "default" is faster where exactness does not matter.
    config.model.precision = "highest"
    return config
