r"""DreamTalk's diffusion style predictor (style code from audio + identity; never released), on SynthTalk.

    python -m mirrortalk_jax.main --config=mirrortalk_jax/configs/dreamtalk_style_predictor.py:tiny --workdir=runs/dt_style_tiny

Targets are the style codes of each training window given by a trained, frozen style encoder:
--config.model.style_encoder_workdir=RUN, a DreamTalk denoiser run (mirrortalk_jax/configs/dreamtalk.py), a converted
DreamTalk checkpoint, or any run whose model has style_code(motion, mask) (a dreamtalk_lip_expert run, an
SDSE run). Left empty, the targets come from a fixed randomly initialised style encoder: enough to check that
everything runs (the tiny variant does that), meaningless as a style space.

The identity is the landmark geometry of the first frame of *another* clip of the same speaker
(data.reference_landmarks: the paper's cross-identity training). On SynthTalk, face shape and speaking style
are drawn independently per speaker, so identity can only help by recognising training speakers; on real
data (MEAD in the paper) identity and style correlate.

Variants:
  tiny     2-core CPU, about a minute; SynthTalk tiny (built if missing), random frozen style targets.
  default  SynthTalk default at the paper's sizes; set style_encoder_workdir.
  real     a dataset in the record schema with landmarks_3d and precomputed wav2vec2 features
           (--config.data.dataset_dir=...); set style_encoder_workdir to the trained DreamTalk run.
"""

import ml_collections

from mirrortalk_jax import base_config


def get_config(arg: str | None = None):
    variant = base_config.variant(arg, ("tiny", "default", "real"), "default")
    tiny = variant == "tiny"
    config = base_config.base_config()
    config.data.synthtalk_variant = "tiny" if tiny else "default"
    config.data.window_frames = 32 if tiny else 64  # the clip whose style is predicted (DreamTalk: 64 frames)
    config.data.reference_frames = 8  # the reference motion is not read; its clip gives the identity frame
    config.data.reference_landmarks = True

    m = config.model
    m.name = "dreamtalk_style_predictor"
    m.style_encoder_workdir = ""
    # The fixed random style encoder used when style_encoder_workdir is empty (kinds as in the lip expert).
    m.style_encoder = ml_collections.ConfigDict(dict(
        kind="sdse", hidden=32 if tiny else 256, num_heads=4 if tiny else 8, mlp_dim=64 if tiny else 1024,
        num_layers=1 if tiny else 3, style_dim=32 if tiny else 256, num_slots=0,
        max_frames=config.data.window_frames))
    m.code_mean, m.code_std = 0.0, 1.0  # fixed standardisation of the target codes
    m.audio_dim = 4 * 80  # log-mel: 4 frames of 80 bands per video frame
    m.audio_mean, m.audio_std = -7.5, 3.7
    m.audio_pool = 4  # frames per audio token
    m.max_audio_tokens = 64
    m.num_landmarks = 68
    m.use_identity = True  # False: the paper's "without speaker info" ablation
    m.hidden = 64 if tiny else 256
    m.num_layers = 2 if tiny else 4
    m.num_heads = 4 if tiny else 8
    m.mlp_dim = 4 * m.hidden
    m.diffusion = ml_collections.ConfigDict(dict(schedule="linear", num_steps=1000, prediction="x0",
                                                 weighting="none"))
    # Classifier-free guidance drops: audio, identity, both (sampling: Guidance(audio_scale, style_scale=identity)).
    m.cfg = ml_collections.ConfigDict(dict(p_drop_audio=0.1, p_drop_identity=0.1, p_drop_both=0.1))

    if tiny:
        base_config.cpu_budget(config, batch_size=16, num_steps=200, warmup_steps=20, eval_every=100,
                               learning_rate=1e-3)
    elif variant == "default":
        config.train.batch_size = 64
        config.train.num_steps = 50_000
        config.train.learning_rate = 1e-4
    else:
        config.data.dataset_dir = ""  # required: a dataset in the record schema
        config.data.audio_feature = "precomputed"
        m.audio_dim = 2048  # 50 Hz wav2vec2 rows paired per 25 fps frame
        m.audio_mean, m.audio_std = 0.0, 1.0
        m.style_encoder.update(max_frames=64)
        config.train.batch_size = 64
        config.train.num_steps = 100_000
        config.train.learning_rate = 1e-4
    return config
