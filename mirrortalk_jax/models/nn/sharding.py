"""Activation sharding constraints from logical axis names, active only when a mesh and logical rules are.

    step = with_activation_sharding(step, mesh, rules)   # traced under the mesh and rules
    jax.jit(step, in_shardings=...)               # every constrain(x, ("batch", "length", "embed")) applies

Why: parameters carry logical axes and the trainer shards them; activations are left to XLA's propagation,
which across a scanned stack of blocks (a while loop) or after reshapes may pick a layout that gathers the
batch. Pinning the block boundaries to the rules' `batch` placement keeps every block's activations split the
same way the batch is. Outside a mesh (CPU tests, single-device inference) or without rules, `constrain`
returns its input untouched, so models need no flag to run anywhere.

Rules are Flax's (`nnx.logical_axis_rules`), resolved as `flax.linen.logical_to_mesh_axes` does: each mesh axis
is used at most once per array, in the rules' order, so with the default table (`batch` -> data, fsdp and
`embed` -> fsdp) an activation (batch, length, embed) is split over data x fsdp on its batch and whole on its
width. A dimension that its mesh axes do not divide (a batch of 1 when sampling) is left to the compiler.

The contexts are entered inside the traced function (`with_activation_sharding`), not around a jitted call:
`jax.jit` keys its trace cache on the current mesh but not on Flax's rules, so a function traced under one table
would otherwise keep its constraints when called later under another.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import jax
from flax import nnx
from flax.core import spmd as core_spmd
from flax.linen import spmd as linen_spmd
from jax.sharding import Mesh, PartitionSpec

T = TypeVar("T")


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Sequence[tuple[str, object]]) -> Iterator[None]:
    """Makes `constrain` active: `mesh` as JAX's current abstract mesh and `rules` as Flax's logical rules.
    Works inside a traced function (what `with_activation_sharding` does) or around one."""
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nnx.logical_axis_rules(tuple(rules)):
        yield


def with_activation_sharding(fn: Callable[..., T], mesh: Mesh, rules: Sequence[tuple[str, object]]
                             ) -> Callable[..., T]:
    """`fn` running under `activation_sharding(mesh, rules)`: jit it, and every trace (a first call, `.lower`)
    carries the constraints, whatever context the caller is in. The trace cache cannot mix them up either."""

    @functools.wraps(fn)
    def under_rules(*args, **kwargs):
        with activation_sharding(mesh, rules):
            return fn(*args, **kwargs)

    return under_rules


def _mesh_axes_size(entry: object, mesh_shape: dict[str, int]) -> int:
    names = entry if isinstance(entry, tuple) else (entry,)
    return math.prod(mesh_shape[n] for n in names)


def logical_spec(shape: tuple[int, ...], logical_axes: Sequence[str | None], rules: Sequence[tuple[str, object]],
                 mesh_shape: dict[str, int]) -> PartitionSpec:
    """The PartitionSpec of an activation of `shape` with `logical_axes` under `rules` on a mesh of `mesh_shape`;
    a dimension its mesh axes do not divide is UNCONSTRAINED."""
    spec = linen_spmd.logical_to_mesh_axes(tuple(logical_axes), tuple(rules))
    entries = []
    for size, entry in zip(shape, spec):
        if entry is not None and (any(n not in mesh_shape for n in (entry if isinstance(entry, tuple) else (entry,)))
                                  or size % _mesh_axes_size(entry, mesh_shape)):
            entry = PartitionSpec.UNCONSTRAINED
        entries.append(entry)
    return PartitionSpec(*entries)


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """`jax.lax.with_sharding_constraint(x, <logical_axes under the active rules>)` when a mesh (`jax.set_mesh`)
    and logical rules (`nnx.logical_axis_rules`) are active; otherwise `x` itself."""
    if len(logical_axes) != x.ndim:
        raise ValueError(f"logical axes {tuple(logical_axes)} do not match an array of shape {x.shape}")
    rules = core_spmd.get_logical_axis_rules()
    mesh = jax.sharding.get_abstract_mesh()
    if not rules or mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_spec(x.shape, logical_axes, rules, dict(mesh.shape)))
