"""Refuses to train when a big parameter would be silently replicated on a mesh meant to shard parameters.

A parameter without logical axes (or with axes the rules table maps to nothing) gets `PartitionSpec()`, so every
device holds a full copy of it and of its two Adam moments. On a pure data-parallel mesh that is the plan; on a
mesh with `fsdp` or `tensor` > 1 it is almost always a forgotten annotation, and it shows up only as an
out-of-memory error on the largest model, hours into provisioning a pod. This check runs on the abstract state
before anything is allocated (MaxText has the same guard: `assert_params_sufficiently_sharded`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding

from mirrortalk_jax.train import param_groups

# Mesh axes whose purpose is to split parameters; `data` only splits the batch.
PARAMETER_AXES = ("fsdp", "tensor")


class ReplicatedParameterError(ValueError):
    """Big parameters would be fully replicated on a mesh that shards parameters."""


@dataclasses.dataclass(frozen=True)
class ReplicatedParameter:
    name: str
    shape: tuple[int, ...]
    nbytes: int


def _spec_axes(spec) -> list[str]:
    axes: list[str] = []
    for entry in spec:
        if entry is None:
            continue
        axes.extend(entry if isinstance(entry, tuple) else (entry,))
    return axes


def is_fully_replicated(sharding: Any, mesh: Mesh) -> bool:
    """True when no dimension is split over a mesh axis of size > 1: every device holds the whole array."""
    if not isinstance(sharding, NamedSharding):
        return bool(getattr(sharding, "is_fully_replicated", False))
    return math.prod(mesh.shape[a] for a in _spec_axes(sharding.spec)) == 1


def replicated_parameters(params: Any, shardings: Any, mesh: Mesh, *, min_bytes: int = 0) -> list[ReplicatedParameter]:
    """Parameters larger than `min_bytes` that `shardings` leaves fully replicated on `mesh`, largest first.

    `params` is a tree of arrays or ShapeDtypeStructs (e.g. `jax.eval_shape(init).params`) and `shardings` the
    tree of NamedShardings with the same structure.
    """
    found = []
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, leaf), sharding in zip(leaves, jax.tree.leaves(shardings)):
        nbytes = math.prod(leaf.shape) * leaf.dtype.itemsize
        if nbytes > min_bytes and is_fully_replicated(sharding, mesh):
            found.append(ReplicatedParameter(param_groups.path_name(path), tuple(leaf.shape), nbytes))
    return sorted(found, key=lambda p: -p.nbytes)


def check_parameters_sharded(params: Any, shardings: Any, mesh: Mesh, *, max_replicated_mb: float) -> None:
    """Raises ReplicatedParameterError listing every parameter above `max_replicated_mb` MiB that is fully
    replicated while the mesh has `fsdp` or `tensor` > 1. A non-positive limit disables the check."""
    if max_replicated_mb <= 0 or all(mesh.shape.get(a, 1) == 1 for a in PARAMETER_AXES):
        return
    bad = replicated_parameters(params, shardings, mesh, min_bytes=int(max_replicated_mb * 2**20))
    if not bad:
        return
    listing = "\n".join(f"  {p.name}: shape {p.shape}, {p.nbytes / 2**20:.2f} MiB" for p in bad)
    parallel = ", ".join(f"{a}={mesh.shape[a]}" for a in PARAMETER_AXES if a in mesh.shape)
    raise ReplicatedParameterError(
        f"{len(bad)} parameter(s) above train.max_replicated_param_mb={max_replicated_mb} would be fully "
        f"replicated on every device although the mesh shards parameters ({parallel}):\n{listing}\n"
        "Give them logical axes (nnx.with_partitioning(init, axes) / layers.param), map those axes to 'fsdp' or "
        "'tensor' in mesh.logical_axis_rules, or raise train.max_replicated_param_mb (0 disables this check).")
