"""Ahead-of-time compilation of the real train step for a pod topology, on a machine without that pod.

Why: the expensive failures of a scale-out run (out of memory on the biggest model, a sharding the mesh cannot
use, a batch that does not divide) all show up at compile time. With `libtpu` installed (`pip install
'jax[tpu]'`: it runs on any x86 Linux host, no TPU needed) `jax.experimental.topologies` describes a TPU slice
as compile-only devices, and XLA's TPU compiler reports the per-device memory the step will need. Without it,
the same program is compiled for as many fake CPU devices, which checks shardings and divisibility (memory is
then the CPU compiler's, which has other layouts and fusions: a rough guide only).

Communication per step is computed from the parameter shardings (what FSDP and data parallelism must move),
independently of the compiler, so it can be compared across meshes before any hardware is rented.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from mirrortalk_jax.data import pipeline
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC, MotionSpec
from mirrortalk_jax.runs import loader
from mirrortalk_jax.train import mesh as mesh_lib
from mirrortalk_jax.train.compiled import compile_training


@dataclasses.dataclass(frozen=True)
class TpuSlice:
    """A Cloud TPU slice as libtpu names it: 'v5:2x4x4' plus chip layout. One device per chip (megacore)."""

    topology: str
    chip_config: str
    devices: int
    wrap: tuple[bool, bool, bool]
    hbm_gib: float  # per device


_NO_WRAP, _WRAP2, _WRAP3 = (False, False, False), (True, True, False), (True, True, True)
# Accelerator type (as in `gcloud compute tpus tpu-vm create --accelerator-type`) -> slice. v4/v5p count
# TensorCores (2 per chip, fused into one megacore device); v5e/v6e count chips.
TPU_SLICES: dict[str, TpuSlice] = {
    "v4-8": TpuSlice("v4:2x2x1", "megacore", 4, _NO_WRAP, 32),
    "v4-16": TpuSlice("v4:2x2x2", "megacore", 8, _NO_WRAP, 32),
    "v4-32": TpuSlice("v4:2x2x4", "megacore", 16, _NO_WRAP, 32),
    "v4-64": TpuSlice("v4:2x4x4", "megacore", 32, _NO_WRAP, 32),
    "v4-128": TpuSlice("v4:4x4x4", "megacore", 64, _WRAP3, 32),
    "v5p-8": TpuSlice("v5:2x2x1", "megacore", 4, _NO_WRAP, 95),
    "v5p-16": TpuSlice("v5:2x2x2", "megacore", 8, _NO_WRAP, 95),
    "v5p-32": TpuSlice("v5:2x2x4", "megacore", 16, _NO_WRAP, 95),
    "v5p-64": TpuSlice("v5:2x4x4", "megacore", 32, _NO_WRAP, 95),
    "v5p-128": TpuSlice("v5:4x4x4", "megacore", 64, _WRAP3, 95),
    "v5p-256": TpuSlice("v5:4x4x8", "megacore", 128, _WRAP3, 95),
    "v5e-4": TpuSlice("v5e:2x2", "default", 4, _NO_WRAP, 16),
    "v5e-8": TpuSlice("v5e:2x4", "default", 8, _NO_WRAP, 16),
    "v5e-16": TpuSlice("v5e:4x4", "default", 16, _NO_WRAP, 16),
    "v5e-32": TpuSlice("v5e:4x8", "default", 32, _NO_WRAP, 16),
    "v5e-64": TpuSlice("v5e:8x8", "default", 64, _NO_WRAP, 16),
    "v5e-256": TpuSlice("v5e:16x16", "default", 256, _WRAP2, 16),
    "v6e-8": TpuSlice("v6e:2x4", "default", 8, _NO_WRAP, 32),
    "v6e-16": TpuSlice("v6e:4x4", "default", 16, _NO_WRAP, 32),
    "v6e-64": TpuSlice("v6e:8x8", "default", 64, _NO_WRAP, 32),
    "v6e-256": TpuSlice("v6e:16x16", "default", 256, _WRAP2, 32),
}


def device_count(topology: str, num_slices: int = 1) -> int:
    """Devices of `topology` ('v5p-64', or 'cpu-N' for N fake CPU devices) over `num_slices` slices."""
    if topology.startswith("cpu-"):
        return int(topology[4:]) * num_slices
    if topology not in TPU_SLICES:
        raise ValueError(f"unknown topology {topology!r}: use cpu-N or one of {sorted(TPU_SLICES)}")
    return TPU_SLICES[topology].devices * num_slices


def topology_devices(topology: str, num_slices: int = 1) -> tuple[list[jax.Device], str, bool]:
    """(devices to compile for, a description, whether they are the real TPU target) for `topology`.

    TPU slices need libtpu; without it the same number of CPU devices stands in (the caller must have
    started JAX with that many: `jax.config.update('jax_num_cpu_devices', n)` before first use).
    """
    n = device_count(topology, num_slices)
    described = f"{n} CPU devices"
    if not topology.startswith("cpu-"):
        s = TPU_SLICES[topology]
        # No metadata-server lookups: this host is not a TPU VM, and the topology is given in full.
        os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
        from jax.experimental import topologies
        try:
            desc = topologies.get_topology_desc(s.topology, "tpu", chip_config_name=s.chip_config,
                                                chips_per_host_bounds=(2, 2, 1), num_slices=num_slices,
                                                wrap=s.wrap)
            return list(desc.devices), f"{topology} x{num_slices} ({s.topology}, {n} TPU devices, compile only)", True
        except (RuntimeError, NotImplementedError) as e:  # JaxRuntimeError is a RuntimeError
            described = (f"{n} fake CPU devices standing in for {topology} (no TPU compiler here: "
                         f"{str(e).splitlines()[0][:120]})")
    devices = jax.devices("cpu")
    if len(devices) < n:
        raise ValueError(f"{topology} needs {n} CPU stand-in devices but JAX has {len(devices)}: call "
                         f"jax.config.update('jax_num_cpu_devices', {n}) before JAX first runs")
    return devices[:n], described, False


class _OneClip:
    """The smallest source WindowSampler accepts: no other clips, so the style reference is the clip itself."""

    def clip_index(self) -> list:
        return []


def example_window(config: ml_collections.ConfigDict, spec: MotionSpec, seconds: float = 8.0) -> dict[str, np.ndarray]:
    """One training example as the input pipeline makes it (same code, a silent synthetic clip), so the
    compiled step sees exactly the training batch structure."""
    window = pipeline.WindowConfig.from_config(config.data)  # the trainer's choice of window contents
    frames = int(seconds * spec.fps)
    record = {"clip_id": "aot", "speaker_index": 0, "fps": spec.fps, "sample_rate": 16000,
              "motion": np.zeros((frames, spec.dim), np.float32),
              "audio": np.zeros(int(seconds * 16000), np.float32),
              "landmarks_2d": np.zeros((frames, 68, 2), np.float32),
              "landmarks_3d": np.zeros((frames, 68, 3), np.float32)}
    sampler = pipeline.WindowSampler(_OneClip(), window)
    return sampler.random_map((0, record), np.random.default_rng(0))


def abstract_batch(config: ml_collections.ConfigDict, spec: MotionSpec, mesh: Mesh) -> dict[str, jax.ShapeDtypeStruct]:
    rules = mesh_lib.logical_rules(config.mesh.logical_axis_rules)
    sharding = pipeline.batch_sharding(mesh, mesh_lib.batch_axes(rules))
    return {k: jax.ShapeDtypeStruct((config.train.batch_size,) + np.shape(v), np.asarray(v).dtype, sharding=sharding)
            for k, v in example_window(config, spec).items()}


def communication_per_step(params: Any, shardings: Any, mesh: Mesh,
                           batch_axes: tuple[str, ...] = ("data", "fsdp")) -> dict[str, float]:
    """Bytes each device sends/receives per train step for the parameters, from their shardings (ring
    collectives: moving an array of size T among k devices costs T (k - 1) / k per device).

    - `param_all_gather`: FSDP parameters (split over `fsdp`) gathered whole for the forward pass (XLA may
      gather again for the backward pass instead of keeping them: up to twice this).
    - `grad_reduce_scatter`: their gradients summed and split back over `fsdp`.
    - `grad_all_reduce`: gradients summed over the batch axes a parameter is *not* split over (all of
      data x fsdp for replicated parameters, `data` for FSDP ones).
    Activations of tensor parallelism are not included (they depend on the model code, not the shardings).
    """
    batch_axes = [a for a in batch_axes if a in mesh.shape]
    totals = dict(param_bytes=0.0, param_all_gather=0.0, grad_reduce_scatter=0.0, grad_all_reduce=0.0)
    for leaf, sharding in zip(jax.tree.leaves(params), jax.tree.leaves(shardings)):
        nbytes = math.prod(leaf.shape) * leaf.dtype.itemsize
        used = [a for entry in sharding.spec if entry is not None
                for a in (entry if isinstance(entry, tuple) else (entry,))]
        split = math.prod(mesh.shape[a] for a in used)
        fsdp = mesh.shape["fsdp"] if "fsdp" in used else 1
        gathered = nbytes / split * fsdp  # this device's share once the fsdp shards are gathered
        replicas = math.prod(mesh.shape[a] for a in batch_axes if a not in used)
        totals["param_bytes"] += nbytes
        totals["param_all_gather"] += gathered * (fsdp - 1) / fsdp
        totals["grad_reduce_scatter"] += gathered * (fsdp - 1) / fsdp
        totals["grad_all_reduce"] += 2 * nbytes / split * (replicas - 1) / replicas
    totals["total"] = totals["param_all_gather"] + totals["grad_reduce_scatter"] + totals["grad_all_reduce"]
    return totals


_COLLECTIVE = re.compile(r"\b(all-gather|reduce-scatter|all-reduce|all-to-all|collective-permute)(?:-start)?\(")


def count_collectives(hlo_text: str) -> dict[str, int]:
    """How many collectives of each kind the compiled program runs (a cross-check of the estimate)."""
    counts: dict[str, int] = {}
    for kind in _COLLECTIVE.findall(hlo_text):
        counts[kind] = counts.get(kind, 0) + 1
    return counts


@dataclasses.dataclass
class AotReport:
    config: str
    topology: str
    devices: str
    real_target: bool
    mesh: dict[str, int]
    batch_size: int
    num_params: int
    memory: dict[str, int]  # per device, from compiled.memory_analysis()
    hbm_bytes: int | None  # per device, when the target chip is known
    communication: dict[str, float]  # per device per step
    collectives: dict[str, int]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _memory(compiled) -> dict[str, int]:
    stats = compiled.memory_analysis()
    if stats is None:
        return {}
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes",
              "generated_code_size_in_bytes")
    out = {f.removesuffix("_size_in_bytes"): int(getattr(stats, f, 0) or 0) for f in fields}
    # Donated state is aliased to the output: count it once.
    out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"] + out["generated_code"]
    return out


def compile_train_step(config: ml_collections.ConfigDict, topology: str, *, num_slices: int = 1,
                       spec: MotionSpec | None = None, config_name: str = "") -> AotReport:
    """Lowers and compiles the trainer's train step for `config` on `topology`; nothing is allocated (with the
    models' activation sharding constraints unless `config.mesh.constrain_activations` is off, as in training)."""
    spec = spec or SYNTHTALK_SPEC
    devices, description, real = topology_devices(topology, num_slices)
    mesh = mesh_lib.create_mesh(config.mesh, devices)
    # The trainer's model: parts named by the config come from their runs' stored configs (no arrays read).
    setup = compile_training(config, loader.recipe(config.model, spec).factory, mesh)
    rng = jax.eval_shape(lambda: jax.random.key(0))
    lowered = setup.train_step.lower(setup.abstract_state(), abstract_batch(config, spec, mesh),
                                     jax.ShapeDtypeStruct(rng.shape, rng.dtype, sharding=setup.replicated))
    compiled = lowered.compile()
    hbm = TPU_SLICES[topology].hbm_gib if real else None
    return AotReport(
        config=config_name, topology=topology, devices=description, real_target=real,
        mesh={k: int(v) for k, v in mesh.shape.items()}, batch_size=int(config.train.batch_size),
        num_params=int(sum(math.prod(x.shape) for x in jax.tree.leaves(setup.abstract.params))),
        memory=_memory(compiled), hbm_bytes=int(hbm * 2**30) if hbm else None,
        communication=communication_per_step(setup.abstract.params, setup.shardings.params, mesh,
                                             setup.batch_axes),
        collectives=count_collectives(compiled.as_text()))


