"""Checking a conversion against reference dumps of the original implementation (`tools/check_fixture.py`).

A fixture folder holds `config.json` (the original's hyperparameters), `weights.safetensors` (its state dict),
`io.npz` (inputs and the original's outputs) and a SPEC.md. Each supported model registers a `FixtureKind`
that recognises its config.json, builds our model at the sizes the config names (any size or seed, not only
the shipped ones), converts the weights and yields (output name, ours, reference) for every case in io.npz.

An output may also come with `<output>__float64`: the original run in float64 on the same float32 weights and
inputs (and its own float32 constants, e.g. RoPE angles). Then the exact answer is known, and so is how far the
original's own float32 arithmetic lands from it; an ill-conditioned network (attention logits x10 over
QK-normalised heads) or a chaotic ODE trajectory is judged against that, not only against a fixed tolerance.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from mirrortalk_jax.convert.sources import ConversionError

Comparison = tuple[str, np.ndarray, np.ndarray]  # (output name, ours, reference)
FLOAT64_SUFFIX = "__float64"  # io.npz key of an output's float64 evaluation by the original
# With a float64 reference, ours may be this many times further from it than the original's float32 output
# (rounding differs in order, not in size; the factor leaves room for unlucky amplification).
ORIGINAL_ERROR_FACTOR = 4.0


@dataclasses.dataclass(frozen=True)
class FixtureKind:
    name: str
    matches: Callable[[dict], bool]  # config.json -> is this fixture mine?
    compare: Callable[[Path, dict, dict[str, np.ndarray]], Iterator[Comparison]]  # (folder, config, io) -> cases
    rtol: float = 1e-5  # pass when max |ours - ref| <= atol + rtol * max |ref| for an output
    atol: float = 1e-6
    # output prefix -> (rtol, atol); the first matching prefix wins. A prefix may hold shell wildcards
    # (`e*_offset`: every run's offset), for outputs whose names carry a case's parameters.
    tolerances: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)


_KINDS: dict[str, FixtureKind] = {}
# Modules that register fixture kinds; imported on first use so the check stays cheap to start.
_MODULES = (
    "mirrortalk_jax.convert.dreamtalk",
    "mirrortalk_jax.convert.pirenderer",
    "mirrortalk_jax.convert.syncnet",
    "mirrortalk_jax.convert.mimictalk",
    "mirrortalk_jax.convert.hf_audio",
    "mirrortalk_jax.evaluate.inception",
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
    exact_rel: float | None = None  # with a float64 reference: max |ours - exact| / max |exact|
    original_rel: float | None = None  # ... and the original's own float32 error, max |ref - exact| / max |exact|


def _tolerance(kind: FixtureKind, output: str) -> tuple[float, float]:
    for prefix, tol in kind.tolerances.items():
        if fnmatch.fnmatchcase(output, prefix + "*"):
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
        results.append(_result(kind, output, ours, ref, io.get(output + FLOAT64_SUFFIX)))
    if not results:
        raise ConversionError(f"{folder}/io.npz: no case of {kind.name} found")
    return kind, results


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def _result(kind: FixtureKind, output: str, ours: np.ndarray, ref: np.ndarray, exact: np.ndarray | None) -> Result:
    """Fixed tolerance against the reference; with a float64 evaluation, also passes when ours is at most
    ORIGINAL_ERROR_FACTOR times as far from the exact answer as the original's own float32 output is."""
    max_abs, scale = _max_abs(ours, ref), (float(np.max(np.abs(ref))) if ref.size else 0.0)
    rtol, atol = _tolerance(kind, output)
    rel = lambda err, s: err / s if s else err
    passed = bool(np.isfinite(max_abs) and max_abs <= atol + rtol * scale)
    if exact is None:
        return Result(output, max_abs, rel(max_abs, scale), passed)
    exact = np.asarray(exact, np.float64)
    if exact.shape != ref.shape:
        raise ConversionError(f"{output}{FLOAT64_SUFFIX} has shape {exact.shape}, {output} {ref.shape}")
    exact_scale = float(np.max(np.abs(exact))) if exact.size else 0.0
    ours_err, original_err = _max_abs(ours, exact), _max_abs(ref, exact)
    passed = passed or bool(np.isfinite(ours_err) and ours_err <= ORIGINAL_ERROR_FACTOR * original_err)
    return Result(output, max_abs, rel(max_abs, scale), passed, rel(ours_err, exact_scale),
                  rel(original_err, exact_scale))


def table(kind: FixtureKind, results: list[Result]) -> str:
    rows = [f"{kind.name}: {sum(r.passed for r in results)}/{len(results)} outputs within tolerance",
            f"{'output':<40} {'max abs err':>12} {'max rel err':>12}  ok   {'vs float64: ours':>16} {'original':>9}"]
    for r in results:
        exact = "" if r.exact_rel is None else f"   {r.exact_rel:16.3e} {r.original_rel:9.3e}"
        rows.append(f"{r.output:<40} {r.max_abs:12.3e} {r.max_rel:12.3e}  {'yes' if r.passed else 'NO ':<3}{exact}")
    return "\n".join(rows)
