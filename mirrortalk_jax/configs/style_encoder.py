r"""SDSE stage 1: MirrorTalk's semantically disentangled style encoder, trained on SynthTalk.

    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/style_encoder.py:tiny --workdir=runs/style_encoder_tiny

Triplet loss on speakers (anchor: a reference clip, positive: a window of another utterance of the same
speaker, negative: another speaker's window in the batch), plus HSIC and orthogonality terms that keep the
style code free of speech content (see mirrortalk_jax/models/mirrortalk/style_encoder.py).

Variants: `tiny` (2-core CPU, about a minute; builds SynthTalk tiny if missing) and `default`. The paper's
ablations are options after the variant: `mirrortalk_jax/configs/style_encoder.py:tiny,no_hsic` (also no_triplet,
no_memory_bank; see base_config.STYLE_ENCODER_ABLATIONS).
Set `--config.model.content_encoder_workdir=runs/motion_expert_tiny` (a mirrortalk_jax/configs/motion_expert.py run) to use a
trained motion expert as the frozen content encoder; empty uses a fixed random projection of the mean audio
features.
"""

import ml_collections

from mirrortalk_jax import base_config


def get_config(arg: str | None = None):
    variant, ablations = base_config.variant_and_options(arg, ("tiny", "default"), "default",
                                                         base_config.STYLE_ENCODER_ABLATIONS)
    tiny = variant == "tiny"
    config = base_config.base_config()
    config.data.synthtalk_variant = variant
    config.data.window_frames = 32
    config.data.reference_frames = 48 if tiny else 64

    m = config.model
    m.name = "style_encoder"
    m.hidden = 64 if tiny else 256
    m.num_layers = 2 if tiny else 4
    m.num_heads = 4
    m.mlp_dim = 4 * m.hidden
    m.num_slots = 8 if tiny else 32  # style memory bank
    m.style_dim = 32 if tiny else 128
    m.content_dim = 32 if tiny else 128  # must match the content encoder's content_embedding width
    m.max_frames = max(config.data.window_frames, config.data.reference_frames)
    m.audio_dim = 4 * 80  # log-mel frames per video frame, for the default random content projection
    # A trained motion-expert workdir: its architecture is rebuilt from the run's config and the trainer loads
    # and freezes its weights (content_dim must equal its embed_dim). Empty: a fixed random projection of
    # the mean audio features.
    m.content_encoder_workdir = ""
    m.num_speakers = 4 if tiny else 24  # SynthTalk training speakers; 0 disables speaker classification
    m.margin = 0.2
    m.distance = "cosine"  # triplet distance: "cosine" (1 - cos) or "l2" (squared Euclidean)
    m.hard_negatives = False  # closest other-speaker window as negative instead of a random one
    m.loss_weights = ml_collections.ConfigDict(dict(triplet=1.0, hsic=1.0, ortho=0.1, content=0.1, cls=0.1))
    # Transformer layers as one scanned stack, and what the backward pass recomputes ("none", "full", "dots"):
    # docs/scaling.md "Scan over layers and rematerialisation". Scanning changes the parameter layout.
    m.scan_layers = False
    m.remat = "none"

    for name in sorted(ablations):
        base_config.apply_overrides(m, base_config.STYLE_ENCODER_ABLATIONS[name])

    if tiny:
        base_config.cpu_budget(config, batch_size=8, num_steps=300, warmup_steps=20, eval_every=100,
                               learning_rate=1e-3)
    else:
        config.train.batch_size = 64
        config.train.num_steps = 20_000
        config.train.learning_rate = 3e-4
    return config
