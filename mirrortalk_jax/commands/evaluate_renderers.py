"""`mirrortalk evaluate-renderers`: renderers scored by self-reenactment on held-out clips of any dataset with frames.

    mirrortalk evaluate-renderers --dataset_dir DIR --renderer Ours=runs/renderer --renderer PIRenderer=runs/pir \
        [--splits heldout_speakers] [--perceptual_net ckpt/vgg19] [--landmarks mesh|dlib|none] [--out DIR]

Rows: the no-motion floor (every frame is the portrait), then every --renderer (a trained run or a converted
renderer). Columns: SSIM, PSNR, the LPIPS-style perceptual distance (with --perceptual_net, a converted VGG19:
tools/convert_vgg.py), M-LMD / F-LMD on landmarks re-tracked from rendered and real frames. See
evaluate/renderer_quality.py.
"""

from __future__ import annotations


def _run(args) -> int:

    from mirrortalk_jax.commands.evaluate import named_runs
    from mirrortalk_jax.data.sources import ClipSource
    from mirrortalk_jax.evaluate import landmark_detectors, renderer_quality, results_table
    from mirrortalk_jax.runs import loader

    renderers = [(name, loader.load_model(run, what="--renderer"))
                 for name, run in named_runs(args.renderer, "--renderer")]
    if not renderers:
        raise ValueError("nothing to evaluate: give --renderer NAME=RUN (repeat for several)")
    perceptual = None
    if args.perceptual_net:
        from mirrortalk_jax.models.vgg import vgg19

        net = loader.load_model(args.perceptual_net, expect="vgg19", what="--perceptual_net").model
        perceptual = lambda a, b: vgg19.perceptual_distance(net, a, b)  # noqa: E731
    detectors = {"mesh": landmark_detectors.MeshLandmarkDetector, "dlib": landmark_detectors.DlibLandmarkDetector}
    detector = detectors[args.landmarks]() if args.landmarks != "none" else None
    settings = renderer_quality.Settings(max_clips=args.max_clips, max_frames=args.max_frames,
                                         batch_size=args.batch_size)
    rows: dict[str, dict[str, dict]] = {}
    try:
        for split in args.splits.split(","):
            source = ClipSource(args.dataset_dir, split)
            for name, run in renderers:  # refuse a renderer of another motion space before rendering anything
                width = run.spec.dim if run.spec is not None else run.model_config.get("coeff_nc")
                if width != source.spec.dim:
                    raise ValueError(f"--renderer {name} renders {width}-channel motion; {args.dataset_dir} has the "
                                     f"{source.spec.dim}-channel motion space {source.spec.name!r}")
            rows[split] = {}
            for name, model in [("Portrait copy (no motion)", renderer_quality.PortraitCopy()),
                                *((n, r.model) for n, r in renderers)]:
                print(f"scoring {name} on {split}")
                rows[split][name] = renderer_quality.evaluate(model, source, settings, perceptual=perceptual,
                                                              detector=detector)
    finally:
        if hasattr(detector, "close"):
            detector.close()
    table = results_table.ResultsTable(rows, {
        "task": "self-reenactment: the clip's first frame is the portrait, its own motion drives the rest",
        "landmarks": args.landmarks, "perceptual": args.perceptual_net or None,
        "frames_per_clip": args.max_frames, "dataset": str(args.dataset_dir)})
    paths = table.write(args.out, name="renderers")
    print(table.to_markdown())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def add_parser(jobs) -> None:
    parser = jobs.add_parser("evaluate-renderers", help="score renderers by self-reenactment on held-out clips")
    parser.add_argument("--dataset_dir", required=True, help="a dataset with frames (SynthTalk, data prepare)")
    parser.add_argument("--renderer", action="append", default=[],
                        help="NAME=RUN: a renderer training run or converted renderer (repeat)")
    parser.add_argument("--splits", default="heldout_speakers")
    parser.add_argument("--perceptual_net", default="", help="converted VGG19 (tools/convert_vgg.py) for the "
                        "LPIPS-style distance; empty: no perceptual column")
    parser.add_argument("--landmarks", default="mesh", choices=("mesh", "dlib", "none"),
                        help="landmark re-tracker for M-LMD/F-LMD (mesh: the prepare pipeline's MediaPipe)")
    parser.add_argument("--max_clips", type=int, default=8, help="clips per split (0: all)")
    parser.add_argument("--max_frames", type=int, default=50, help="frames per clip after the portrait (0: all)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--out", default="results", help="folder for renderers.{md,csv,json}")
    parser.set_defaults(func=_run)
