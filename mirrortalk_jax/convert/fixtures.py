"""Checking a conversion against reference dumps of the original implementation (`tools/check_fixture.py`).

A fixture folder holds `config.json` (the original's hyperparameters), `weights.safetensors` (its state dict),
`io.npz` (inputs and the original's outputs) and a SPEC.md. Each supported model registers a `FixtureKind`
that recognises its config.json, builds our model at the sizes the config names (any size or seed, not only
the shipped ones), converts the weights and yields (output name, ours, reference) for every case in io.npz.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from mirrortalk_jax.convert.sources import ConversionError

Comparison = tuple[str, np.ndarray, np.ndarray]  # (output name, ours, reference)


@dataclasses.dataclass(frozen=True)
class FixtureKind:
    name: str
    matches: Callable[[dict], bool]  # config.json -> is this fixture mine?
    compare: Callable[[Path, dict, dict[str, np.ndarray]], Iterator[Comparison]]  # (folder, config, io) -> cases
    rtol: float = 1e-5  # pass when max |ours - ref| <= atol + rtol * max |ref| for an output
    atol: float = 1e-6
    tolerances: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)  # output prefix -> (rtol, atol)


_KINDS: dict[str, FixtureKind] = {}
# Modules that register fixture kinds; imported on first use so the check stays cheap to start.
_MODULES = (
    "mirrortalk_jax.convert.dreamtalk",
    "mirrortalk_jax.convert.pirenderer",
    "mirrortalk_jax.convert.syncnet",
    "mirrortalk_jax.convert.mimictalk",
    "mirrortalk_jax.convert.hf_audio",
)


def register_fixture_kind(kind: FixtureKind) -> FixtureKind:
    if kind.name in _KINDS:
        raise ValueError(f"fixture kind {kind.name!r} registered twice")
    _KINDS[kind.name] = kind
    return kind


def _load_kinds() -> None:
    for module in _MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:  # a real import error inside an existing module
                raise


def detect(config: dict, folder: Path) -> FixtureKind:
    _load_kinds()
    found = [k for k in _KINDS.values() if k.matches(config)]
    if len(found) != 1:
        raise ConversionError(f"{folder}/config.json: {'no' if not found else 'several'} supported model "
                              f"recognised ({[k.name for k in found] or sorted(_KINDS)})")
    return found[0]


@dataclasses.dataclass(frozen=True)
class Result:
    output: str
    max_abs: float
    max_rel: float  # max |ours - ref| / max |ref|
    passed: bool


def _tolerance(kind: FixtureKind, output: str) -> tuple[float, float]:
    for prefix, tol in kind.tolerances.items():
        if output.startswith(prefix):
            return tol
    return kind.rtol, kind.atol


def check(folder: str | Path) -> tuple[FixtureKind, list[Result]]:
    """Runs every case of a fixture folder through our port; one Result per compared output."""
    folder = Path(folder)
    for name in ("config.json", "weights.safetensors", "io.npz"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing: a fixture folder holds config.json, "
                                    "weights.safetensors and io.npz")
    config = json.loads((folder / "config.json").read_text())
    kind = detect(config, folder)
    with np.load(folder / "io.npz") as npz:
        io = {k: npz[k] for k in npz.files}
    results = []
    for output, ours, ref in kind.compare(folder, config, io):
        ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
        if ours.shape != ref.shape:
            raise ConversionError(f"{folder}: output {output} has shape {ours.shape}, the reference {ref.shape}")
        max_abs = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        rtol, atol = _tolerance(kind, output)
        results.append(Result(output, max_abs, max_abs / scale if scale else max_abs,
                              bool(np.isfinite(max_abs) and max_abs <= atol + rtol * scale)))
    if not results:
        raise ConversionError(f"{folder}/io.npz: no case of {kind.name} found")
    return kind, results


def table(kind: FixtureKind, results: list[Result]) -> str:
    rows = [f"{kind.name}: {sum(r.passed for r in results)}/{len(results)} outputs within tolerance",
            f"{'output':<40} {'max abs err':>12} {'max rel err':>12}  ok"]
    rows += [f"{r.output:<40} {r.max_abs:12.3e} {r.max_rel:12.3e}  {'yes' if r.passed else 'NO'}" for r in results]
    return "\n".join(rows)
