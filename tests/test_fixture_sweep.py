"""Every port against small reference dumps of its original at configurations other than the shared fixtures'
(tests/fixtures/sweep/, described in tests/fixtures/README.md): widths, head counts and head dims, depths,
optional branches on and off, masks, lengths and batch sizes. A port that matches the original at one
configuration only (the bug this catches once hid in the ICS-A2M port) fails here."""

import json
from pathlib import Path

import pytest

from mirrortalk_jax import fixtures

SWEEP = Path(__file__).parent / "fixtures" / "sweep"
FOLDERS = sorted(p for p in SWEEP.iterdir() if p.is_dir())


def test_the_sweep_covers_every_port():
    kinds = {fixtures.detect(json.loads((folder / "config.json").read_text()), folder).name for folder in FOLDERS}
    assert kinds >= {"hubert", "wav2vec2", "syncnet", "dreamtalk_denoiser", "dreamtalk_renderer",
                     "mimictalk_icl_a2m"}, kinds


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_port_matches_the_original_at_this_configuration(folder):
    kind, results = fixtures.check(folder)
    failed = [r for r in results if not r.passed]
    assert not failed, f"{folder.name} ({kind.name}):\n{fixtures.table(kind, failed)}"
    assert len(results) >= 3
