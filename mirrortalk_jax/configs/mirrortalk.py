r"""MirrorTalk stage 2: the hierarchically modulated DiT generator, conditioned on SDSE style codes.

    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/mirrortalk.py:tiny --workdir=runs/mirrortalk_tiny

The full recipe (each stage a run; later stages load earlier runs' weights and freeze them):

    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/motion_expert.py:tiny --workdir=runs/motion_expert_tiny
    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/style_encoder.py:tiny --workdir=runs/style_encoder_tiny \
        --config.model.content_encoder_workdir=runs/motion_expert_tiny
    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/mirrortalk.py:tiny --workdir=runs/mirrortalk_tiny \
        --config.model.style_encoder_workdir=runs/style_encoder_tiny \
        --config.model.motion_expert_workdir=runs/motion_expert_tiny

Ablations are options after the variant, e.g. `mirrortalk_jax/configs/mirrortalk.py:tiny,no_hier_mod` (gates fixed at 1);
the style-encoder ablations (no_hsic, no_triplet, no_memory_bank) change the jointly trained SDSE here, and
`mirrortalk_jax/configs/style_encoder.py:tiny,no_hsic` in the staged recipe.
Without the two workdirs the SDSE is trained jointly from scratch and there is no sync loss.
Variants: `tiny` (2-core CPU, minutes), `base` (paper scale: 512 wide, 12 blocks), `large` (pod scale: 1024
wide, 24 blocks, FSDP over the `fsdp` mesh axis).
"""

import ml_collections

from mirrortalk_jax import base_config

SIZES = {  # hidden, blocks, heads, SDSE hidden, SDSE layers, style dim, batch
    "tiny": (64, 2, 4, 64, 2, 32, 8),
    "base": (512, 12, 8, 256, 4, 256, 64),
    "large": (1024, 24, 16, 512, 6, 256, 256),
}
REMAT = {"tiny": "none", "base": "dots", "large": "full"}  # measured: docs/scaling.md


def get_config(arg: str | None = None):
    variant, ablations = base_config.variant_and_options(
        arg, SIZES, "base", {**base_config.STYLE_ENCODER_ABLATIONS, **base_config.GENERATOR_ABLATIONS})
    hidden, blocks, heads, sdse_hidden, sdse_layers, style_dim, batch = SIZES[variant]
    tiny = variant == "tiny"
    config = base_config.base_config()
    config.data.synthtalk_variant = "tiny" if tiny else "default"
    config.data.window_frames = 32 if tiny else 64
    config.data.reference_frames = 48 if tiny else 128

    m = config.model
    m.name = "mirrortalk"
    m.audio_dim = 4 * 80
    # Fixed audio standardisation: log-mel with floor log(1e-5) is about -7.5 +- 3.7 on SynthTalk; set 0 / 1 (or
    # your features' statistics) for other `data.audio_feature`s.
    m.audio_mean, m.audio_std = -7.5, 3.7
    m.hidden, m.num_layers, m.num_heads = hidden, blocks, heads
    m.mlp_ratio = 4.0
    m.audio_radius = 4  # frames of audio each frame attends to on either side
    # Blocks as one stacked module applied by nnx.scan (compiled once, not num_layers times) and rematerialised in
    # the backward pass: "dots" keeps the projections' outputs, "full" only each block's input (the least
    # memory). Both change nothing numerically; scanning changes the parameter layout (blocks/<name> with a
    # leading layers axis; models/nn/layer_stack.convert_layer_layout converts). docs/scaling.md.
    m.scan_layers = not tiny
    m.remat = REMAT[variant]
    # Gate logits at initialisation, (audio, style) per region: the prior lower = audio, upper = style.
    m.gate_prior = ml_collections.ConfigDict({"lower": (2.0, -2.0), "upper": (-2.0, 2.0), "eyes": (-2.0, 2.0),
                                              "pose": (0.0, 2.0)})
    m.style_encoder_workdir = ""  # a mirrortalk_jax/configs/style_encoder.py run; empty: SDSE trained jointly
    m.freeze_style_encoder = True  # with a workdir: frozen (True) or fine-tuned (False)
    m.motion_expert_workdir = ""  # a mirrortalk_jax/configs/motion_expert.py run; empty: no sync loss

    # SDSE used when no style_encoder_workdir is given (same fields as mirrortalk_jax/configs/style_encoder.py's model).
    s = m.style_encoder = ml_collections.ConfigDict()
    s.name = "style_encoder"
    s.hidden, s.num_layers, s.num_heads = sdse_hidden, sdse_layers, 4
    s.mlp_dim = 4 * sdse_hidden
    s.num_slots = 8 if tiny else 32
    s.style_dim = style_dim
    s.content_dim = 32
    s.max_frames = max(config.data.window_frames, config.data.reference_frames)
    s.audio_dim = m.audio_dim
    s.content_encoder_workdir = ""
    s.num_speakers = 0
    s.margin = 0.2
    s.distance = "cosine"
    s.hard_negatives = False
    s.loss_weights = ml_collections.ConfigDict(dict(triplet=1.0, hsic=1.0, ortho=0.1, content=0.1, cls=0.0))
    s.scan_layers, s.remat = m.scan_layers, m.remat

    m.hierarchical_modulation = True  # False: the ablation without per-region, per-timestep gates
    for name in sorted(ablations):
        if name in base_config.GENERATOR_ABLATIONS:
            base_config.apply_overrides(m, base_config.GENERATOR_ABLATIONS[name])
        else:
            base_config.apply_overrides(s, base_config.STYLE_ENCODER_ABLATIONS[name])

    m.diffusion = ml_collections.ConfigDict(dict(schedule="cosine", num_steps=1000, prediction="x0",
                                                 weighting="min_snr"))
    # Classifier-free guidance: drop audio and style independently, plus both at once.
    m.cfg = ml_collections.ConfigDict(dict(p_drop_audio=0.1, p_drop_style=0.1, p_drop_both=0.05))
    m.loss_weights = ml_collections.ConfigDict(dict(smooth=0.5, sync=0.05, style=0.5))
    m.eval_sampler_steps = 20  # DDIM steps of the periodic evaluation's samples (and preview videos)

    config.train.batch_size = batch
    config.train.ema_decay = 0.999 if not tiny else 0.0
    if tiny:
        base_config.cpu_budget(config, batch_size=batch, num_steps=400, warmup_steps=40, eval_every=200,
                               learning_rate=1e-3)
    else:
        config.train.num_steps = 200_000
        config.train.learning_rate = 2e-4
        config.train.warmup_steps = 2000
        config.train.checkpoint_every = 2000
    if variant == "large":
        config.mesh.ici_fsdp = -1  # shard parameters and optimizer state over all chips of a slice
        config.mesh.ici_data = 1
        config.mesh.dcn_data = -1
    return config
