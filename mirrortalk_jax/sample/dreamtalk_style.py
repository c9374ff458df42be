"""Sampling DreamTalk's style predictor (models/dreamtalk/style_predictor.py): style codes from audio and an
identity, and motion without a reference clip (the code fed to a DreamTalk denoiser as its ready style code).

    code = dreamtalk_style.predict_style_code(predictor, audio, audio_mask, landmarks, rng, num_steps=10)
    motion, code = dreamtalk_style.generate_without_reference(predictor, denoiser, audio, audio_mask, landmarks, rng)
"""

from __future__ import annotations

import jax
from flax import nnx

from mirrortalk_jax.models.dreamtalk.denoiser import DreamTalk
from mirrortalk_jax.models.dreamtalk.net import DreamTalkDenoiser
from mirrortalk_jax.models.dreamtalk.style_predictor import DreamTalkStylePredictor
from mirrortalk_jax.sample import compiled
from mirrortalk_jax.sample import diffusion as samplers
from mirrortalk_jax.sample import dreamtalk as dreamtalk_sampling


def denoise_fn(predictor: DreamTalkStylePredictor) -> samplers.Denoiser:
    """The samplers' convention over cond = {"audio", "audio_mask", "identity"}; drop_style drops identity."""
    def denoise(x_t, t, cond, drop_audio, drop_style):
        return predictor.net(x_t[:, 0], t, cond["audio"], cond["audio_mask"], cond.get("identity"), drop_audio,
                             drop_style)[:, None]
    return denoise


def sample_style_code(predictor: DreamTalkStylePredictor, audio_features: jax.Array, audio_mask: jax.Array,
                      reference_landmarks: jax.Array | None, rng: jax.Array, *, sampler: str = "ddim",
                      num_steps: int = 10, guidance: samplers.Guidance = samplers.NO_GUIDANCE,
                      **sampler_kwargs) -> jax.Array:
    """Style codes (B, S) for audio (B, L, F) (+ valid mask (B, L)) and identity landmarks (B, K, 3)."""
    if sampler not in samplers.SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {sorted(samplers.SAMPLERS)}")
    cond = {"audio": audio_features, "audio_mask": audio_mask.astype(bool)}
    identity = predictor.identity(reference_landmarks)
    if identity is not None:
        cond["identity"] = identity
    b = audio_features.shape[0]
    x0 = samplers.SAMPLERS[sampler](denoise_fn(predictor), predictor.schedule(), (b, 1, predictor.style_dim), rng,
                                    num_steps=num_steps, cond=cond, guidance=guidance,
                                    prediction=predictor.prediction, **sampler_kwargs)
    return x0[:, 0] * predictor.code_std + predictor.code_mean


def predict_style_code(predictor: DreamTalkStylePredictor, audio_features: jax.Array, audio_mask: jax.Array,
                       reference_landmarks: jax.Array | None, rng: jax.Array, **sample_kwargs) -> jax.Array:
    """Jitted `sample_style_code` (compiled once per model structure and settings). (B, S)."""
    return compiled.bind(sample_style_code, predictor, **sample_kwargs)(audio_features, audio_mask,
                                                                         reference_landmarks, rng)


def generate_without_reference(predictor: DreamTalkStylePredictor, denoiser: nnx.Module, audio_features: jax.Array,
                               audio_mask: jax.Array, reference_landmarks: jax.Array | None, rng: jax.Array, *,
                               style_steps: int = 10, style_guidance: samplers.Guidance = samplers.NO_GUIDANCE,
                               denoiser_audio: jax.Array | None = None,
                               **sample_kwargs) -> tuple[jax.Array, jax.Array]:
    """Motion from audio and an identity alone, no reference clip: the predictor samples a style code and the
    DreamTalk denoiser generates with it as its `ready_style_code`.

    predictor inputs: audio_features (B, L, F) per-frame features, audio_mask (B, L), reference_landmarks
    (B, K, 3) (the identity frame). denoiser: a `dreamtalk` model (models.dreamtalk.denoiser.DreamTalk: its audio
    standardisation, windows, schedule and guidance scale apply) or its bare network (DreamTalkDenoiser).
    denoiser_audio: the denoiser's audio when it differs from the predictor's, e.g. wav2vec2 rows; for the
    model, per-frame features (B, L, stride * F) as its batches carry them; for a bare network, windows
    (B, L, W, F) or raw rows with `raw_features=(win_size, stride)`. None: `audio_features` (for a bare
    network as one row per frame, DreamTalk's win_size 5). `sample_kwargs` go to `sample.dreamtalk.sample`
    (num_steps, guidance_scale, chunk_frames, ...). Returns (motion (B, L, M), style code (B, S)).
    """
    audio = audio_features if denoiser_audio is None else denoiser_audio
    if isinstance(denoiser, DreamTalk):
        net = denoiser.net
        b, length = audio.shape[:2]
        audio = denoiser.standardised_rows(audio.reshape(b, length * denoiser.audio_stride, -1))
        sample_kwargs = {**dreamtalk_sampling.model_settings(denoiser), **sample_kwargs}
    elif isinstance(denoiser, DreamTalkDenoiser):
        net = denoiser
        if denoiser_audio is None:
            sample_kwargs.setdefault("raw_features", (5, 1))
    else:
        raise TypeError(f"{type(denoiser).__name__} is not a DreamTalk model or network")
    if predictor.style_dim != net.dims.d_model:
        raise ValueError(f"the predictor makes {predictor.style_dim}-d style codes, the denoiser takes "
                         f"{net.dims.d_model}-d: train the predictor on that denoiser's style encoder")
    k_style, k_motion = jax.random.split(rng)
    code = predict_style_code(predictor, audio_features, audio_mask, reference_landmarks, k_style,
                              num_steps=style_steps, guidance=style_guidance)
    motion = dreamtalk_sampling.sample(net, audio, ready_style_code=code, rng=k_motion, **sample_kwargs)
    return motion, code
