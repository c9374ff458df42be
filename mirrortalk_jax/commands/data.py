"""`mirrortalk data build|prepare|inspect|preview`: build, prepare from real videos, inspect and preview datasets."""

from __future__ import annotations

import dataclasses
import os
import time

from mirrortalk_jax.data.prepare import layouts

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


def _data_prepare(args) -> int:
    from mirrortalk_jax.data.faces import backend
    from mirrortalk_jax.data.prepare import builders, clips, dataset

    try:
        options = clips.Options(image_size=args.image_size, min_seconds=args.min_seconds,
                                max_seconds=args.max_seconds)
        settings = dataset.PrepareSettings(
            dataset=args.dataset, options=options, workers=args.workers, runner=args.runner,
            beam_options=tuple(args.beam_options.split()), speaker_from=args.speaker_from,
            heldout_speakers=tuple(s for s in args.heldout_speakers.split(",") if s),
            min_sync_confidence=args.min_sync_confidence)
        if args.sync_model:
            from mirrortalk_jax.evaluate import lse
            from mirrortalk_jax.runs import loader

            syncnet = loader.load_model(args.sync_model, expect="syncnet", what="--sync_model").model
            settings = dataclasses.replace(settings, sync=lse.sync_scorer(syncnet))
        builders.prepare(args.inputs, args.out, settings)
    except builders.DatasetNotWritten as e:  # the report is written; nothing usable came out
        print(f"mirrortalk data prepare: {e}")
        return 1
    except (backend.FacesUnavailable, FileNotFoundError, ValueError) as e:  # setup: extra, --sync_model, flags
        print(f"mirrortalk data prepare: {e}")
        return 2
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

    prepare = data.add_parser(
        "prepare", help="turn raw talking-face videos into a dataset (crops, landmarks, pose, motion, audio, QC)")
    prepare.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="video files, folders (searched recursively) or text files listing paths; local or "
                              "gs:// URIs")
    prepare.add_argument("--out", required=True, help="dataset folder to write (published when complete)")
    prepare.add_argument("--dataset", default="generic", choices=sorted(layouts.LAYOUTS),
                         help="the corpus' file layout, which gives speakers, emotions and splits")
    prepare.add_argument("--image_size", type=int, default=256, help="side of the aligned face crops")
    prepare.add_argument("--workers", type=int, default=1, help="videos processed at once (processes)")
    prepare.add_argument("--runner", default="direct", choices=["direct", "dataflow", "flink", "spark", "local"],
                         help="direct (Apache Beam on this machine), dataflow, flink, spark (Beam on a cluster, with "
                              "--beam_options), or local (no Beam)")
    prepare.add_argument("--beam_options", default="",
                         help="Beam pipeline options for a cluster runner, space-separated, e.g. "
                              "'--project=P --region=R --temp_location=gs://B/tmp'")
    prepare.add_argument("--speaker_from", default="layout", choices=["layout", "identity"],
                         help="speakers from the file layout, or clustered by face identity")
    prepare.add_argument("--heldout_speakers", default="",
                         help="comma-separated speakers for the heldout_speakers split (default: the layout's rule)")
    prepare.add_argument("--min_seconds", type=float, default=1.0, help="shortest face segment kept")
    prepare.add_argument("--max_seconds", type=float, default=20.0, help="longer segments are cut into clips")
    prepare.add_argument("--sync_model", default="",
                         help="a converted SyncNet (tools/convert_syncnet.py): score each clip's audio-visual sync, "
                              "correct its offset, drop clips below --min_sync_confidence")
    prepare.add_argument("--min_sync_confidence", type=float, default=0.0,
                         help="SyncNet confidence (LSE-C) a clip needs with --sync_model")
    prepare.set_defaults(func=_data_prepare)

    inspect = data.add_parser("inspect", help="print counts, durations and schema of a built dataset")
    inspect.add_argument("dataset_dir")
    inspect.set_defaults(func=_data_inspect)

    preview = data.add_parser("preview", help="write one record as an mp4 (frames + audio)")
    preview.add_argument("dataset_dir")
    preview.add_argument("--split", default="train")
    preview.add_argument("--index", type=int, default=0)
    preview.add_argument("--out", default="preview.mp4")
    preview.set_defaults(func=_data_preview)
