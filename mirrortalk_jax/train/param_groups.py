"""Per-parameter-group learning rates, by regex over parameter paths (first match wins).

    config.train.param_groups = (("style_encoder/.*", 0.1), ("motion_expert/.*", 0.0))

A multiplier of 0 freezes the group: its updates are set to zero (no weight decay either), which is how a
pretrained sub-model (a frozen motion expert, a frozen style encoder) rides along inside a bigger model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import optax


def path_name(path: Sequence[Any]) -> str:
    """'a/b/0/kernel' for a pytree key path (NNX's `.value` attribute keys are dropped)."""
    parts = []
    for key in path:
        name = getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))
        if name != "value":
            parts.append(str(name))
    return "/".join(parts)


def group_labels(params: Any, groups: Sequence[tuple[str, float]]) -> Any:
    """Label tree: 'g<i>' for the first matching group, 'default' when none matches."""
    compiled = [(re.compile(pattern), f"g{i}") for i, (pattern, _) in enumerate(groups)]

    def label(path, _):
        name = path_name(path)
        return next((tag for pattern, tag in compiled if pattern.fullmatch(name)), "default")
    return jax.tree_util.tree_map_with_path(label, params)


def with_param_groups(make_tx, groups: Sequence[tuple[str, float]]) -> optax.GradientTransformation:
    """`make_tx(multiplier) -> GradientTransformation` per group, combined with optax.multi_transform."""
    groups = [(str(p), float(m)) for p, m in groups]
    if not groups:
        return make_tx(1.0)
    transforms = {"default": make_tx(1.0)}
    for i, (_, multiplier) in enumerate(groups):
        transforms[f"g{i}"] = optax.set_to_zero() if multiplier == 0 else make_tx(multiplier)
    return optax.multi_transform(transforms, lambda params: group_labels(params, groups))


def matched_groups(params: Any, groups: Sequence[tuple[str, float]]) -> dict[str, int]:
    """How many parameter arrays each group pattern matched (a pattern matching nothing is a config bug)."""
    labels = jax.tree.leaves(group_labels(params, groups))
    return {pattern: labels.count(f"g{i}") for i, (pattern, _) in enumerate(groups)}
