"""Render speed of the full-size PIRenderer (DreamTalk's renderer): seconds per frame and peak memory.

    python benchmarks/render_speed.py [--variant released] [--batch_size 16] [--image_size 256 256]
                                      [--batches 3] [--warmup 1] [--precision default] [--json out.json]

The `released` config (22.5 M parameters) with random weights (speed does not depend on their values) renders
batches of `--batch_size` frames (the original demo renders 16 at a time) from random portraits and motion
windows, through the jitted `render` (mapping + warping + editing nets), compiled ahead of time. Reported:

  - compile seconds; the compiled program's memory_analysis (arguments, outputs, temporaries; peak ~= their
    sum, MiB) and the process's peak resident memory;
  - wall seconds per frame (batch time / batch size) over `--batches` timed batches after `--warmup`, and the
    process CPU seconds per frame: on a shared machine wall time grows with other users' load while CPU time
    stays near what the work costs, so CPU s/frame / number of cores estimates the unloaded wall time;
  - the compiler's FLOP estimate per frame and the rate it implies, and the machine's load average before and
    after (os.getloadavg), so a reader can judge how contended the run was.

Prints one JSON object, then a Markdown table. The target on the project's 2-core CPU is <= 0.9 s/frame (the
original PyTorch renderer took 1.77 s/frame there).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from mirrortalk_jax import base_config
from mirrortalk_jax.models.pirenderer import renderer as pirenderer
from mirrortalk_jax.models.registry import create_model

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
TARGET_S_PER_FRAME = 0.9


def _inputs(rng: np.random.Generator, batch: int, size: tuple[int, int], coeff_nc: int):
    image = rng.uniform(-1, 1, (batch, *size, 3)).astype(np.float32)
    motion = rng.normal(0, 1, (batch + 2 * pirenderer.SEMANTIC_RADIUS, coeff_nc)).astype(np.float32)
    motion[:, -3:] = (0.937, 126.8, 129.0)  # crop parameters as in real pose files
    windows = np.asarray(pirenderer.motion_windows(motion))[pirenderer.SEMANTIC_RADIUS:][:batch]
    return image, windows


def benchmark(variant: str, batch: int, size: tuple[int, int], batches: int, warmup: int,
              precision: str) -> dict:
    config = base_config.load_config_file(base_config.config_path("pirenderer"), variant).model
    config.precision = precision
    model = create_model(config, None, nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    num_params = int(sum(x.size for x in jax.tree.leaves(state)))

    @jax.jit
    def render(state, image, motion):
        return nnx.merge(graphdef, state).render(image, motion)

    image, motion = _inputs(np.random.default_rng(0), batch, size, config.coeff_nc)
    start = time.perf_counter()
    compiled = render.lower(state, image, motion).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0

    for _ in range(warmup):
        compiled(state, image, motion).block_until_ready()
    load_before = os.getloadavg()
    wall, cpu = [], []
    for _ in range(batches):
        w0, c0 = time.perf_counter(), time.process_time()
        frames = compiled(state, image, motion)
        frames.block_until_ready()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    load_after = os.getloadavg()
    assert frames.shape == (batch, *size, 3) and bool(np.isfinite(np.asarray(frames)).all())

    s_per_frame = float(np.median(wall)) / batch
    out = {
        "device": str(jax.devices()[0].device_kind), "platform": jax.devices()[0].platform,
        "cpu_count": os.cpu_count(), "variant": variant, "parameters": num_params, "batch_size": batch,
        "image_size": list(size), "precision": precision, "timed_batches": batches, "compile_s": compile_s,
        "wall_s_per_frame": s_per_frame, "wall_s_per_frame_min": float(np.min(wall)) / batch,
        "cpu_s_per_frame": float(np.median(cpu)) / batch, "frames_per_s": 1.0 / s_per_frame,
        "gflop_per_frame": flops / batch / 1e9, "gflop_per_s": flops / float(np.median(wall)) / 1e9,
        "target_s_per_frame": TARGET_S_PER_FRAME, "load_average_before": load_before, "load_average_after": load_after,
    }
    if memory is not None:
        parts = {k: getattr(memory, f"{k}_size_in_bytes", 0) / MIB
                 for k in ("argument", "output", "temp", "generated_code", "alias")}
        out["memory_mib"] = {**parts, "peak": parts["argument"] + parts["output"] + parts["temp"] - parts["alias"]}
    out["process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["cpu_estimate_unloaded_s_per_frame"] = out["cpu_s_per_frame"] / max(os.cpu_count() or 1, 1)
    return out


def table(r: dict) -> str:
    rows = [("| variant | batch | size | s/frame (wall) | CPU s/frame | est. unloaded s/frame | GFLOP/frame | "
             "compiled peak MiB | process RSS MiB | load avg (1 min) |"),
            "|---|---|---|---|---|---|---|---|---|---|"]
    peak = r.get("memory_mib", {}).get("peak", float("nan"))
    rows.append(f"| {r['variant']} | {r['batch_size']} | {r['image_size'][0]}x{r['image_size'][1]} | "
                f"{r['wall_s_per_frame']:.3f} | {r['cpu_s_per_frame']:.3f} | {r['cpu_estimate_unloaded_s_per_frame']:.3f} | "
                f"{r['gflop_per_frame']:.1f} | {peak:.0f} | {r['process_peak_rss_mib']:.0f} | "
                f"{r['load_average_before'][0]:.1f} -> {r['load_average_after'][0]:.1f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="released")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    parser.add_argument("--batches", type=int, default=3, help="timed batches (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--precision", default="default", help="default or highest (GPU/TPU only)")
    parser.add_argument("--json", default="", help="also write the JSON here")
    args = parser.parse_args()
    result = benchmark(args.variant, args.batch_size, tuple(args.image_size), args.batches, args.warmup,
                       args.precision)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    print()
    print(table(result))


if __name__ == "__main__":
    main()