def _fmt_bytes(n: float) -> str:
    units = ("B", "KiB", "MiB", "GiB")
    i = 0
    while abs(n) >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.1f} {units[i]}" if i else f"{int(n)} B"


def format_report(r: AotReport) -> str:
    """A short human-readable summary (the tool prints it next to the JSON)."""
    mem, comm = r.memory, r.communication
    lines = [f"{r.config} on {r.devices}",
             f"  mesh {r.mesh}, global batch {r.batch_size}, {r.num_params / 1e6:.1f} M parameters "
             f"({_fmt_bytes(comm['param_bytes'])})"]
    if mem:
        fits = f" of {_fmt_bytes(r.hbm_bytes)} HBM" if r.hbm_bytes else ""
        lines.append(f"  memory per device: {_fmt_bytes(mem['total'])}{fits} (arguments {_fmt_bytes(mem['argument'])}, "
                     f"temporaries {_fmt_bytes(mem['temp'])}, outputs {_fmt_bytes(mem['output'])}, "
                     f"aliased {_fmt_bytes(mem['alias'])})")
    lines.append(f"  communication per device per step: {_fmt_bytes(comm['total'])} (parameter all-gather "
                 f"{_fmt_bytes(comm['param_all_gather'])}, gradient reduce-scatter "
                 f"{_fmt_bytes(comm['grad_reduce_scatter'])}, gradient all-reduce {_fmt_bytes(comm['grad_all_reduce'])})")
    lines.append(f"  collectives in the compiled step: {r.collectives or 'none'}")
    return "\n".join(lines)


def out_of_memory(error: Exception) -> str | None:
    """The compiler's message when compiling failed because the step does not fit the device memory (the TPU
    compiler refuses such a program instead of planning it), else None."""
    text = str(error)
    return text.strip().splitlines()[0] if "RESOURCE_EXHAUSTED" in text else None


def fits(report: AotReport) -> bool | None:
    """Whether the step fits the device memory (None when the target is not a known TPU)."""
    if not report.hbm_bytes or not report.memory:
        return None
    return report.memory["total"] <= report.hbm_bytes

