"""Render speed of our renderer next to the full-size PIRenderer port, same machine, same run: s/frame, the
ratio, and peak memory.

    python benchmarks/render_speed.py [--ours base] [--pirenderer released] [--batch_size 16]
                                      [--image_size 256 256] [--batches 3] [--warmup 1] [--json out.json]

Both renderers get random weights (speed does not depend on their values) and render batches of `--batch_size`
frames from random portraits and motion through their jitted renderer interface (`render_frames`), compiled
ahead of time: ours (mirrortalk_jax/configs/renderer.py:`--ours`, the 18-channel SynthTalk motion space; the
motion width does not change the cost) and PIRenderer (`released` config, 22.5 M parameters, 27-frame windows
of 73 coefficients). Reported per renderer:

  - compile seconds; the compiled program's memory_analysis (arguments, outputs, temporaries; peak ~= their
    sum, MiB) and the process's peak resident memory (of the whole run);
  - wall seconds per frame (batch time / batch size) over `--batches` timed batches after `--warmup`, and the
    process CPU seconds per frame: on a shared machine wall time grows with other users' load while CPU time
    stays near what the work costs;
  - the compiler's FLOP estimate per frame and the rate it implies, and the load average before and after.
Then `speedup`: PIRenderer's wall s/frame / ours (target >= 10x, issue "our renderer").

Prints one JSON object, then a Markdown table.
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
from mirrortalk_jax.data.synthtalk.builder import SYNTHTALK_SPEC
from mirrortalk_jax.models.pirenderer import renderer as pirenderer
from mirrortalk_jax.models.registry import create_model

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
TARGET_SPEEDUP = 10.0


def _inputs(rng: np.random.Generator, model, batch: int, size: tuple[int, int], motion_dim: int):
    image = rng.uniform(-1, 1, (batch, *size, 3)).astype(np.float32)
    motion = rng.normal(0, 1, (batch + 2 * pirenderer.SEMANTIC_RADIUS, motion_dim)).astype(np.float32)
    if motion_dim == 73:
        motion[:, -3:] = (0.937, 126.8, 129.0)  # PIRenderer's crop parameters as in real pose files
    driving = np.asarray(model.driving(motion, pirenderer.SEMANTIC_RADIUS, pirenderer.SEMANTIC_RADIUS + batch))
    return image, motion[:batch], driving


def _model(which: str, variant: str):
    """(model, motion width, parameter count) of "ours" or "pirenderer" at its config variant."""
    if which == "ours":
        config = base_config.load_config_file(base_config.config_path("renderer"), variant).model
        del config.loss  # inference only: no discriminator
        spec = SYNTHTALK_SPEC
    else:
        config = base_config.load_config_file(base_config.config_path("pirenderer"), variant).model
        spec = None
    model = create_model(config, spec, nnx.Rngs(0))
    return model, spec.dim if spec is not None else config.coeff_nc


def benchmark(which: str, variant: str, batch: int, size: tuple[int, int], batches: int, warmup: int) -> dict:
    model, motion_dim = _model(which, variant)
    graphdef, state = nnx.split(model)
    num_params = int(sum(x.size for x in jax.tree.leaves(state)))

    @jax.jit
    def render(state, image, source_motion, driving):
        return nnx.merge(graphdef, state).render_frames(image, source_motion, driving)

    inputs = _inputs(np.random.default_rng(0), model, batch, size, motion_dim)
    start = time.perf_counter()
    compiled = render.lower(state, *inputs).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0

    for _ in range(warmup):
        compiled(state, *inputs).block_until_ready()
    load_before = os.getloadavg()
    wall, cpu = [], []
    for _ in range(batches):
        w0, c0 = time.perf_counter(), time.process_time()
        frames = compiled(state, *inputs)
        frames.block_until_ready()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    load_after = os.getloadavg()
    assert frames.shape == (batch, *size, 3) and bool(np.isfinite(np.asarray(frames)).all())

    s_per_frame = float(np.median(wall)) / batch
    out = {
        "renderer": which, "variant": variant, "parameters": num_params, "batch_size": batch,
        "image_size": list(size), "timed_batches": batches, "compile_s": compile_s,
        "wall_s_per_frame": s_per_frame, "wall_s_per_frame_min": float(np.min(wall)) / batch,
        "cpu_s_per_frame": float(np.median(cpu)) / batch, "frames_per_s": 1.0 / s_per_frame,
        "gflop_per_frame": flops / batch / 1e9, "gflop_per_s": flops / float(np.median(wall)) / 1e9,
        "load_average_before": load_before, "load_average_after": load_after,
    }
    if memory is not None:
        parts = {k: getattr(memory, f"{k}_size_in_bytes", 0) / MIB
                 for k in ("argument", "output", "temp", "generated_code", "alias")}
        out["memory_mib"] = {**parts, "peak": parts["argument"] + parts["output"] + parts["temp"] - parts["alias"]}
    return out


def table(result: dict) -> str:
    rows = [("| renderer | variant | params (M) | batch | size | s/frame (wall) | CPU s/frame | frames/s | "
             "GFLOP/frame | compiled peak MiB | load avg (1 min) |"),
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["renderers"]:
        peak = r.get("memory_mib", {}).get("peak", float("nan"))
        rows.append(f"| {r['renderer']} | {r['variant']} | {r['parameters'] / 1e6:.2f} | {r['batch_size']} | "
                    f"{r['image_size'][0]}x{r['image_size'][1]} | {r['wall_s_per_frame']:.4f} | "
                    f"{r['cpu_s_per_frame']:.4f} | {r['frames_per_s']:.1f} | {r['gflop_per_frame']:.2f} | "
                    f"{peak:.0f} | {r['load_average_before'][0]:.1f} -> {r['load_average_after'][0]:.1f} |")
    rows.append("")
    rows.append(f"speedup (PIRenderer s/frame / ours): **{result['speedup']:.1f}x** (target >= {TARGET_SPEEDUP:.0f}x); "
                f"device {result['device']}, process peak RSS {result['process_peak_rss_mib']:.0f} MiB")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours", default="base", help="variant of mirrortalk_jax/configs/renderer.py")
    parser.add_argument("--pirenderer", default="released", help="variant of configs/released/pirenderer.py")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    parser.add_argument("--batches", type=int, default=3, help="timed batches (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", default="", help="also write the JSON here")
    args = parser.parse_args()
    size = tuple(args.image_size)
    runs = [benchmark("ours", args.ours, args.batch_size, size, args.batches, args.warmup),
            benchmark("pirenderer", args.pirenderer, args.batch_size, size, args.batches, args.warmup)]
    result = {"device": str(jax.devices()[0].device_kind), "platform": jax.devices()[0].platform,
              "cpu_count": os.cpu_count(), "renderers": runs,
              "speedup": runs[1]["wall_s_per_frame"] / runs[0]["wall_s_per_frame"],
              "speedup_cpu_time": runs[1]["cpu_s_per_frame"] / runs[0]["cpu_s_per_frame"],
              "target_speedup": TARGET_SPEEDUP,
              "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    print()
    print(table(result))


if __name__ == "__main__":
    main()
