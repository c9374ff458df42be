"""Checks our port + converter against a reference dump of the original implementation.

    python tools/check_fixture.py path/to/fixture_folder [more folders...]

A folder holds config.json, weights.safetensors and io.npz laid out like the fixtures in tests/fixtures/ (any
size or seed). Prints the max absolute and relative error of every output and exits 1 if any is above the
model's tolerance, 2 if a folder cannot be read or converted.
"""

from __future__ import annotations

import sys

from absl import app

from mirrortalk_jax import fixtures
from mirrortalk_jax.convert.foreign import ConversionError


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    status = 0
    for folder in argv[1:]:
        try:
            kind, results = fixtures.check(folder)
        except (ConversionError, FileNotFoundError) as e:
            print(f"{folder}: {e}", file=sys.stderr)
            status = max(status, 2)
            continue
        print(fixtures.table(kind, results))
        if not all(r.passed for r in results):
            status = max(status, 1)
    return status


if __name__ == "__main__":
    app.run(main)
