"""Declarative name maps from foreign state-dict keys to this project's parameter paths, fully validated.

A model's map is a table of `Rule`s:

    RULES = (
        Rule(r"encoder\.layers\.(\d+)\.linear1\.weight", r"encoder/layers/\1/ffn/up/kernel", hooks.linear),
        Rule(r"var_sched\..*", None, hooks.expect(lambda key: schedule[key])),   # a buffer: checked, not stored
        ...
    )

`source` is a regex matched against the whole key; `target` is a template for `re.Match.expand` (\1 = first
group) naming the path in the `nnx.state` tree, "/"-joined; a tuple of templates when the hook splits one
tensor into several. `target=None` consumes a source tensor that has no parameter (buffers our code recomputes);
its hook may check the value. The first matching rule wins.

`convert` fills every variable of an abstract state (from `nnx.eval_shape`), or raises one `ConversionError`
listing every source key no rule used, every variable left empty, and every shape mismatch.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from flax import nnx

from mirrortalk_jax.convert.foreign import ConversionError

Hook = Callable[[np.ndarray], "np.ndarray | tuple[np.ndarray, ...] | None"]
_SHOWN = 25  # keys listed per category in an error; the counts are always complete


@dataclasses.dataclass(frozen=True)
class Rule:
    source: str
    target: str | tuple[str, ...] | None
    hook: Hook | None = None

    def __post_init__(self):
        object.__setattr__(self, "_regex", re.compile(self.source))


def path_str(path: Sequence) -> str:
    """('layers', 0, 'kernel') -> 'layers/0/kernel', the form rule targets use."""
    return "/".join(map(str, path))


def _apply(rules: Sequence[Rule], key: str, value: np.ndarray, run_hooks: bool):
    for rule in rules:
        match = rule._regex.fullmatch(key)  # noqa: SLF001 - compiled once per rule
        if match is None:
            continue
        if rule.target is None:
            if rule.hook is not None and run_hooks:
                rule.hook(value)
            return rule, {}
        targets = (rule.target,) if isinstance(rule.target, str) else rule.target
        out = rule.hook(value) if rule.hook is not None else value
        outs = (out,) if isinstance(rule.target, str) else tuple(out)
        if len(outs) != len(targets):
            raise ConversionError(f"rule {rule.source!r}: hook gave {len(outs)} tensors for {len(targets)} targets")
        return rule, {match.expand(t): np.asarray(o) for t, o in zip(targets, outs)}
    return None, {}


def _listing(title: str, items: list[str]) -> str:
    more = f" ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return f"\n  {title} ({len(items)}): " + ", ".join(items[:_SHOWN]) + more


def convert(tensors: Mapping[str, np.ndarray], rules: Sequence[Rule], abstract: nnx.State, *,
            source: str = "checkpoint", check_buffers: bool = True) -> nnx.State:
    """`abstract` (from `nnx.eval_shape`) with every variable filled from `tensors` through `rules`.

    Values are cast to the target dtype. `check_buffers=False` skips the value checks of consumed buffers
    (used when converting shape manifests, whose tensors are placeholders).
    """
    flat = {path_str(path): (path, var) for path, var in nnx.to_flat_state(abstract)}
    filled: dict[str, np.ndarray] = {}
    unused, unknown_targets, mismatched, twice = [], [], [], []
    for key in sorted(tensors):
        rule, produced = _apply(rules, key, tensors[key], check_buffers)
        if rule is None:
            unused.append(key)
        for target, value in produced.items():
            if target not in flat:
                unknown_targets.append(f"{key} -> {target}")
            elif target in filled:
                twice.append(f"{key} -> {target}")
            elif tuple(value.shape) != tuple(flat[target][1].shape):
                mismatched.append(f"{key} -> {target}: {tuple(value.shape)} vs expected {tuple(flat[target][1].shape)}")
            else:
                filled[target] = value
    missing = sorted(set(flat) - set(filled) - {m.split(" -> ")[1].split(":")[0] for m in mismatched})
    if unused or unknown_targets or mismatched or twice or missing:
        raise ConversionError(
            f"{source} does not match the model:" + "".join(
                _listing(title, items) for title, items in (
                    ("source keys no rule uses", unused), ("rules pointing at no parameter", unknown_targets),
                    ("shape mismatches", mismatched), ("parameters filled twice", twice),
                    ("parameters left empty", missing)) if items))
    leaves = []
    for target, (path, var) in flat.items():
        leaves.append((path, var.replace(np.asarray(filled[target], dtype=var.dtype))))
    return nnx.from_flat_state(leaves)


def placeholders(manifest: Iterable[Mapping]) -> dict[str, np.ndarray]:
    """Zero-cost stand-ins for a key/shape/dtype manifest (entries {"key", "shape", "dtype"}), for `convert`."""
    return {entry["key"]: np.broadcast_to(np.zeros((), np.dtype(entry["dtype"])), tuple(entry["shape"]))
            for entry in manifest}


def check_manifest(manifest: Iterable[Mapping], rules: Sequence[Rule], abstract: nnx.State,
                   *, source: str = "manifest") -> None:
    """Raises ConversionError unless the manifest's keys and shapes fill `abstract` exactly through `rules`."""
    convert(placeholders(manifest), rules, abstract, source=source, check_buffers=False)
