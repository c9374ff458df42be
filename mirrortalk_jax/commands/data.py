"""`mirrortalk data build|inspect|preview`: build, inspect and preview datasets."""

from __future__ import annotations

import os
import time

DEFAULT_DATA_DIR = os.environ.get("MIRRORTALK_DATA_DIR", "data")


def _data_build(args) -> int:
    from mirrortalk_jax.data.synthtalk import builder

    start = time.perf_counter()
    path = builder.build(args.data_dir, args.variant, overwrite=args.overwrite, num_workers=args.workers)
    print(f"SynthTalk {args.variant} ready at {path} ({time.perf_counter() - start:.1f} s)")
    return 0


def _data_inspect(args) -> int:
    from mirrortalk_jax.data import overview

    print(overview.summarize(args.dataset_dir))
    return 0


def _data_preview(args) -> int:
    from mirrortalk_jax.data import overview

    path = overview.preview(args.dataset_dir, args.split, args.index, args.out)
    print(f"wrote {path}")
    return 0


def add_parser(jobs) -> None:
    data = jobs.add_parser("data", help="build, inspect and preview datasets").add_subparsers(
        dest="action", required=True)
    build = data.add_parser("build", help="build the SynthTalk corpus (ArrayRecord, via TFDS)")
    build.add_argument("--variant", default="default", help="SynthTalk variant: tiny or default")
    build.add_argument("--data_dir", default=DEFAULT_DATA_DIR,
                       help="root data directory (default: $MIRRORTALK_DATA_DIR or ./data)")
    build.add_argument("--overwrite", action="store_true", help="rebuild even if a complete build exists")
    build.add_argument("--workers", type=int, default=0, help="generator processes (0: one per core)")
    build.set_defaults(func=_data_build)

    inspect = data.add_parser("inspect", help="print counts, durations and schema of a built dataset")
    inspect.add_argument("dataset_dir")
    inspect.set_defaults(func=_data_inspect)

    preview = data.add_parser("preview", help="write one record as an mp4 (frames + audio)")
    preview.add_argument("dataset_dir")
    preview.add_argument("--split", default="train")
    preview.add_argument("--index", type=int, default=0)
    preview.add_argument("--out", default="preview.mp4")
    preview.set_defaults(func=_data_preview)
