"""Per-tensor hooks for name-map rules: PyTorch layouts -> Flax layouts, and checks of consumed buffers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mirrortalk_jax.convert.foreign import ConversionError


def linear(weight: np.ndarray) -> np.ndarray:
    """nn.Linear weight (out, in) -> Dense kernel (in, out)."""
    return np.transpose(weight)


def conv(weight: np.ndarray) -> np.ndarray:
    """nn.ConvNd weight (out, in/groups, *spatial) -> nnx.Conv kernel (*spatial, in/groups, out)."""
    return np.transpose(weight, (*range(2, weight.ndim), 1, 0))


def conv_transpose(weight: np.ndarray) -> np.ndarray:
    """nn.ConvTransposeNd weight (in, out, *spatial) -> nnx.ConvTranspose kernel (*spatial, in, out), flipped.

    PyTorch's transposed convolution is the gradient of a convolution; Flax's (transpose_kernel=False) is a
    dilated convolution, so the spatial taps are reversed.
    """
    spatial = tuple(range(2, weight.ndim))
    return np.transpose(np.flip(weight, spatial), (*spatial, 0, 1))


def split(parts: int, axis: int = 0, then: Callable[[np.ndarray], np.ndarray] | None = None):
    """Splits a fused tensor (e.g. in_proj [q; k; v]) into `parts` equal pieces, each passed through `then`."""
    def hook(value: np.ndarray) -> tuple[np.ndarray, ...]:
        if value.shape[axis] % parts:
            raise ConversionError(f"cannot split shape {value.shape} into {parts} along axis {axis}")
        pieces = np.split(value, parts, axis=axis)
        return tuple(then(p) if then else p for p in pieces)
    return hook


def reshape(*shape: int, then: Callable[[np.ndarray], np.ndarray] | None = None):
    def hook(value: np.ndarray) -> np.ndarray:
        value = then(value) if then else value
        return np.reshape(value, shape)
    return hook


def expect(expected: Callable[[], np.ndarray], name: str, *, rtol: float = 1e-6, atol: float = 1e-7,
           keep: bool = False):
    """Checks that a buffer holds what the config implies; consumes it, or with `keep` stores the checkpoint's
    own values (for buffers whose last bits matter, e.g. RoPE frequencies multiplied by large positions).

    A mismatch means the checkpoint was made with other settings (schedule, table length) than the config.
    """
    def hook(value: np.ndarray) -> None:
        want = np.asarray(expected())
        if value.shape != want.shape or not np.allclose(value.astype(np.float64), want.astype(np.float64),
                                                        rtol=rtol, atol=atol):
            diff = (np.abs(value.astype(np.float64) - want).max() if value.shape == want.shape
                    else f"shape {value.shape} vs {want.shape}")
            raise ConversionError(f"buffer {name} differs from what the config implies ({diff}); "
                                  "was the checkpoint made with other settings?")
        return value if keep else None
    return hook
