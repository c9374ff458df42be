"""DreamTalk's diffusion exactly as the original (`core/networks/diffusion_net.py`), made fast.

Schedule: objectives/dreamtalk.py (the original's, index t in [0, T], alpha_bar[0] = 1).

DDIM (the demo's sampler, eta = 0): timesteps arange(0, T, T // n) + 1, visited from the last (901 for n = 10);
x0 = net(x_t, t); eps = (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t); x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps,
ab_prev of the last step = ab[0] = 1, which returns x0. DDPM: all T steps with the x0-parametrised posterior
mean d0 x_t + d1 x0 and sigma_t = flexibility-mixed sigmas.

Classifier-free guidance as the original: x0 = uncond + scale (cond - uncond), uncond = the network with the
null style clip (STYLE_MAX_LEN zero frames, nothing masked). The speed-ups change no result:
  * branches that cannot change the result are never run (scale 1: cond only; scale 0: uncond only);
  * the two branches share one pass: they differ only in the style code, so the content encoder, the fusion
    MLP and every key/value projection of the memory are computed once for both;
  * the content encoder runs once per clip, not once per step (it sees neither x_t nor t);
  * the steps are a lax.scan under jit, and long audio is cut into blocks of frames (every frame is denoised
    independently given the style code), so memory stays flat in the audio length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirrortalk_jax.data.windows import centred_windows
from mirrortalk_jax.models.dreamtalk.denoiser import DreamTalk
from mirrortalk_jax.objectives.dreamtalk import VarianceSchedule, variance_schedule
from mirrortalk_jax.sample import compiled


def ddim_timesteps(num_train_steps: int, num_steps: int) -> np.ndarray:
    """arange(0, T, T // n) + 1 (ascending; sampled from the last). Like the original, n must give exactly n."""
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(f"DDIM steps must be in [1, {num_train_steps}], got {num_steps}")
    grid = np.arange(0, num_train_steps, num_train_steps // num_steps) + 1
    if len(grid) != num_steps:
        raise ValueError(f"DDIM with {num_steps} steps: the original's grid arange(0, {num_train_steps}, "
                         f"{num_train_steps // num_steps}) has {len(grid)} entries; choose a divisor of "
                         f"{num_train_steps}")
    return grid


def guidance_branches(scale: float | None) -> tuple[str, ...]:
    """Which network passes a guidance setting needs (static). None = guidance off (the conditional pass)."""
    if scale is None or float(scale) == 1.0:
        return ("cond",)  # uncond + 1 (cond - uncond) = cond
    if float(scale) == 0.0:
        return ("uncond",)
    return ("cond", "uncond")


def combine_guidance(outs: jax.Array, branches: tuple[str, ...], scale: float | None) -> jax.Array:
    """(..., G, M) per-branch x0 -> (..., M): uncond + scale (cond - uncond), in the original's order."""
    if len(branches) == 1:
        return outs[..., 0, :]
    cond, uncond = outs[..., branches.index("cond"), :], outs[..., branches.index("uncond"), :]
    return uncond + jnp.asarray(scale, outs.dtype) * (cond - uncond)


def null_style(net, batch: int) -> tuple[jax.Array, jax.Array]:
    """The original's null_style_clip (B, STYLE_MAX_LEN, M) zeros and null_pad_mask (B, STYLE_MAX_LEN) all False."""
    n, m = net.dims.style_max_len, net.dims.motion_dim
    return jnp.zeros((batch, n, m), jnp.float32), jnp.zeros((batch, n), bool)


def style_codes(net, style_clip: jax.Array | None, style_pad_mask: jax.Array | None,
                ready_style_code: jax.Array | None, branches: tuple[str, ...], batch: int) -> jax.Array:
    """(B, G, D) style code of every guidance branch; the null code is computed once for the whole batch."""
    codes = []
    for branch in branches:
        if branch == "cond":
            codes.append(ready_style_code if ready_style_code is not None
                         else net.style_encoder(style_clip, style_pad_mask))
        else:
            clip, mask = null_style(net, 1)
            codes.append(jnp.broadcast_to(net.style_encoder(clip, mask), (batch, net.dims.d_model)))
    return jnp.stack(codes, axis=1)


AudioBlock = Callable[[jax.Array, int], jax.Array]  # (start frame, frames) -> (B, frames, W, F)


def window_block(windows: jax.Array, chunk: int) -> AudioBlock:
    """Blocks of precomputed windows (B, L, W, F), zero-padded to whole chunks."""
    pad = -windows.shape[1] % chunk
    padded = jnp.pad(windows, ((0, 0), (0, pad), (0, 0), (0, 0))) if pad else windows
    return lambda start, size: jax.lax.dynamic_slice_in_dim(padded, start, size, axis=1)


def feature_block(features: jax.Array, win_size: int, stride: int, offset: jax.Array | int = 0) -> AudioBlock:
    """Windows built per block from raw feature rows (B, N, F) (frame offset + start onwards): the
    (W / stride)x larger windowed copy of the whole clip never exists."""
    return lambda start, size: centred_windows(features, win_size, stride=stride, start=offset + start,
                                               num_frames=size, axis=1)


def _in_blocks(run: Callable[[jax.Array, jax.Array], jax.Array], audio: AudioBlock, x_init: jax.Array,
               chunk: int | None) -> jax.Array:
    """run(audio block (B, C, W, F), x block (B, C, M)) -> (B, C, M) over blocks of C frames, one at a time."""
    b, length, m = x_init.shape
    if not chunk or chunk >= length:
        return run(audio(0, length), x_init)
    n = -(-length // chunk)
    x_pad = jnp.pad(x_init, ((0, 0), (0, n * chunk - length), (0, 0)))

    def body(k):
        start = k * chunk
        return run(audio(start, chunk), jax.lax.dynamic_slice_in_dim(x_pad, start, chunk, axis=1))
    out = jax.lax.map(body, jnp.arange(n))  # (n, B, C, M)
    return jnp.moveaxis(out, 0, 1).reshape(b, n * chunk, m)[:, :length]


def _ddim_coefficients(schedule: VarianceSchedule, num_steps: int) -> tuple[np.ndarray, ...]:
    """Per step in execution order: t, sqrt(ab_t), sqrt(1 - ab_t), sqrt(ab_prev), sqrt(1 - ab_prev) (float32)."""
    grid = ddim_timesteps(schedule.num_steps, num_steps)
    prev = np.concatenate([[0], grid[:-1]])
    ab, ab_prev = schedule.alpha_bars[grid], schedule.alpha_bars[prev]
    one = np.float32(1)
    coefs = (grid.astype(np.float32), np.sqrt(ab), np.sqrt(one - ab), np.sqrt(ab_prev), np.sqrt(one - ab_prev))
    return tuple(c[::-1].astype(np.float32).copy() for c in coefs)


def ddim_sample(net, audio: AudioBlock, x_T: jax.Array, codes: jax.Array, schedule: VarianceSchedule,
                num_steps: int, guidance_scale: float | None, branches: tuple[str, ...],
                chunk_frames: int | None = None) -> jax.Array:
    """Deterministic DDIM with the cached network path. codes: (B, G, D) from `style_codes`. Traceable."""
    coefs = tuple(jnp.asarray(c) for c in _ddim_coefficients(schedule, num_steps))
    b = x_T.shape[0]

    def run(audio_block, x):
        content = net.audio_cache(audio_block)
        queries = net.query_cache(codes, audio_block.shape[2])

        def step(x, c):
            t, sa, s1a, sap, s1ap = c
            x0 = combine_guidance(net.denoise_cached(x, jnp.full((b,), t), content, queries), branches,
                                  guidance_scale)
            eps = (x - sa * x0) / s1a
            return sap * x0 + s1ap * eps, None
        return jax.lax.scan(step, x, coefs)[0]
    return _in_blocks(run, audio, x_T, chunk_frames)


def ddpm_sample(net, audio: AudioBlock, x_T: jax.Array, codes: jax.Array, schedule: VarianceSchedule,
                rng: jax.Array, guidance_scale: float | None, branches: tuple[str, ...], flexibility: float = 0.0,
                chunk_frames: int | None = None, frame_offset: jax.Array | int = 0) -> jax.Array:
    """The original's ancestral sampler over all T steps: x_{t-1} = d0 x_t + d1 x0 + sigma_t z (z = 0 at t = 1).

    z for step t and frame l (counted from the clip's start: frame_offset + position here) is
    normal(fold_in(fold_in(rng, t), l)), so results do not depend on blocks or device splits.
    """
    if not 0.0 <= flexibility <= 1.0:
        raise ValueError(f"flexibility must be in [0, 1], got {flexibility}")
    s = schedule
    t = np.arange(s.num_steps, 0, -1)
    a, ab, ab_prev = s.alphas[t], s.alpha_bars[t], s.alpha_bars[t - 1]
    one = np.float32(1)
    d0 = np.sqrt(a) * (one - ab_prev) / (one - ab)
    d1 = np.sqrt(ab_prev) * (one - a) / (one - ab)
    sigma = s.sigmas_flex[t] * np.float32(flexibility) + s.sigmas_inflex[t] * np.float32(1 - flexibility)
    xs = tuple(jnp.asarray(np.asarray(v, np.float32)) for v in (t, d0, d1, sigma))
    b, length, m = x_T.shape
    frame_ids = frame_offset + jnp.arange(length)
    chunk = chunk_frames if chunk_frames and chunk_frames < length else length
    n = -(-length // chunk)
    ids_pad = jnp.pad(frame_ids, (0, n * chunk - length))

    def noise(step_t, ids):  # (B, C, M) for frames `ids`, independent of the block layout
        key = jax.random.fold_in(rng, step_t.astype(jnp.int32))
        z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (b, m)))(ids)
        return jnp.where(step_t > 1, jnp.moveaxis(z, 0, 1), 0.0)

    def run_with_ids(audio_block, x, ids):
        content = net.audio_cache(audio_block)
        queries = net.query_cache(codes, audio_block.shape[2])

        def step(x, c):
            tt, c0, c1, sig = c
            x0 = combine_guidance(net.denoise_cached(x, jnp.full((b,), tt), content, queries), branches,
                                  guidance_scale)
            return c0 * x + c1 * x0 + sig * noise(tt, ids), None
        return jax.lax.scan(step, x, xs)[0]

    if n == 1:
        return run_with_ids(audio(0, length), x_T, frame_ids)
    x_pad = jnp.pad(x_T, ((0, 0), (0, n * chunk - length), (0, 0)))

    def body(k):
        start = k * chunk
        return run_with_ids(audio(start, chunk), jax.lax.dynamic_slice_in_dim(x_pad, start, chunk, axis=1),
                            jax.lax.dynamic_slice_in_dim(ids_pad, start, chunk))
    out = jax.lax.map(body, jnp.arange(n))
    return jnp.moveaxis(out, 0, 1).reshape(b, n * chunk, m)[:, :length]


def ddim_sample_reference(net, audio: jax.Array, style_clip: jax.Array, style_pad_mask: jax.Array,
                          x_T: jax.Array, schedule: VarianceSchedule, num_steps: int = 10,
                          use_cf_guidance: bool = False, cfg_scale: float = 1.0, trace: bool = False):
    """The original's ddim_sample transcribed literally (full network each step, doubled batch under guidance,
    both branches even at scale 1). For checking the fast path; returns x0, or (x0, per-step traces) with
    trace=True: {"x_t": (S, B, L, M), "t": (S, B), "net_out": (S, B or 2B, L, M)} in execution order."""
    coefs = _ddim_coefficients(schedule, num_steps)
    b = x_T.shape[0]
    forward = compiled.bind(_network, net)
    if use_cf_guidance:
        null_clip, null_mask = null_style(net, b)
        audio, style_clip = jnp.concatenate([audio] * 2), jnp.concatenate([style_clip, null_clip])
        style_pad_mask = jnp.concatenate([style_pad_mask, null_mask])
    x, traces = x_T, {"x_t": [], "t": [], "net_out": []}
    for t, sa, s1a, sap, s1ap in zip(*coefs):
        tt = jnp.full((b,), t, jnp.float32)
        if use_cf_guidance:
            out = forward(jnp.concatenate([x] * 2), jnp.concatenate([tt] * 2), audio, style_clip, style_pad_mask)
            cond, uncond = out[:b], out[b:]
            x0 = uncond + jnp.float32(cfg_scale) * (cond - uncond)
        else:
            out = x0 = forward(x, tt, audio, style_clip, style_pad_mask)
        for k, v in (("x_t", x), ("t", tt), ("net_out", out)):
            traces[k].append(v)
        eps = (x - sa * x0) / s1a
        x = sap * x0 + s1ap * eps
    return (x, {k: jnp.stack(v) for k, v in traces.items()}) if trace else x


def _network(net, *args):
    """The plain network forward (one network call per step, as the original)."""
    return net(*args)


# ---------------------------------------------------------------------------------------------------------
# Jitted entry points (compiled once per network structure and static settings; weights are arguments).


def _sample_block(net, audio, x_T, style_clip, style_pad_mask, ready_style_code, rng, frame_offset, *,
                  sampler: str, num_steps: int, branches: tuple[str, ...], guidance_scale: float | None,
                  chunk_frames: int | None, raw_features: tuple[int, int] | None, schedule_args: tuple,
                  flexibility: float) -> jax.Array:
    schedule = variance_schedule(*schedule_args)
    chunk = chunk_frames or x_T.shape[1]
    if raw_features:  # frames frame_offset + j of the whole clip
        block = feature_block(audio, *raw_features, offset=frame_offset)
    else:
        block = window_block(audio, chunk)
    codes = style_codes(net, style_clip, style_pad_mask, ready_style_code, branches, x_T.shape[0])
    if sampler == "ddim":
        return ddim_sample(net, block, x_T, codes, schedule, num_steps, guidance_scale, branches, chunk_frames)
    return ddpm_sample(net, block, x_T, codes, schedule, rng, guidance_scale, branches, flexibility,
                       chunk_frames, frame_offset)


def sample(net, audio: jax.Array, style_clip: jax.Array | None = None, style_pad_mask: jax.Array | None = None, *,
           x_T: jax.Array | None = None, rng: jax.Array | None = None, ready_style_code: jax.Array | None = None,
           sampler: str = "ddim", num_steps: int = 10, guidance_scale: float | None = 1.0,
           chunk_frames: int | None = 128, raw_features: tuple[int, int] | None = None,
           schedule_args: tuple[int, float, float] = (1000, 1e-4, 0.02), flexibility: float = 0.0,
           devices: Sequence[jax.Device] | None = None) -> jax.Array:
    """Expression coefficients (B, L, M) for audio and a style reference, jitted.

    audio: windows (B, L, W, F), or raw feature rows (B, N, F) with raw_features = (win_size, stride), in which
      case L = N // stride and the windows are built block by block.
    style_clip (B, Ls, M) + style_pad_mask (B, Ls) bool (True = padded), or ready_style_code (B, D).
    x_T: initial noise (B, L, M); drawn from rng (split off first) when None. rng also drives DDPM's noise.
    guidance_scale: None = no guidance (one pass); a float = CFG with the null clip (1.0, the demo's setting,
      runs the conditional pass only: the result is the same).
    chunk_frames: frames per block (None / 0 = all at once); memory stays flat in L, and blocks of ~100-250
      frames keep a step's activations in cache (faster on CPUs). Results do not depend on it.
    devices: split the frames into contiguous parts sampled concurrently, one per device (e.g. two CPU
      devices from --xla_force_host_platform_device_count=2 with single-threaded XLA use both cores without
      intra-op synchronisation). Results do not depend on it. None: the default device.
    """
    if sampler not in ("ddim", "ddpm"):
        raise ValueError(f"unknown sampler {sampler!r}; choose 'ddim' or 'ddpm'")
    if (style_clip is None) == (ready_style_code is None):
        raise ValueError("give either style_clip (+ style_pad_mask) or ready_style_code")
    b = audio.shape[0]
    length = audio.shape[1] // raw_features[1] if raw_features else audio.shape[1]
    rng = jax.random.key(0) if rng is None else rng
    noise_key, rng = jax.random.split(rng)
    if x_T is None:
        x_T = jax.random.normal(noise_key, (b, length, net.dims.motion_dim), jnp.float32)
    if style_clip is not None and style_pad_mask is None:
        style_pad_mask = jnp.zeros(style_clip.shape[:2], bool)
    graphdef, state = nnx.split(net)
    branches = guidance_branches(guidance_scale)
    scale = float(guidance_scale) if len(branches) > 1 else None  # one program for every single-branch setting
    run = compiled.jitted(_sample_block, graphdef, sampler=sampler, num_steps=int(num_steps), branches=branches,
                          guidance_scale=scale, chunk_frames=int(chunk_frames) if chunk_frames else None,
                          raw_features=tuple(raw_features) if raw_features else None,
                          schedule_args=tuple(schedule_args), flexibility=float(flexibility))
    devices = list(devices) if devices else [None]
    part = -(-length // len(devices))
    if len(devices) > 1:  # equal parts (one compilation); frames past the end are sampled and dropped
        x_T = jnp.pad(x_T, ((0, 0), (0, part * len(devices) - length), (0, 0)))
        if not raw_features:
            audio = jnp.pad(audio, ((0, 0), (0, part * len(devices) - length), (0, 0), (0, 0)))
    outs = []
    for i, device in enumerate(devices):
        part_audio = audio if raw_features else audio[:, i * part:(i + 1) * part]
        args = (state, part_audio, x_T[:, i * part:(i + 1) * part], style_clip, style_pad_mask, ready_style_code,
                rng, jnp.int32(i * part))
        outs.append(run(*(jax.device_put(args, device) if device is not None else args)))  # dispatched async
    if len(outs) == 1:
        return outs[0]
    return jnp.concatenate([jax.device_put(o, devices[0]) for o in outs], axis=1)[:, :length]


# ---------------------------------------------------------------------------------------------------------
# The registry model (models/dreamtalk/denoiser.py): its audio standardisation, windows, schedule and guidance.


def model_settings(model: DreamTalk) -> dict:
    """The `sample` settings a DreamTalk model's config implies (raw feature rows of its audio stride)."""
    return {"raw_features": (model.win_size, model.audio_stride), "schedule_args": model.schedule_args,
            "guidance_scale": model.guidance_scale, "num_steps": model.ddim_steps}


def sample_model(model: DreamTalk, audio_rows: jax.Array, reference_motion: jax.Array, reference_mask: jax.Array,
                 rng: jax.Array, **kwargs) -> jax.Array:
    """Motion (B, N // stride, M) for audio feature rows (B, N, F) (e.g. wav2vec2 at 50 Hz; per-frame features
    reshaped to rows) and a reference (B, R, M) + valid mask (B, R), with the model's settings; kwargs
    (num_steps, guidance_scale (None: off), chunk_frames, ...) override them."""
    clip, pad_mask = model.style_inputs(reference_motion, reference_mask)
    return sample(model.net, model.standardised_rows(audio_rows), clip, pad_mask, rng=rng,
                  **{**model_settings(model), **kwargs})


def generate_for_eval(model: DreamTalk, batch: dict[str, jax.Array], rng: jax.Array) -> jax.Array:
    """The trainer's evaluation samples (traced inside its jitted step): DDIM with the config's settings."""
    clip, pad_mask = model.style_inputs(batch["reference_motion"], batch["reference_mask"])
    x = batch["motion"]
    branches = guidance_branches(model.guidance_scale)
    codes = style_codes(model.net, clip, pad_mask, None, branches, x.shape[0])
    windows = model.audio_windows(batch["audio_features"])
    x_T = jax.random.normal(rng, x.shape, jnp.float32)
    return ddim_sample(model.net, window_block(windows, x.shape[1]), x_T, codes, model.schedule(), model.ddim_steps,
                       model.guidance_scale, branches)
