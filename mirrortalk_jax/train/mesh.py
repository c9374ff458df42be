"""Device mesh from config, and the logical-axis rules that map parameter axes onto it.

Mesh axes are always (`data`, `fsdp`, `tensor`). `ici_*` sizes split the devices of one slice (fast
interconnect); `dcn_*` sizes split across slices (data-centre network) for multislice runs. One size per
group may be -1, meaning "all devices left". Axes of size 1 cost nothing, so one rules table serves pure
data parallelism, FSDP and tensor parallelism alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")

# Logical parameter/activation axis -> mesh axes. Parameters are annotated with the logical names on the left.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("length", None),
    ("motion", None),
    ("audio", None),
    ("layers", None),
    ("conv", None),
)


def _fill(sizes: Sequence[int], total: int, what: str) -> list[int]:
    sizes = list(sizes)
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one {what} parallelism may be -1, got {sizes}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if total % known:
            raise ValueError(f"{what} parallelism {sizes} does not divide {total} devices")
        sizes[sizes.index(-1)] = total // known
    if int(np.prod(sizes)) != total:
        raise ValueError(f"{what} parallelism {dict(zip(MESH_AXES, sizes))} uses {int(np.prod(sizes))} devices, "
                         f"but there are {total}")
    return sizes


def create_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds the (data, fsdp, tensor) mesh from `mesh_config.ici_*` / `mesh_config.dcn_*` sizes."""
    devices = list(devices if devices is not None else jax.devices())
    dcn = [int(mesh_config.get(f"dcn_{a}", 1)) for a in MESH_AXES]
    num_slices = int(np.prod([d for d in dcn if d != -1])) if -1 not in dcn else None
    slices = {getattr(d, "slice_index", 0) for d in devices}
    if num_slices is None:
        num_slices = len(slices)
    dcn = _fill(dcn, num_slices, "dcn")
    ici = _fill([int(mesh_config.get(f"ici_{a}", 1)) for a in MESH_AXES], len(devices) // num_slices, "ici")
    if num_slices > 1:
        grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
    else:
        grid = mesh_utils.create_device_mesh(ici, devices)
    # Auto axes: the compiler propagates shardings from the annotated parameters and inputs.
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_rules(config_rules: Sequence[Sequence] | None = None) -> tuple[tuple[str, object], ...]:
    """Rules from config (a list of [logical, mesh axes]) or the defaults, as Flax expects them."""
    if not config_rules:
        return DEFAULT_RULES
    return tuple((str(name), tuple(axes) if isinstance(axes, list) else axes) for name, axes in config_rules)


def batch_axes(rules: Sequence[Sequence]) -> tuple[str, ...]:
    """The mesh axes the logical `batch` axis maps to (the rules' "batch" entry): where every global batch (inputs,
    activations) is split. A rules table without one is refused."""
    for name, axes in rules:
        if name == "batch":
            found = (axes,) if isinstance(axes, str) else tuple(axes or ())
            unknown = [a for a in found if a not in MESH_AXES]
            if unknown:
                raise ValueError(f"logical rule batch -> {found}: {unknown} are not mesh axes {MESH_AXES}")
            return found
    raise ValueError("mesh.logical_axis_rules has no 'batch' entry: name the mesh axes the batch is split over, "
                     "e.g. ('batch', ('data', 'fsdp'))")
