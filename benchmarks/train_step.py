"""MirrorTalk train-step speed and compiled memory, per model variant, on this machine's devices.

    python benchmarks/train_step.py [--variants tiny,base] [--batch_size N] [--window_frames N] [--steps N]
                                    [--warmup N] [--mesh ici_data=1,ici_fsdp=-1]

For each variant of mirrortalk_jax/configs/mirrortalk.py the model and train state are built exactly as the trainer builds
them (`state.make_training`, `mesh.create_mesh`, `state.state_shardings`, the jitted `make_train_step` with
state shardings, the batch sharding and `donate_argnums=0`), and fed synthetic batches with the input
pipeline's layout (motion, masks, log-mel audio features, reference clip, speaker index, style params; random
values: speed does not depend on them, and no dataset is needed). The step is compiled ahead of time
(`.lower(...).compile()`), so the report separates:

  - compile seconds (trace + lower, and XLA compile);
  - the compiled step's `memory_analysis()`: argument, output, temp and generated-code sizes, the bytes
    aliased by donation, and peak ~= argument + output + temp - alias (MiB, per device);
  - ms/step, steps/s and frames/s (= batch * window_frames * steps/s) over `--steps` steps after `--warmup`
    steps, timed from dispatch to `block_until_ready`;
  - the parameter count, and the compiler's FLOP estimate per step (one device's program x the number of
    devices) where the backend gives one, with the FLOP rate it implies and the MFU: that rate over the devices'
    dense bf16 peak (a table of GPUs / TPUs by device kind, or --peak_tflops).

Prints one JSON object, then a Markdown table.

Defaults are sized for the 2-core CPU this project develops on (both variants in a few minutes): on CPU the
batch is capped at 8 and `base` runs 3 timed steps after 1 warm-up; on an accelerator the config's batch size
and 20 timed steps after 2 warm-ups are used. CPU numbers only show that the script works and how compile and
memory scale; real training speed is measured on a GPU/TPU with this same script (add
`--variants tiny,base,large --mesh ici_data=1,ici_fsdp=-1` for FSDP). To try a multi-device mesh on a CPU, set
`XLA_FLAGS=--xla_force_host_platform_device_count=8` before running.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from mirrortalk_jax import base_config

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
CPU_BATCH_CAP = 8


def load_config(variant: str):
    return base_config.load_config_file(base_config.config_path("mirrortalk"), variant)


def parse_mesh(text: str) -> dict[str, int]:
    """"ici_data=1,ici_fsdp=-1" -> {"ici_data": 1, "ici_fsdp": -1}."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--mesh entries are key=value, got {item!r}")
        out[key.strip()] = int(value)
    return out


