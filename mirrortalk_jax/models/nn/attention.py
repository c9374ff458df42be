"""The masked-attention kernel of the ports: softmax(q k^T [x scale], invalid keys filled) v. (This project's own
models call jax.nn.dot_product_attention instead, layers.Attention: fused kernels where the platform has them.)

Each model keeps what its original does around the kernel (its projections and weight layout, where it scales:
PyTorch and Hugging Face scale q before the product, MimicTalk scales the logits, and its fill value), so the
ports keep their parity; what they share is computed here once:

    out = attention(q, k, v, valid, fill=FILL_TORCH)                    # q (..., Q, H, d), k/v (..., K, H, d)
    weights = masked_softmax(logits, valid, fill=FILL_TORCH)             # logits computed another way (folded keys)

`valid` is a bool array broadcastable to the logits (..., H, Q, K), True = attend (a key-padding mask in
PyTorch's convention, True = ignore, is passed negated). Fill values: any finite value far below the logits
gives exactly zero weight to a masked key in float32; a row whose keys are all masked gets uniform weights
instead of NaN.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

FILL_TORCH = -1e30  # the PyTorch ports (their -inf, kept finite)
FILL_FLOAT32_MIN = float(np.finfo(np.float32).min)  # masked_fill(-finfo.max) in MimicTalk and Hugging Face


def masked_softmax(logits: jax.Array, valid: jax.Array | None, *, fill: float) -> jax.Array:
    """softmax over the last axis after setting the logits of invalid keys to `fill`."""
    if valid is not None:
        logits = jnp.where(valid, logits, fill)
    return jax.nn.softmax(logits, axis=-1)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array | None = None, *, fill: float,
              logit_scale: float | None = None, heads_first: bool = False, logits_dtype=None,
              weights_fn: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
    """Scaled dot-product attention over the last two axes of q (..., Q, H, d) and k, v (..., K, H, d) ->
    (..., Q, H, d); with `heads_first`, (..., H, Q, d) and (..., H, K, d) -> (..., H, Q, d).

    logit_scale multiplies the logits (None: the caller scaled q); logits_dtype casts them before the softmax
    (e.g. float32 under bfloat16 activations), the weights are cast back to v's dtype; weights_fn transforms the
    weights before they meet v (e.g. attention dropout).
    """
    h = "...hqd,...hkd->...hqk" if heads_first else "...qhd,...khd->...hqk"
    logits = jnp.einsum(h, q, k)
    if logit_scale is not None:
        logits = logits * logit_scale
    if logits_dtype is not None:
        logits = logits.astype(logits_dtype)
    weights = masked_softmax(logits, valid, fill=fill).astype(v.dtype)
    if weights_fn is not None:
        weights = weights_fn(weights)
    return jnp.einsum("...hqk,...hkd->...hqd" if heads_first else "...hqk,...khd->...qhd", weights, v)
