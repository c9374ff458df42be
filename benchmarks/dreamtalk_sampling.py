"""DreamTalk denoiser sampling speed at full size: DDIM-10 on 30 s of audio (750 frames at 25 fps).

    python benchmarks/dreamtalk_sampling.py [--seconds 30] [--repeats 3] [--chunk_frames 128]
        [--parallel threads|devices] [--reference_frames 40] [--reference_timing] [--json out.json]

The `released` config (11.86 M parameters) with random weights (speed does not depend on them), random
wav2vec2-like feature rows (50 Hz, 1024 wide: 1500 rows for 30 s, windowed block by block inside the sampler)
and a random 200-frame style clip padded to 256 frames. Settings, as the original's demo exposes them:

  off        use_cf_guidance=False: one network pass per step;
  scale 1.0  the demo's default: the original runs the conditional and the null-style pass and mixes them
             (uncond + 1 (cond - uncond) = cond); here the conditional pass only;
  scale 2.0  both passes, batched: they share the content encoding, the fusion MLP and the memory projections.

Per setting: compile seconds; sampling wall seconds (median of --repeats after a warm-up run) and CPU seconds
(process time, all threads: the work an idle machine spreads over its cores; wall = CPU / cores at best);
compiled memory (arguments + temporaries + outputs, XLA memory_analysis); and the process's peak RSS.
Correctness: each output is compared with the original algorithm transcribed literally
(sample.dreamtalk.ddim_sample_reference: the full network every step, the doubled batch under guidance) on the
first --reference_frames frames (every frame is denoised independently, so they must agree frame for frame).
--reference_timing also times that literal loop on all frames at scale 1.0 (the original demo's computation).

--parallel threads: one XLA CPU device with its intra-op threads (default). devices: as many CPU devices as
cores (--xla_force_host_platform_device_count), single-threaded each, the frames split between them
(`sample(..., devices=...)`): no per-operation synchronisation between the cores.

Prints one JSON object, then a Markdown table. On a shared machine wall times depend on the load (reported);
CPU seconds much less so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
SETTINGS = (("off", None), ("scale 1.0", 1.0), ("scale 2.0", 2.0))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="audio length (25 fps frames)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk_frames", type=int, default=128, help="frames per block (0: all at once)")
    parser.add_argument("--parallel", choices=("threads", "devices"), default="threads")
    parser.add_argument("--reference_frames", type=int, default=40)
    parser.add_argument("--reference_timing", action="store_true")
    parser.add_argument("--settings", default="off,scale 1.0,scale 2.0", help="comma-separated subset")
    parser.add_argument("--json", default="", help="also write the results here")
    return parser.parse_args(argv)


def _mib(x: float) -> float:
    return round(float(x) / MIB, 1)


def main(args: argparse.Namespace) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    sys.path.insert(0, str(ROOT))
    from mirrortalk_jax import base_config
    from mirrortalk_jax.data.windows import centred_windows
    from mirrortalk_jax.models.dreamtalk import denoiser as dreamtalk
    from mirrortalk_jax.objectives.dreamtalk import variance_schedule
    from mirrortalk_jax.sample import compiled as sample_compiled
    from mirrortalk_jax.sample import dreamtalk as dt

    config = base_config.load_config_file(base_config.config_path("dreamtalk"), "released").model
    start = time.perf_counter()
    net = dreamtalk.DreamTalk(config, None, nnx.Rngs(0)).net
    num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(net, nnx.Param)))
    frames = round(args.seconds * 25)
    win, stride = int(config.win_size), int(config.audio_stride)
    rows = jax.random.normal(jax.random.key(1), (1, frames * stride, config.audio_dim), jnp.float32)
    clip = jax.random.normal(jax.random.key(2), (1, 256, 64), jnp.float32)
    pad = jnp.arange(256)[None] >= 200
    x_T = jax.random.normal(jax.random.key(3), (1, frames, 64), jnp.float32)
    devices = jax.local_devices() if args.parallel == "devices" else None
    results = {"frames": frames, "audio_seconds": args.seconds, "ddim_steps": args.steps, "params": num_params,
               "chunk_frames": args.chunk_frames, "parallel": args.parallel, "devices": len(jax.local_devices()),
               "build_seconds": round(time.perf_counter() - start, 2), "load_average_start": os.getloadavg()[0],
               "settings": []}
    schedule = variance_schedule(*tuple(results.get("schedule", (1000, 1e-4, 0.02))))
    chosen = {s.strip() for s in args.settings.split(",")}
    for name, scale in SETTINGS:
        if name not in chosen:
            continue
        kwargs = {"x_T": x_T, "num_steps": args.steps, "guidance_scale": scale, "raw_features": (win, stride),
                      "chunk_frames": args.chunk_frames or None, "devices": devices}
        # Compiled memory of the program that samples one part (all frames unless split across devices).
        graphdef, state = nnx.split(net)
        branches = dt.guidance_branches(scale)
        run = sample_compiled.jitted(dt._sample_block, graphdef, sampler="ddim", num_steps=args.steps,
                                     branches=branches, guidance_scale=scale if len(branches) > 1 else None,
                                     chunk_frames=args.chunk_frames or None, raw_features=(win, stride),
                                     schedule_args=(1000, 1e-4, 0.02), flexibility=0.0)
        part = -(-frames // (len(devices) if devices else 1))
        t0 = time.perf_counter()
        compiled = run.lower(state, rows, x_T[:, :part], clip, pad, None, jax.random.key(0), jnp.int32(0)).compile()
        compile_s = time.perf_counter() - t0
        mem = compiled.memory_analysis()
        out = dt.sample(net, rows, clip, pad, **kwargs).block_until_ready()  # warm-up (jit compiles its own copy)
        walls, cpus = [], []
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            out = dt.sample(net, rows, clip, pad, **kwargs).block_until_ready()
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        r = args.reference_frames
        windows = centred_windows(rows, win, stride=stride, num_frames=r, axis=1)
        ref = dt.ddim_sample_reference(net, windows, clip, pad, x_T[:, :r], schedule, args.steps,
                                       use_cf_guidance=scale is not None, cfg_scale=1.0 if scale is None else scale)
        diff = float(jnp.abs(out[:, :r] - ref).max())
        entry = {"setting": name, "network_passes_per_step": len(branches), "compile_s": round(compile_s, 2),
                 "wall_s": round(statistics.median(walls), 2), "wall_all_s": [round(w, 2) for w in walls],
                 "cpu_s": round(statistics.median(cpus), 2),
                 "memory_mib": {"arguments": _mib(mem.argument_size_in_bytes), "temp": _mib(mem.temp_size_in_bytes),
                                "output": _mib(mem.output_size_in_bytes)} if mem is not None else None,
                 "reference_frames": r, "max_abs_diff_vs_reference": diff,
                 "max_rel_diff_vs_reference": diff / float(jnp.abs(ref).max()),
                 "load_average": os.getloadavg()[0]}
        results["settings"].append(entry)
        print(json.dumps(entry), flush=True)
    if args.reference_timing:  # the original's demo computation: full network, both branches, every step
        windows = centred_windows(rows, win, stride=stride, num_frames=frames, axis=1)
        dt.ddim_sample_reference(net, windows[:, :8], clip, pad, x_T[:, :8], schedule, 1, True, 1.0)
        t, c = time.perf_counter(), time.process_time()
        full = dt.ddim_sample_reference(net, windows, clip, pad, x_T, schedule, args.steps, True, 1.0)
        full.block_until_ready()
        results["reference_scale_1"] = {"wall_s": round(time.perf_counter() - t, 2),
                                        "cpu_s": round(time.process_time() - c, 2),
                                        "load_average": os.getloadavg()[0]}
    results["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return results


def table(results: dict) -> str:
    rows = [(f"DreamTalk DDIM-{results['ddim_steps']}, {results['frames']} frames ({results['audio_seconds']:g} s), "
            f"released size ({results['params'] / 1e6:.2f} M params), parallel={results['parallel']}, "
            f"chunk={results['chunk_frames']}, peak RSS {results['peak_rss_mib']} MiB"),
            "",
            ("| setting | passes/step | wall s (median) | CPU s | compile s | temp MiB | args+out MiB | max rel diff "
            "vs original loop | load avg |"),
            "|---|---|---|---|---|---|---|---|---|"]
    for e in results["settings"]:
        mem = e["memory_mib"] or {}
        rows.append(f"| {e['setting']} | {e['network_passes_per_step']} | {e['wall_s']} | {e['cpu_s']} | "
                    f"{e['compile_s']} | {mem.get('temp')} | "
                    f"{round(mem.get('arguments', 0) + mem.get('output', 0), 1)} | "
                    f"{e['max_rel_diff_vs_reference']:.1e} | {e['load_average']:.1f} |")
    if "reference_scale_1" in results:
        ref = results["reference_scale_1"]
        rows.append(f"| original loop, scale 1.0 | 2 (+ content encoder) | {ref['wall_s']} | {ref['cpu_s']} | | | | "
                    f"| {ref['load_average']:.1f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.parallel == "devices":
        cores = os.cpu_count() or 1
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={cores}"
                                   " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    report = main(arguments)
    print(json.dumps(report, indent=1))
    print(table(report))
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(report, indent=1))
