"""DreamTalk generation end to end, as the original's inference_for_demo_video.py (minus its face-detector crop
and watermark): speech-encoder rows + a speaking style + head pose -> expression -> PIRenderer frames.

    denoiser = checkpoints.load("ckpt/dreamtalk/denoiser", "dreamtalk", "denoiser").model
    renderer = checkpoints.load("ckpt/dreamtalk/renderer", "pirenderer", "renderer").model
    coefficients, _ = renderer_coefficients(denoiser, renderer, rows, style_clip=inputs.load_style_clip("style.mat"),
                                            pose=inputs.load_pose("pose.mat"))
    video.write_mp4("out.mp4", render.iter_frames(renderer, image, coefficients), FPS, audio=wav, sample_rate=16000)

Style: a reference clip's expression (the original's way), or, without one, a style code sampled by a trained
style predictor (models/dreamtalk/style_predictor.py; DreamTalk never released one) from the audio and the
speaker's identity. Pose is not generated (neither by the original): it is read from a file, else frontal.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from mirrortalk_jax.generate import inputs
from mirrortalk_jax.generate.render import render_frames
from mirrortalk_jax.models.dreamtalk.denoiser import DreamTalk
from mirrortalk_jax.models.pirenderer.renderer import PIRenderer
from mirrortalk_jax.sample import dreamtalk as dreamtalk_sampling
from mirrortalk_jax.sample import dreamtalk_style

FPS = 25.0  # the original renders and muxes at 25 fps; the denoiser's rows come at FPS * audio_stride Hz


@dataclasses.dataclass
class Generation:
    """frames (T, H, W, 3) uint8; coefficients (T, M + 9): generated expression + pose, what the renderer read
    (the original's *_facemotion.npy); style_code (S,) when the style predictor made it, else None."""

    frames: np.ndarray
    coefficients: np.ndarray
    style_code: np.ndarray | None = None


def num_frames(denoiser: DreamTalk, num_rows: int) -> int:
    """Video frames for `num_rows` audio rows: rows // audio_stride (wav2vec2's 50 Hz rows: len // 2, as the
    original)."""
    return num_rows // denoiser.audio_stride


def predictor_audio(rows: np.ndarray, stride: int, max_frames: int) -> np.ndarray:
    """Rows (N, F) -> the style predictor's per-frame features (L', stride * F) (a frame's rows concatenated, as
    its training batches), at most `max_frames` of them, centred in the clip: recordings often start and end in
    silence, on which the predictor says least (the paper finds it weak on low-intensity audio)."""
    length = len(rows) // stride
    per_frame = rows[:length * stride].reshape(length, -1)
    start = max(0, (length - max_frames) // 2)
    return per_frame[start:start + max_frames]


def generate_motion(denoiser: DreamTalk, audio_rows: np.ndarray, *, style_clip: np.ndarray | None = None,
                    style_predictor=None, identity: np.ndarray | None = None, predictor_frames: int | None = None,
                    steps: int = 10, guidance: float | None = 1.0, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """Expression (T, M) for audio rows (N, F) (F = the denoiser's audio_dim, T = N // audio_stride), and the
    predicted style code (S,) or None.

    Style: `style_clip` (R, M) (the first style_max_len frames are used, as the original's start_idx=0), or
    `style_predictor` (a dreamtalk_style_predictor model) with `identity` (K, 3) landmarks when it uses them;
    it reads at most `predictor_frames` frames of audio (default: all its audio tokens hold).
    guidance: classifier-free guidance scale (1.0, the original's default, equals the conditional pass; None:
    off). DDIM with `steps` steps, noise from `seed`.
    """
    audio_rows = np.asarray(audio_rows, np.float32)
    width, stride = denoiser.dims.audio_dim, denoiser.audio_stride
    if audio_rows.ndim != 2 or audio_rows.shape[1] != width:
        raise ValueError(f"audio rows must be (N, {width}) (the denoiser's audio_dim), got {audio_rows.shape}")
    if len(audio_rows) < stride:
        raise ValueError(f"{len(audio_rows)} audio rows make no video frame ({stride} rows per frame)")
    if (style_clip is None) == (style_predictor is None):
        raise ValueError("give either a style clip or a style predictor")
    rng = jax.random.key(seed)
    rows = jnp.asarray(audio_rows)[None]
    if style_clip is not None:
        clip = np.asarray(style_clip, np.float32)[:denoiser.style_max_len]
        if clip.ndim != 2 or clip.shape[1] != denoiser.dims.motion_dim or not len(clip):
            raise ValueError(f"style clip must be (frames, {denoiser.dims.motion_dim}), got {clip.shape}")
        motion = dreamtalk_sampling.sample_model(denoiser, rows, jnp.asarray(clip)[None],
                                                 jnp.ones((1, len(clip)), bool), rng, num_steps=steps,
                                                 guidance_scale=guidance)
        return np.asarray(motion[0]), None
    if style_predictor.use_identity and identity is None:
        raise ValueError(f"this style predictor conditions on the speaker's identity: give its "
                         f"({style_predictor.num_landmarks}, 3) landmarks")
    limit = style_predictor.net.max_audio_tokens * style_predictor.net.audio_pool
    feats = predictor_audio(audio_rows, stride, min(predictor_frames or limit, limit))
    if feats.shape[1] != style_predictor.net.audio_in.in_features:
        raise ValueError(f"the style predictor reads {style_predictor.net.audio_in.in_features}-wide audio per "
                         f"frame; the denoiser's audio gives {stride} x {width} = {feats.shape[1]}")
    landmarks = jnp.asarray(identity, jnp.float32)[None] if style_predictor.use_identity else None
    # The denoiser's bare network on its raw standardised rows, as sample_model runs it, so every frame
    # (the last ones included) sees exactly the rows the original's windows hold.
    standardised = denoiser.standardised_rows(rows)
    motion, code = dreamtalk_style.generate_without_reference(
        style_predictor, denoiser.net, jnp.asarray(feats)[None], jnp.ones((1, len(feats)), bool), landmarks, rng,
        denoiser_audio=standardised, raw_features=(denoiser.win_size, stride),
        schedule_args=denoiser.schedule_args, num_steps=steps, guidance_scale=guidance)
    return np.asarray(motion[0]), np.asarray(code[0])


def renderer_coefficients(denoiser: DreamTalk, renderer: PIRenderer, audio_rows: np.ndarray, *,
                          style_clip: np.ndarray | None = None, style_predictor=None,
                          identity: np.ndarray | None = None, predictor_frames: int | None = None,
                          pose: np.ndarray | None = None, steps: int = 10, guidance: float | None = 1.0,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """What the renderer reads per frame, (T, M + 9) generated expression + pose, and the predicted style code
    (S,) or None. Arguments as `generate_dreamtalk`."""
    width = renderer.mapping_net.first.in_features
    if width != denoiser.dims.motion_dim + inputs.POSE_DIM:
        raise ValueError(f"the renderer reads {width} coefficients per frame; the denoiser makes "
                         f"{denoiser.dims.motion_dim} + {inputs.POSE_DIM} pose = "
                         f"{denoiser.dims.motion_dim + inputs.POSE_DIM}: they do not belong together")
    pose = inputs.FRONTAL_POSE[None] if pose is None else np.asarray(pose, np.float32)
    if pose.ndim != 2 or pose.shape[1] != inputs.POSE_DIM or not len(pose):
        raise ValueError(f"pose must be (frames, {inputs.POSE_DIM}), got {pose.shape}")
    motion, code = generate_motion(denoiser, audio_rows, style_clip=style_clip, style_predictor=style_predictor,
                                   identity=identity, predictor_frames=predictor_frames, steps=steps,
                                   guidance=guidance, seed=seed)
    return np.concatenate([motion, inputs.fit_pose(pose, len(motion))], axis=1), code


def generate_dreamtalk(denoiser: DreamTalk, renderer: PIRenderer, audio_rows: np.ndarray, image: np.ndarray, *,
                       render_batch: int = 16, **style_and_sampling) -> Generation:
    """A talking-head clip: audio rows (N, F) + portrait (H, W, 3) uint8 + style -> `Generation` of
    T = N // audio_stride frames at FPS, all frames in memory (for long clips, stream
    `render.iter_frames(renderer, image, coefficients)` into video.write_mp4 as `mirrortalk generate` does).

    style_and_sampling: style_clip | style_predictor (+ identity, predictor_frames), steps, guidance, seed as
    `generate_motion`; pose (P, 9) per frame (cut to T, or its last pose repeated, as the original), None for the
    original's frontal "no_move" pose. render_batch: frames per renderer call.
    """
    coefficients, code = renderer_coefficients(denoiser, renderer, audio_rows, **style_and_sampling)
    return Generation(render_frames(renderer, image, coefficients, render_batch), coefficients, code)
