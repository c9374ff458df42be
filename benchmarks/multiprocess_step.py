"""Train-step time of one process driving 2 devices vs 2 processes driving 1 device each, same global mesh.

    python benchmarks/multiprocess_step.py [--config mirrortalk_jax/configs/synthtalk_regression.py:tiny] [--batch_size 8]
                                           [--steps 30] [--warmup 3]

Both layouts run the trainer's own pieces (`state.make_training`, `state.state_shardings`, the jitted
`make_train_step` with donation, `pipeline.to_global_batch`) on a synthetic batch laid out like the input
pipeline's (`train.aot.example_window`; no dataset, no data loading in the timing). The 2-process layout talks
through JAX's distributed runtime on a loopback coordinator (launch/local.sh's wiring), so the difference is
the price of crossing a process boundary for the gradient all-reduce (gloo on CPU, NCCL/ICI on accelerators)
instead of sharing memory. Each layout reports the median and mean ms per step (each step waited for) and
the seconds to the first step (initialisation + compilation). Prints one JSON object, then a table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _worker(args: argparse.Namespace) -> None:
    """One process of a layout: times `args.steps` train steps; process 0 prints the result as JSON."""
    from mirrortalk_jax.train import distributed

    distributed.initialize_from_env()
    import jax
    import numpy as np

    from mirrortalk_jax import base_config
    from mirrortalk_jax.data import pipeline
    from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
    from mirrortalk_jax.models.registry import create_model
    from mirrortalk_jax.train import aot, mesh as mesh_lib
    from mirrortalk_jax.train.compiled import compile_training

    start = time.perf_counter()
    config = base_config.load_config_file(str(ROOT / args.config))
    config.train.batch_size = args.batch_size
    mesh = mesh_lib.create_mesh(config.mesh)
    setup = compile_training(config, lambda rngs: create_model(config.model, SYNTHTALK_SPEC, rngs), mesh)
    state = setup.init(jax.random.key(0))
    step = setup.train_step
    example = aot.example_window(config, SYNTHTALK_SPEC)
    local = {k: np.stack([v] * (args.batch_size // jax.process_count())) for k, v in example.items()}
    batch = pipeline.to_global_batch(local, mesh)
    rng = jax.random.key(1)
    times = []
    for i in range(args.warmup + args.steps):
        t = time.perf_counter()
        state, metrics = step(state, batch, rng)
        jax.block_until_ready(metrics)
        if i == 0:
            first = time.perf_counter() - start
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    if jax.process_index() == 0:
        print(json.dumps({"processes": jax.process_count(), "devices": jax.device_count(),
                          "mesh": {k: int(v) for k, v in mesh.shape.items()},
                          "ms_per_step_median": 1e3 * statistics.median(times),
                          "ms_per_step_mean": 1e3 * statistics.mean(times), "s_to_first_step": first,
                          "loss": float(metrics["loss"])}), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _layout(args: argparse.Namespace, processes: int, devices_per_process: int) -> dict:
    """Runs the workers of one layout and returns process 0's JSON."""
    port = _free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("MIRRORTALK_")}
    base["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices_per_process}"
    cmd = [sys.executable, __file__, "--worker", f"--config={args.config}", f"--batch_size={args.batch_size}",
           f"--steps={args.steps}", f"--warmup={args.warmup}"]
    procs = []
    for i in range(processes):
        env = dict(base)
        if processes > 1:
            env.update(MIRRORTALK_COORDINATOR=f"127.0.0.1:{port}", MIRRORTALK_NUM_PROCESSES=str(processes),
                       MIRRORTALK_PROCESS_ID=str(i))
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode:
            raise RuntimeError(f"worker failed:\n{err[-3000:]}")
    result = json.loads(outs[0][0].strip().splitlines()[-1])
    return {"layout": f"{processes} process(es) x {devices_per_process} device(s)", **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="mirrortalk_jax/configs/synthtalk_regression.py:tiny")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    rows = [_layout(args, 1, 2), _layout(args, 2, 1)]
    report = {"config": args.config, "batch_size": args.batch_size, "steps": args.steps, "cpu_count": os.cpu_count(),
              "layouts": rows,
              "slowdown_two_processes": rows[1]["ms_per_step_median"] / rows[0]["ms_per_step_median"]}
    print(json.dumps(report, indent=2))
    print("\n| layout | mesh | ms/step (median) | ms/step (mean) | s to first step |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layout']} | {r['mesh']} | {r['ms_per_step_median']:.1f} | {r['ms_per_step_mean']:.1f} "
              f"| {r['s_to_first_step']:.1f} |")
    print(f"\n2 processes take {report['slowdown_two_processes']:.2f}x the time per step of 1 process.")


if __name__ == "__main__":
    main()
