"""Functions of a model compiled once per model structure: the one "jit with the weights as arguments" helper.

    sample_chunk = compiled.bind(sample_fn, model, num_steps=10)   # compiled on the first call
    out = sample_chunk(audio, style, rng)                           # = sample_fn(model, audio, style, rng, ...)

`jax.jit` of a closure over a model would bake its weights into the program as constants (slow to compile,
recompiled for every new set of weights); `nnx.jit` retraces its graph traversal on every call. `bind` splits the
model, passes its weights as an argument, and keys the compiled function on (fn, graph structure, settings), so
two models of one architecture (a reloaded checkpoint, a personalised copy) share one compilation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any

import jax
from flax import nnx


@functools.lru_cache(maxsize=64)
def _jitted(fn: Callable[..., Any], graphdef: nnx.GraphDef, settings: tuple[tuple[str, Hashable], ...]):
    kwargs = dict(settings)

    @jax.jit
    def run(state, *args):
        return fn(nnx.merge(graphdef, state), *args, **kwargs)
    return run


def jitted(fn: Callable[..., Any], graphdef: nnx.GraphDef, **settings: Hashable) -> Callable[..., Any]:
    """The compiled `(state, *args) -> fn(merge(graphdef, state), *args, **settings)`, one per key.

    args are pytrees of arrays (traced); settings are hashable Python values (static).
    """
    return _jitted(fn, graphdef, tuple(sorted(settings.items())))


def bind(fn: Callable[..., Any], model: nnx.Module, **settings: Hashable) -> Callable[..., Any]:
    """`(*args) -> fn(model, *args, **settings)`, compiled once per (fn, model structure, settings)."""
    graphdef, state = nnx.split(model)
    return functools.partial(jitted(fn, graphdef, **settings), state)
