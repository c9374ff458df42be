"""Repeated blocks: built as a Python list or as one stacked module scanned over its leading axis, optionally
rematerialised; and the conversion between the two parameter layouts.

    blocks = create_blocks(lambda rngs: Block(..., rngs), num_layers, rngs, scan=True)   # params (N, ...)
    x = apply_blocks(blocks, x, c, mask, remat="dots")    # x is carried from block to block, c and mask shared

Why scan: a Python loop puts N copies of the block into the jaxpr and the XLA graph, so tracing and compiling
grow with depth (minutes for `large` on a pod topology); `nnx.scan` compiles the block once (a while loop).
Why remat: the backward pass needs each block's activations; saving all of them for 24 blocks dominates device
memory. `jax.checkpoint` recomputes them in the backward pass instead: "full" saves only the block inputs (the
carry), "dots" also keeps the outputs of matmuls without batch dimensions (the projections), recomputing the
cheap elementwise work and the attention logits (whose einsums have batch dimensions).

Layouts: unscanned, `blocks/<i>/<path>` holds a block's array; scanned, `blocks/<path>` holds all N stacked on
axis 0, whose logical axis name is "layers" (inserted in front of each parameter's `out_sharding`, so the rules
table maps it; it maps to no mesh axis). `convert_layer_layout(state, like)` turns either layout into the other,
so an unscanned checkpoint loads into a scanned model and back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

LAYERS_AXIS = "layers"  # logical name of the stacked axis (train/mesh.py maps it to no mesh axis)

REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

Path = tuple[Any, ...]


def check_remat(remat: str) -> str:
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat={remat!r}: use one of {sorted(REMAT_POLICIES)}")
    return remat


def create_blocks(make: Callable[[nnx.Rngs], nnx.Module], num_layers: int, rngs: nnx.Rngs, *,
                  scan: bool) -> nnx.Module:
    """`num_layers` blocks from `make(rngs)`: an nnx.List, or (scan) one module whose arrays have a leading
    (num_layers,) axis, created by nnx.vmap over split rngs (each block still gets its own random draw)."""
    if not scan:
        return nnx.List([make(rngs) for _ in range(num_layers)])

    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: LAYERS_AXIS})
    def stacked(rngs: nnx.Rngs) -> nnx.Module:
        return make(rngs)

    return stacked(rngs)


def is_stacked(blocks: nnx.Module) -> bool:
    return not isinstance(blocks, nnx.List)


def apply_blocks(blocks: nnx.Module, x: jax.Array, *shared: jax.Array, remat: str = "none") -> jax.Array:
    """x = block(x, *shared) for every block in order; `shared` arrays are the same for every block."""
    policy = REMAT_POLICIES[check_remat(remat)]
    stacked = is_stacked(blocks)

    def step(block: nnx.Module, x: jax.Array, *shared: jax.Array) -> jax.Array:
        return block(x, *shared)

    if remat != "none":
        # Inside a scan the loop already stops XLA from merging the recomputation with the forward pass,
        # so CSE prevention (extra barriers) is only needed in the unrolled loop.
        step = nnx.remat(step, policy=policy, prevent_cse=not stacked)
    if not stacked:
        for block in blocks:
            x = step(block, x, *shared)
        return x

    @nnx.scan(in_axes=(nnx.Carry, 0) + (None,) * len(shared), out_axes=nnx.Carry,
              transform_metadata={nnx.PARTITION_NAME: LAYERS_AXIS})
    def body(x: jax.Array, block: nnx.Module, *shared: jax.Array) -> jax.Array:
        return step(block, x, *shared)

    return body(x, blocks, *shared)


# ----- Layout conversion (unstacked <-> stacked) -----


def _flat(state: Any) -> list[tuple[Path, Any]]:
    return list(nnx.to_flat_state(state if isinstance(state, nnx.State) else nnx.State(state)))


def _with_leading_axis(leaf: Any, value: jax.Array, add: bool) -> Any:
    """A leaf like `leaf` holding `value`; for a Variable, its logical axes gain (add) or lose the layers axis."""
    if not isinstance(leaf, nnx.Variable):
        return value
    metadata = dict(leaf.get_metadata())
    axes = metadata.get("out_sharding")
    if axes:
        if add:
            metadata["out_sharding"] = (LAYERS_AXIS,) + tuple(axes)
        else:
            if axes[0] != LAYERS_AXIS:
                raise ValueError(f"expected a leading {LAYERS_AXIS!r} axis to remove, got logical axes {axes}")
            metadata["out_sharding"] = tuple(axes[1:])
    return type(leaf)(value, **metadata)


def _value(leaf: Any) -> Any:
    return leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf


def stack_layers(state: Any, prefix: Path) -> nnx.State:
    """`prefix/<i>/<rest>` (i = 0..N-1) -> `prefix/<rest>` of shape (N, ...). `state`: an nnx.State (Variables or
    arrays as leaves) or a nested dict."""
    n = len(prefix)
    groups: dict[Path, dict[int, Any]] = {}
    out = []
    for path, leaf in _flat(state):
        if path[:n] == tuple(prefix) and len(path) > n and isinstance(path[n], int):
            groups.setdefault(path[n + 1:], {})[path[n]] = leaf
        else:
            out.append((path, leaf))
    if not groups:
        raise KeyError(f"no layers under {'/'.join(map(str, prefix))}")
    for rest, layers in groups.items():
        if sorted(layers) != list(range(len(layers))):
            raise ValueError(f"{'/'.join(map(str, prefix + rest))}: layers {sorted(layers)} are not 0..N-1")
        first = layers[0]
        stacked = jnp.stack([_value(layers[i]) for i in range(len(layers))])
        out.append((tuple(prefix) + rest, _with_leading_axis(first, stacked, add=True)))
    return nnx.from_flat_state(out)


def unstack_layers(state: Any, prefix: Path) -> nnx.State:
    """The inverse of `stack_layers`: `prefix/<rest>` of shape (N, ...) -> `prefix/<i>/<rest>`."""
    n = len(prefix)
    out = []
    for path, leaf in _flat(state):
        if path[:n] != tuple(prefix) or len(path) == n:
            out.append((path, leaf))
            continue
        value = _value(leaf)
        for i in range(value.shape[0]):
            out.append((tuple(prefix) + (i,) + path[n:], _with_leading_axis(leaf, value[i], add=False)))
    return nnx.from_flat_state(out)


def _list_prefixes(source: Iterable[Path], target: set[Path]) -> set[Path]:
    """Prefixes p with a source path p/<int>/rest whose layer-free form p/rest is a target path."""
    found = set()
    for path in source:
        for k, part in enumerate(path):
            if isinstance(part, int) and path[:k] + path[k + 1:] in target:
                found.add(path[:k])
                break
    return found


def convert_layer_layout(state: Any, like: Any) -> nnx.State:
    """`state` in the layer layout of `like` (e.g. `nnx.state(scanned_model, nnx.Param)`, abstract or not):
    every list of layers that `like` holds stacked is stacked, every stack that `like` holds as a list is
    unstacked. Anything else is passed through (a path neither layout knows is the caller's to check)."""
    source = {path for path, _ in _flat(state)}
    target = {path for path, _ in _flat(like)}
    for prefix in sorted(_list_prefixes(source, target), key=len, reverse=True):
        state = stack_layers(state, prefix)
    for prefix in sorted(_list_prefixes(target, source), key=len, reverse=True):
        state = unstack_layers(state, prefix)
    return state if isinstance(state, nnx.State) else nnx.State(state)
