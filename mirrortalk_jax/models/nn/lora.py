"""Low-rank adaptation (LoRA) of any layer whose output is linear in one kernel: dense, 1-D and 2-D convolutions,
and the phase-decomposed upsampling / transposed convolutions of image_layers.py.

    adapters = KernelLoRA((3, 3, 64, 128), rank=2, rngs=rngs)      # one per adapted kernel
    kernel + adapters.delta()                                        # what the adapted layer computes with

The update of a kernel (..., in, out) is `scale * A @ B` reshaped to its shape, A (prod(...) * in, r) and
B (r, out): LoRA's low-rank update of the layer read as a matrix from its flattened receptive field to its output
channels (loralib's Conv2d LoRA factorises the same matrix). B starts at zero, so an adapted model starts as its
base. Applying the update to the kernel, not as a side branch on the activations (flax's `nnx.LoRA`, which wraps
dense layers only), is one code path for every layer type, costs one small matmul per kernel instead of a second
convolution, and makes merging exact: the merged kernel is the very array the unmerged forward pass computes.
The factors are `nnx.LoRAParam`s, flax's type for them, so filters written for flax's LoRA select them too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import jax
from flax import nnx

from mirrortalk_jax.models.nn.layers import fan_in_normal

Path = tuple[str | int, ...]


class KernelLoRA(nnx.Module):
    """The rank-`rank` update of one kernel of `kernel_shape` (..., in, out); `alpha / rank` scales it (LoRA's
    alpha: with alpha = rank the update is A @ B itself). `out_axis`: the logical axis of the kernel's output
    channels, which B shares (A is small and replicated)."""

    def __init__(self, kernel_shape: Sequence[int], rank: int, rngs: nnx.Rngs, *, alpha: float | None = None,
                 out_axis: str | None = None):
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        if len(kernel_shape) < 2:
            raise ValueError(f"LoRA adapts kernels of rank >= 2 (..., in, out), got shape {tuple(kernel_shape)}")
        self.kernel_shape = tuple(int(s) for s in kernel_shape)
        fan_in, out = math.prod(self.kernel_shape[:-1]), self.kernel_shape[-1]
        self.scale = float(rank if alpha is None else alpha) / rank
        self.lora_a = nnx.LoRAParam(nnx.with_partitioning(fan_in_normal((0,)), (None, None))(
            rngs.params(), (fan_in, rank)))
        self.lora_b = nnx.LoRAParam(nnx.with_partitioning(nnx.initializers.zeros, (None, out_axis))(
            rngs.params(), (rank, out)))

    def delta(self) -> jax.Array:
        """The kernel update, shaped like the kernel."""
        return (self.scale * (self.lora_a[...] @ self.lora_b[...])).reshape(self.kernel_shape)


def kernel_paths(module: nnx.Module, patterns: Sequence[str], *, exclude: Iterable[str] = ()) -> list[Path]:
    """Paths of the `kernel` variables (rank >= 2) of `module` whose "/"-joined path (e.g.
    "source_encoder/down/0/kernel") fully matches one of `patterns`; paths starting with an `exclude` prefix are
    skipped."""
    compiled = [re.compile(p) for p in patterns]
    skipped = tuple(exclude)
    found = []
    for path, var in nnx.to_flat_state(nnx.state(module)):
        name = "/".join(map(str, path))
        if (path[-1] == "kernel" and len(var.shape) >= 2 and not name.startswith(skipped)
                and any(p.fullmatch(name) for p in compiled)):
            found.append(tuple(path))
    return found


def out_axis(module: nnx.Module, path: Path) -> str | None:
    """The logical axis of the output channels of the kernel at `path` (None when unannotated)."""
    var = dict(nnx.to_flat_state(nnx.state(module)))[path]
    names = var.get_metadata().get("out_sharding") or ()
    return names[-1] if names else None


def with_updates(module: nnx.Module, paths: Sequence[Path], adapters: Sequence[KernelLoRA]) -> nnx.Module:
    """A module equal to `module` but with kernel + delta at each path (a new object; `module` is untouched).
    Under a trace this is the adapted forward pass; on concrete arrays it is the merged model."""
    graphdef, state = nnx.split(module)
    flat = dict(nnx.to_flat_state(state))
    for path, adapter in zip(paths, adapters, strict=True):
        var = flat[path]
        flat[path] = var.replace(var.get_value() + adapter.delta().astype(var.dtype))
    return nnx.merge(graphdef, nnx.from_flat_state(list(flat.items())))

