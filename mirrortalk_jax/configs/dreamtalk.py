r"""DreamTalk's diffusion denoiser (arXiv 2312.09767): x0-predicting diffusion over expression coefficients,
conditioned on per-frame audio windows and a style code from a reference clip, with classifier-free guidance.

    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/dreamtalk.py:tiny --workdir=runs/dreamtalk_tiny

With the paper's lip-sync loss of a frozen style-aware lip expert (a mirrortalk_jax/configs/dreamtalk_lip_expert.py run on the
same motion space and audio features; its weights are loaded at the start and frozen):

    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/dreamtalk.py:tiny --workdir=runs/dreamtalk_tiny \
        --config.model.lip_expert_workdir=runs/dt_lip_expert_tiny --config.model.sync_weight=0.1

The released weights (checkpoints/denoising_network.pth) convert to a loadable checkpoint with

    python tools/convert_dreamtalk.py --denoiser denoising_network.pth --out ckpt/dreamtalk [--config released]

Variants:
  tiny      SynthTalk on a 2-core CPU in minutes: motion = the 18-channel SynthTalk space (lower face = its
            `lower` group, upper = every other channel), audio = the pipeline's 320-d log-mel per video frame
            (windows of 7 frames, stride 1), 64 wide, 2 layers per stack.
  base      SynthTalk default at the original's widths (256 wide, 8 heads, 3 layers per stack).
  released  the released model exactly (11.86 M parameters): 64 BFM expression coefficients split into the
            original's upper / lower index lists, wav2vec2 rows of 1024 at 50 Hz (2 rows per 25 fps frame,
            windows of 11 rows centred on row 2i), style clips of up to 256 frames. For conversion, sampling
            benchmarks, and training at full size on a dataset with BFM motion and precomputed wav2vec2 features
            (per-frame features = the frame's 2 rows concatenated, 2048 wide).
"""

import ml_collections

from mirrortalk_jax import base_config

VARIANTS = ("tiny", "base", "released")

# The original's BFM-64 expression split (mirrortalk_jax/configs/default.py: DECODER.upper_face3d_indices / lower_face3d_indices).
BFM_UPPER = (6, 8) + tuple(range(15, 64))
BFM_LOWER = (0, 1, 2, 3, 4, 5, 7, 9, 10, 11, 12, 13, 14)


def _stack(num_heads: int, num_layers: int, ffn_dim: int, pos_embed_len: int) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"num_heads": num_heads, "num_layers": num_layers, "ffn_dim": ffn_dim,
                                          "pos_embed_len": pos_embed_len})


def get_config(arg: str | None = None):
    variant = base_config.variant(arg, VARIANTS, "base")
    tiny, released = variant == "tiny", variant == "released"
    config = base_config.base_config()
    config.data.synthtalk_variant = "tiny" if tiny else "default"
    config.data.window_frames = 32 if tiny else 64  # the original trains on 64-frame clips
    config.data.reference_frames = 48 if tiny else 256  # style clip: up to STYLE_MAX_LEN frames

    m = config.model
    m.name = "dreamtalk"
    d, heads, layers, ffn = (64, 4, 2, 128) if tiny else (256, 8, 3, 1024)
    m.d_model = d
    m.motion_dim = 64 if released else 0  # 0: the dataset's motion space
    m.audio_dim = 1024 if released else 4 * 80  # width of one audio feature row
    m.audio_stride = 2 if released else 1  # feature rows per video frame (window centre of frame i: row stride*i)
    m.win_size = 5 if not tiny else 3  # window = 2 * win_size + 1 rows
    w = 2 * m.win_size + 1
    # Fixed standardisation of the audio rows (SynthTalk log-mel is about -7.5 +- 3.7); 0 / 1 for wav2vec2, as
    # the original (an identity).
    m.audio_mean, m.audio_std = (0.0, 1.0) if released else (-7.5, 3.7)
    m.dropout = 0.1
    m.layer_norm_eps = 1e-5
    m.activation = "relu"
    m.normalize_before = False
    m.content_encoder = _stack(heads, layers, ffn, w)
    m.style_max_len = config.data.reference_frames  # STYLE_MAX_LEN: style clips are padded to it (null clip length)
    m.style_encoder = _stack(heads, layers, ffn, m.style_max_len)
    m.decoder = _stack(heads, layers, ffn, w)
    m.decoder.tail_hidden = d // 2
    # Output channels of the upper / lower stacks; empty: lower = the motion space's `lower` group, upper = the rest.
    m.decoder.upper_indices = BFM_UPPER if released else ()
    m.decoder.lower_indices = BFM_LOWER if released else ()
    m.diffusion = ml_collections.ConfigDict({"num_steps": 1000, "beta_1": 1e-4, "beta_T": 0.02})
    # Classifier-free guidance: style clip -> null clip with this probability in training; sampling scale
    # (None: guidance off; 1.0 = the demo's default, which equals the conditional pass).
    m.cf_guidance = ml_collections.ConfigDict({"null_prob": 0.1, "scale": 1.0})
    m.sampler = ml_collections.ConfigDict({"ddim_steps": 10})
    # Lip-sync loss L_sync = -log P_sync of the frozen lip expert on the x0 estimate (not in the exact port). The
    # expert must read the per-frame audio features of this model's batches: its audio_dim = audio_stride x
    # audio_dim here (checked when the model is built).
    m.lip_expert_workdir = ""  # a mirrortalk_jax/configs/dreamtalk_lip_expert.py run; empty: no sync loss
    m.sync_weight = 0.0
    # Only clips with t <= sync_max_t (of diffusion.num_steps) are judged: there sqrt(alpha_bar) >= 0.44 (SNR >=
    # 0.24, about MimicTalk's sync_min_t = 0.3); noisier x_t hold little of the mouth, and the x0 estimate tends to
    # the smooth conditional mean that a sync loss would only pull against the denoising loss. The paper gives no
    # bound.
    m.sync_max_t = 400

    if released:
        config.data.audio_feature = "precomputed"
        config.data.dataset_dir = ""  # a dataset with BFM-64 expression motion and wav2vec2 features
    if tiny:
        base_config.cpu_budget(config, batch_size=8, num_steps=400, warmup_steps=40, eval_every=200,
                               learning_rate=1e-3)
    else:
        config.train.batch_size = 16  # the original's comments: 16 clips x 64 frames
        config.train.num_steps = 200_000
        config.train.learning_rate = 1e-4  # StyleTalk's (same first author); the paper gives none
        config.train.warmup_steps = 2000
        config.train.checkpoint_every = 2000
        config.train.ema_decay = 0.999
    return config