def synthetic_batch(rng: np.random.Generator, batch: int, window: int, reference: int, motion_dim: int,
                    audio_dim: int, num_speakers: int = 4) -> dict[str, np.ndarray]:
    """One global batch in the layout of `data.pipeline.training_dataset` (log-mel audio features)."""
    motion_mask = np.ones((batch, window), bool)
    motion_mask[0, window - window // 4:] = False  # some padding, as at the end of a clip
    reference_mask = np.ones((batch, reference), bool)
    reference_mask[1 % batch, reference // 2:] = False
    return {
        "motion": rng.normal(size=(batch, window, motion_dim)).astype(np.float32),
        "motion_mask": motion_mask,
        "speaker_index": (np.arange(batch) % num_speakers).astype(np.int32),  # several speakers: triplets valid
        "clip_index": np.arange(batch, dtype=np.int32),
        "start_frame": np.zeros(batch, np.int32),
        "reference_motion": rng.normal(size=(batch, reference, motion_dim)).astype(np.float32),
        "reference_mask": reference_mask,
        "audio_features": rng.normal(size=(batch, window, audio_dim)).astype(np.float32),
        "style_params": rng.normal(size=(batch, 9)).astype(np.float32),
    }


def memory_report(compiled) -> dict[str, float | None]:
    """`compiled.memory_analysis()` in MiB (per device), with peak ~= argument + output + temp - alias."""
    try:
        mem = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        mem = None
    if mem is None:
        return {k: None for k in ("argument_mib", "output_mib", "temp_mib", "alias_mib", "generated_code_mib",
                                  "peak_mib")}
    get = lambda name: float(getattr(mem, name, 0) or 0)  # noqa: E731
    arg, out, temp, alias = (get(f"{k}_size_in_bytes") for k in ("argument", "output", "temp", "alias"))
    return {"argument_mib": round(arg / MIB, 2), "output_mib": round(out / MIB, 2), "temp_mib": round(temp / MIB, 2),
            "alias_mib": round(alias / MIB, 2),
            "generated_code_mib": round(get("generated_code_size_in_bytes") / MIB, 2),
            "peak_mib": round((arg + out + temp - alias) / MIB, 2)}


# Dense bf16 peak TFLOP/s per chip (vendor data sheets), by the start of jax's `device_kind`: MFU's denominator.
PEAK_BF16_TFLOPS = {
    "NVIDIA H100": 989.0, "NVIDIA H200": 989.0, "NVIDIA A100": 312.0, "NVIDIA L4": 121.0,
    "TPU v6": 918.0, "TPU v5p": 459.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v4": 275.0,
}


def peak_tflops(device_kind: str, override: float = 0.0) -> float | None:
    """The device's dense bf16 peak (TFLOP/s per chip): `override` when > 0, else the table; None when unknown
    (CPUs: give --peak_tflops to get an MFU)."""
    if override > 0:
        return override
    return next((peak for prefix, peak in PEAK_BF16_TFLOPS.items() if device_kind.startswith(prefix)), None)


def flops_per_step(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def bench_variant(variant: str, args, on_cpu: bool) -> dict:

    from mirrortalk_jax.data import pipeline
    from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
    from mirrortalk_jax.models.registry import create_model
    from mirrortalk_jax.train import mesh as mesh_lib, trainer
    from mirrortalk_jax.train.compiled import compile_training

    config = load_config(variant)
    tc = config.train
    if args.batch_size:
        tc.batch_size = args.batch_size
    elif on_cpu:
        tc.batch_size = min(tc.batch_size, CPU_BATCH_CAP)
    if args.window_frames:
        config.data.window_frames = args.window_frames
        config.model.style_encoder.max_frames = max(config.model.style_encoder.max_frames, args.window_frames)
    mesh_overrides = parse_mesh(args.mesh)
    unknown = [k for k in mesh_overrides if k not in config.mesh]
    if unknown:
        raise ValueError(f"unknown --mesh keys {unknown}; known: {sorted(config.mesh)}")
    config.mesh.update(mesh_overrides)
    steps = args.steps or (20 if not on_cpu else 10 if variant == "tiny" else 3)
    warmup = args.warmup if args.warmup is not None else (2 if not on_cpu else 1)
    batch, window, reference = tc.batch_size, config.data.window_frames, config.data.reference_frames

    # ----- Mesh, model and state: the trainer's own setup -----
    mesh = mesh_lib.create_mesh(config.mesh)
    setup = compile_training(config, lambda rngs: create_model(config.model, SYNTHTALK_SPEC, rngs), mesh)
    init_rng, step_rng = jax.random.split(jax.random.key(tc.seed))
    start = time.perf_counter()
    state = jax.block_until_ready(setup.init(init_rng))
    init_s = time.perf_counter() - start
    train_step = setup.train_step

    data_rng = np.random.default_rng(0)
    batches = [pipeline.to_global_batch(synthetic_batch(data_rng, batch, window, reference, SYNTHTALK_SPEC.dim,
                                                        config.model.audio_dim), mesh) for _ in range(2)]

    # ----- Ahead-of-time compilation -----
    start = time.perf_counter()
    lowered = train_step.lower(state, batches[0], step_rng)
    lower_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start

    # ----- Timed steps (the host only dispatches; the last block waits for the device) -----
    metrics = None
    for i in range(warmup):
        state, metrics = compiled(state, batches[i % 2], step_rng)
    jax.block_until_ready((state, metrics))
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = compiled(state, batches[i % 2], step_rng)
    jax.block_until_ready((state, metrics))
    elapsed = time.perf_counter() - start
    loss = float(jax.device_get(metrics["loss"]))
    if not np.isfinite(loss):
        raise FloatingPointError(f"{variant}: non-finite loss {loss} on synthetic data")

    steps_per_s = steps / elapsed
    flops = flops_per_step(compiled)  # the compiler's estimate for one device's program
    flops = flops * mesh.size if flops else None
    m = config.model
    return {
        "variant": variant, "hidden": m.hidden, "blocks": m.num_layers, "heads": m.num_heads,
        "params": trainer.count_params(state), "ema": tc.ema_decay > 0,
        "batch_size": batch, "window_frames": window, "reference_frames": reference,
        "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "init_s": round(init_s, 2), "lower_s": round(lower_s, 2), "compile_s": round(compile_s, 2),
        **memory_report(compiled),
        "warmup_steps": warmup, "timed_steps": steps,
        "ms_per_step": round(1000 * elapsed / steps, 1), "steps_per_s": round(steps_per_s, 3),
        "frames_per_s": round(batch * window * steps_per_s, 1),
        "gflop_per_step": round(flops / 1e9, 1) if flops else None,
        "achieved_tflop_s": round(flops * steps_per_s / 1e12, 4) if flops else None,
        # Model FLOP utilisation: the compiled step's FLOPs per second over the devices' summed peak.
        "mfu": (round(flops * steps_per_s / (peak * 1e12 * mesh.size), 4)
                if flops and (peak := peak_tflops(jax.devices()[0].device_kind, args.peak_tflops)) else None),
        "final_loss": round(loss, 4),
    }


COLUMNS = (("variant", "variant"), ("params", "params"), ("batch_size", "batch"), ("window_frames", "frames"),
           ("compile_s", "compile s"), ("argument_mib", "argument MiB"), ("output_mib", "output MiB"),
           ("temp_mib", "temp MiB"), ("alias_mib", "alias MiB"), ("generated_code_mib", "code MiB"),
           ("peak_mib", "peak MiB"), ("ms_per_step", "ms/step"), ("steps_per_s", "steps/s"),
           ("frames_per_s", "frames/s"), ("gflop_per_step", "GFLOP/step"), ("achieved_tflop_s", "TFLOP/s"),
           ("mfu", "MFU"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="tiny,base", help="comma-separated mirrortalk_jax/configs/mirrortalk.py variants")
    parser.add_argument("--batch_size", type=int, default=0, help="global batch (0: config's; capped at 8 on CPU)")
    parser.add_argument("--window_frames", type=int, default=0, help="0: the config's window")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (0: 20; on CPU 10 tiny, 3 others)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2; 1 on CPU)")
    parser.add_argument("--mesh", default="", help='mesh overrides, e.g. "ici_data=1,ici_fsdp=-1"')
    parser.add_argument("--peak_tflops", type=float, default=0.0,
                        help="peak TFLOP/s per device for MFU (0: the table's value for known GPUs / TPUs)")
    args = parser.parse_args()

    on_cpu = jax.default_backend() == "cpu"
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    result = {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
              "device_count": jax.device_count(), "jax": jax.__version__,
              "variants": [bench_variant(v, args, on_cpu) for v in variants]}
    print(json.dumps(result))
    print(f"\nbackend: {result['backend']} ({result['device_kind']} x {result['device_count']}); memory per device\n")
    print("| " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in result["variants"]:
        print("| " + " | ".join("-" if row.get(k) is None else f"{row[k]:,}" if k == "params" else str(row[k])
                                for k, _ in COLUMNS) + " |")


if __name__ == "__main__":
    main()
