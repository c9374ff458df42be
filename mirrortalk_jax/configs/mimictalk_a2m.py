r"""MimicTalk ICS-A2M: in-context audio-to-motion by flow matching, trained by audio-guided motion infilling.

    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/mimictalk_a2m.py:tiny --workdir=runs/mimictalk_a2m_tiny

With the lip-sync loss of a frozen motion expert (a mirrortalk_jax/configs/motion_expert.py run):

    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/mimictalk_a2m.py:tiny --workdir=runs/mimictalk_a2m_tiny \
        --config.model.motion_expert_workdir=runs/motion_expert_tiny --config.model.task.sync_weight=0.1

Variants:
  tiny          SynthTalk on a 2-core CPU in minutes: motion = the 18-channel SynthTalk motion space, audio = the
                pipeline's 320-d log-mel per video frame (audio_rate 1), a 64-wide 2-block transformer.
  released      the released checkpoint's architecture (checkpoints/240112_icl_audio2secc_vox2_cmlr): 64-d BFM
                expression at 25 fps, HuBERT-large features (1024-d, 50 Hz = audio_rate 2), 256 wide, 16 blocks,
                8 heads x 64, without the auxiliary pitch/blink/mouth-amp features (34.95 M parameters).
  released_aux  the same with the auxiliary features (audio input 256 + 3 x 32; 34.97 M parameters).
Converted checkpoints (tools/convert_mimictalk.py) carry their own config; `released*` are for sampling
benchmarks and for training at the original's size on a dataset with BFM motion and HuBERT features.
"""

import ml_collections

from mirrortalk_jax import base_config

VARIANTS = ("tiny", "released", "released_aux")


def get_config(arg: str | None = None):
    variant = base_config.variant(arg, VARIANTS, "tiny")
    tiny = variant == "tiny"
    config = base_config.base_config()
    config.data.synthtalk_variant = "tiny" if tiny else "default"
    config.data.window_frames = 48 if tiny else 200  # the original trains on clips of several seconds
    config.data.reference_frames = 32 if tiny else 100

    m = config.model
    m.name = "mimictalk_a2m"
    m.mode = "icl_flow_matching"
    # Architecture (models/mimictalk/a2m.py, models/mimictalk/icl_transformer.py).
    m.motion_dim = 0 if tiny else 64  # 0: the dataset's motion space
    m.audio_in_dim = 4 * 80 if tiny else 1024
    m.audio_rate = 1 if tiny else 2  # audio frames per motion frame
    # Fixed standardisation of the audio input (log-mel with floor log(1e-5) is about -7.5 +- 3.7 on SynthTalk);
    # 0 / 1 for HuBERT features, as the original.
    m.audio_mean, m.audio_std = (-7.5, 3.7) if tiny else (0.0, 1.0)
    m.audio_width = 64 if tiny else 256  # width of the conv-BN-GELU-conv audio encoder
    m.use_aux_features = variant == "released_aux"  # pitch (from f0), blink, mouth amplitude
    m.aux_dim = 32
    m.pitch_bins = 300
    m.dim = 64 if tiny else 256
    m.depth = 2 if tiny else 16
    m.heads = 4 if tiny else 8
    m.dim_head = 16 if tiny else 64
    m.ff_mult = 4.0
    m.time_hidden_dim = 4 * m.dim
    m.conv_kernel = 31
    m.num_registers = 16
    m.register_position = -10000
    m.rope_theta = 50000.0
    m.logit_scale = 10.0
    m.attention_query_chunk = 128  # queries per attention block on long clips (speed only; 0: one block)

    # Training task: audio-guided motion infilling (not released by MimicTalk; see objectives/infill_masks.py).
    t = m.task = ml_collections.ConfigDict()
    t.frac_lengths_mask = (0.6, 1.0)  # fraction of frames to predict, span or i.i.d. mode per batch
    t.sigma_min = 0.0
    t.p_drop_prompt = 0.2  # prompt replaced by the null frame: trains the branch that guidance subtracts
    t.p_null_aux = 0.5  # blink / mouth-amp swapped for null vectors (the original's training-time dropout)
    t.sync_weight = 0.0  # lip-sync loss of the frozen motion expert on x1_hat = x_t + (1 - t) v
    t.sync_min_t = 0.3  # only where x1_hat is informative (at t near 0 it is the mean motion)
    m.motion_expert_workdir = ""  # a mirrortalk_jax/configs/motion_expert.py run (same motion space and audio features)

    # Sampling of the trainer's periodic evaluation (the original's CLI: 20 points, guidance 1.5, temp 0.3).
    # The original's inference defaults (temperature 0.3: x0 = 0.3 N(0, I)). On SynthTalk's held-out speakers the
    # tiny run scores M-LMD 1.81 at 0.3 against 2.56 at temperature 1.0 (10 steps, guidance 1.5).
    m.eval_sampling = ml_collections.ConfigDict({"steps": 10 if tiny else 20, "guidance_scale": 1.5,
                                                     "temperature": 0.3, "method": "midpoint"})

    if tiny:
        config.train.ema_decay = 0.0
        base_config.cpu_budget(config, batch_size=8, num_steps=400, warmup_steps=40, eval_every=200,
                               learning_rate=1e-3)
    else:
        config.train.batch_size = 32
        config.train.num_steps = 200_000
        config.train.learning_rate = 1e-4
        config.train.warmup_steps = 2000
        config.train.checkpoint_every = 2000
        config.train.ema_decay = 0.999
    return config
