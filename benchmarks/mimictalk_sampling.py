"""MimicTalk ICS-A2M sampling speed at the released size: 30 s of audio after a 100-frame style prompt.

    python benchmarks/mimictalk_sampling.py [--variant released] [--seconds 30] [--prompt_frames 100]
        [--steps 20] [--guidance 1.5,1.0] [--method midpoint] [--warmup 0] [--repeats 1] [--check_seconds 4]
        [--json out.json]

The released architecture (mirrortalk_jax/configs/mimictalk_a2m.py:released: 16 blocks x 256, 8 heads, 35 M parameters) with
random weights (speed does not depend on them) generates BFM motion for random HuBERT features
(`seconds` x 50 Hz x 1024) after a style prompt of `prompt_frames` motion frames with its audio, as the
original's inference does: the prompt is prepended in time (here 100 + 750 = 850 frames + 16 register tokens),
`steps` grid points (19 midpoint intervals = 38 velocity calls), temperature 0.3, guidance on the prompt.

For each guidance scale the sampler is compiled ahead of time (compile seconds reported separately), optionally
run `--warmup` times, then timed over `--repeats` runs to `block_until_ready` (the best is reported).
Reported: seconds per clip, real-time factor (compute seconds per second of audio), ms per velocity call,
compiled memory (arguments + temp + outputs, XLA's memory_analysis) and the process's peak resident memory.
On a shared machine wall time depends on the others' load: the CPU seconds this process used are reported
too (on an idle machine, wall time is about CPU seconds / cores in use).

What the optimised path does (models/mimictalk/a2m.py `sample` under one jit, sample/ode.py): the audio encoder,
the audio projection and resize, the prompt masking and the RoPE tables are computed once per clip, not per
velocity call; both guidance branches are stacked into one batch of 2 per call; the ODE loop is a lax.scan
(one compiled step). `--check_seconds` compares its output on a shorter clip (same weights, same initial noise)
with an unoptimised reference: a Python loop of midpoint steps, each velocity call jitted on its own and
re-encoding the audio, the two guidance branches evaluated separately.

The original (PyTorch, CPU) needs about 89 s for this setting with guidance; the target here is 45 s on a
2-core CPU. Timings on a shared machine vary with its load: the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirrortalk_jax import base_config
from mirrortalk_jax.models.registry import create_model
from mirrortalk_jax.sample import mimictalk as a2m_sampling
from mirrortalk_jax.sample import ode

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def build_model(variant: str, query_chunk: int | None = None):
    config = base_config.load_config_file(base_config.config_path("mimictalk_a2m"), variant)
    if query_chunk is not None:
        config.model.attention_query_chunk = query_chunk
    model = create_model(config.model, None, nnx.Rngs(0))
    # Leave the identity initialisation of the adaptive norms and the zero null prompt, so every branch and
    # every flow time carries signal. The q/k RMSNorm gains start at 1, which with the x10 logit scale gives
    # logits up to 10 * dim_head = 640 on random weights: an arg-max attention whose output flips with the last
    # bit of a logit, so no two float32 evaluation orders agree (a 1e-6 change of the input moves the velocity
    # by 3e-4 even with gains of 0.25). Gains of 0.1 (logits within +-6.4) make the random network smooth
    # (Lipschitz ~ 10), so the check against the unoptimised path means something.
    params = nnx.state(model, nnx.Param)
    flat = nnx.to_flat_state(params)
    keys = iter(jax.random.split(jax.random.key(1), len(flat)))
    leaves = []
    for path, var in flat:
        key = next(keys)
        if "to_gamma" in path or "to_beta" in path or path[-1] == "null_cond":
            var = var.replace(var.get_value() + 0.02 * jax.random.normal(key, var.get_value().shape))
        elif path[-1] in ("q_gamma", "k_gamma"):
            var = var.replace(jnp.full_like(var.get_value(), 0.1))
        leaves.append((path, var))
    nnx.update(model, nnx.from_flat_state(leaves))
    return model, config.model


def inputs(model, seconds: float, prompt_frames: int, seed: int = 0):
    """HuBERT-like features for the driving audio and the prompt, the prompt motion, and the initial noise."""
    rate, frames = model.audio_rate, round(seconds * 25)
    k = jax.random.split(jax.random.key(seed), 4)
    audio = jax.random.normal(k[0], (1, frames * rate, 1024))
    prompt_audio = jax.random.normal(k[1], (1, prompt_frames * rate, 1024))
    prompt_motion = jax.random.normal(k[2], (1, prompt_frames, model.motion_dim))
    x0 = jax.random.normal(k[3], (1, prompt_frames + frames, model.motion_dim)) * 0.3  # temperature 0.3
    return audio, {"prompt_motion": prompt_motion, "prompt_audio": prompt_audio}, x0


def compiled_sampler(model, audio, context, x0, *, steps: int, guidance: float, method: str):
    graphdef, state = nnx.split(model)

    def run(state, audio, context, x0):
        return a2m_sampling.sample(nnx.merge(graphdef, state), audio, x0=x0, steps=steps, guidance_scale=guidance,
                                   method=method, **context)["motion"]

    start = time.perf_counter()
    compiled = jax.jit(run).lower(state, audio, context, x0).compile()
    return compiled, state, time.perf_counter() - start


def memory_mib(compiled) -> dict[str, float | None]:
    try:
        mem = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        mem = None
    if mem is None:
        return {"compiled_total_mib": None, "temp_mib": None}
    total = mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
    return {"compiled_total_mib": round(total / MIB, 1), "temp_mib": round(mem.temp_size_in_bytes / MIB, 1)}


def unoptimised(model, variant: str, audio, context, x0, *, steps: int, guidance: float) -> np.ndarray:
    """A Python loop of torchdiffeq-style midpoint steps; every velocity call re-encodes the audio and runs each
    guidance branch on its own (one jitted call per branch evaluation), attention in one block (no query blocks).
    `model` is the benchmarked model (of config `variant`); its weights go into one built without query blocks."""
    plain, _ = build_model(variant, query_chunk=0)
    nnx.update(plain, nnx.state(model))
    graphdef, state = nnx.split(plain)

    @jax.jit
    def velocity(state, x, t, drop):
        m = nnx.merge(graphdef, state)
        prep = m.prepare(audio, **context)  # audio encoder + projection, recomputed on every call
        dropped = None if drop is None else jnp.full((x.shape[0],), drop)
        return m.velocity(x, t, prep.audio_emb, prep.cond, prep.cond_mask, prep.mask, dropped)

    def guided(x, t):
        v_cond = velocity(state, x, t, None)
        if guidance == 1.0:
            return v_cond
        v_null = velocity(state, x, t, True)
        return v_null + (v_cond - v_null) * guidance

    grid = ode.time_grid(steps)
    y = x0
    for t0, t1 in itertools.pairwise(grid):
        dt = jnp.float32(t1 - t0)
        half = jnp.float32(0.5) * dt
        y_mid = y + guided(y, jnp.float32(t0)) * half
        y = y + dt * guided(y_mid, jnp.float32(t0) + half)
    return np.asarray(y[:, context["prompt_motion"].shape[1]:])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="released")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--prompt_frames", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20, help="grid points (the original's --denoising_steps)")
    parser.add_argument("--guidance", default="1.5,1.0", help="comma-separated guidance scales (1.0 = off)")
    parser.add_argument("--method", default="midpoint", choices=ode.METHODS)
    parser.add_argument("--warmup", type=int, default=0, help="untimed runs first (compiled ahead of time anyway)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--check_seconds", type=float, default=4.0, help="clip length of the check; 0 skips it")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args(argv)

    model, _ = build_model(args.variant)
    n_params = sum(int(np.prod(x.shape, dtype=np.int64)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    audio, context, x0 = inputs(model, args.seconds, args.prompt_frames)
    results = {"variant": args.variant, "params": n_params, "seconds_of_audio": args.seconds,
               "motion_frames": round(args.seconds * 25), "prompt_frames": args.prompt_frames,
               "steps": args.steps, "method": args.method, "device": str(jax.devices()[0]),
               "cpu_count": os.cpu_count(), "runs": []}
    calls = (args.steps - 1) * ode.CALLS_PER_STEP[args.method]
    for guidance in (float(g) for g in args.guidance.split(",")):
        compiled, state, compile_s = compiled_sampler(model, audio, context, x0, steps=args.steps, guidance=guidance,
                                                      method=args.method)
        for _ in range(args.warmup):
            compiled(state, audio, context, x0).block_until_ready()
        times, cpu = [], []
        for _ in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            out = compiled(state, audio, context, x0).block_until_ready()
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        best = min(times)
        results["runs"].append({"guidance": guidance, "seconds": round(best, 2),
                                "all_seconds": [round(t, 2) for t in times],
                                "process_cpu_seconds": round(cpu[times.index(best)], 2),
                                "realtime_factor": round(best / args.seconds, 3), "network_calls": calls,
                                "ms_per_call": round(1000 * best / calls, 1), "compile_seconds": round(compile_s, 1),
                                "finite": bool(np.isfinite(np.asarray(out)).all()), **memory_mib(compiled)})
    if args.check_seconds > 0:
        audio_c, context_c, x0_c = inputs(model, args.check_seconds, args.prompt_frames, seed=1)
        checks = []
        for guidance in (float(g) for g in args.guidance.split(",")):
            compiled, state, _ = compiled_sampler(model, audio_c, context_c, x0_c, steps=args.steps,
                                                  guidance=guidance, method="midpoint")
            fast = np.asarray(compiled(state, audio_c, context_c, x0_c))
            slow = unoptimised(model, args.variant, audio_c, context_c, x0_c, steps=args.steps, guidance=guidance)
            checks.append({"guidance": guidance, "max_abs_diff": float(np.abs(fast - slow).max()),
                           "max_rel_diff": float(np.abs(fast - slow).max() / np.abs(slow).max())})
        results["check_vs_unoptimised"] = {"seconds_of_audio": args.check_seconds, "runs": checks}
    results["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]

    print(json.dumps(results, indent=1))
    print(f"\n| guidance | seconds per {args.seconds:g} s clip | process CPU s | real-time factor | "
          f"ms / velocity call | compile s | compiled memory MiB (temp) |")
    print("|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        print(f"| {r['guidance']:g} | {r['seconds']:.1f} | {r['process_cpu_seconds']:.1f} | "
              f"{r['realtime_factor']:.3f} | {r['ms_per_call']:.0f} | {r['compile_seconds']:.0f} | "
              f"{r['compiled_total_mib']} ({r['temp_mib']}) |")
    print(f"\npeak RSS {results['peak_rss_mib']} MiB; load average {results['load_average']} on "
          f"{results['cpu_count']} CPUs")
    for c in results.get("check_vs_unoptimised", {}).get("runs", []):
        print(f"check vs unoptimised path ({args.check_seconds:g} s clip, guidance {c['guidance']:g}): "
              f"max abs diff {c['max_abs_diff']:.2e} (relative {c['max_rel_diff']:.2e})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
