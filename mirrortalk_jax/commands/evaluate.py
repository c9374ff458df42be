"""`mirrortalk evaluate`: the results table (Markdown, CSV, JSON) for trained runs on dataset splits.

    mirrortalk evaluate --dataset_dir DIR --expert RUN --judge RUN [--regression RUN] \
        --model MirrorTalk=runs/mirrortalk --model "w/o HSIC=runs/mirrortalk_no_hsic" [--out DIR]

Rows: Ground Truth, mean motion, nearest-neighbour audio retrieval, the audio-only regression (with
--regression), then every --model: any trained generator run (MirrorTalk or an ablation, DreamTalk, MimicTalk
ICS-A2M; the run's config says which). --judge is an independently trained style
encoder (mirrortalk_jax/configs/style_encoder.py with its own seed), never a generator's own SDSE.

Any dataset: SynthTalk draws predictions with its own parametric face; a dataset made by `mirrortalk data prepare`
(any motion space) needs --renderer, a renderer run of its motion space, which animates each clip's first frame:
LMD then compares dlib-68 landmarks re-tracked on rendered and real frames (MediaPipe mesh), CSIM compares dlib's
identity embeddings of the first frame and the generated ones (the `faces` extra), and --syncnet (a converted
syncnet_v2, tools/convert_syncnet.py) adds SyncNet's LSE-C / LSE-D on the rendered frames. --inception (a
converted pytorch-fid InceptionV3, tools/convert_inception.py) makes FID comparable with the literature's; without
it FID uses the weights-free pixel projection, and the table says which.
"""

from __future__ import annotations

import contextlib
from pathlib import Path


def named_runs(items: list[str], flag: str) -> list[tuple[str, Path]]:
    """`NAME=RUN_DIR` arguments of a repeated flag -> [(name, run dir)], refusing malformed ones."""
    runs = []
    for item in items:
        name, sep, run = item.partition("=")
        if not sep or not name or not run:
            raise ValueError(f"{flag} takes NAME=RUN_DIR, got {item!r}")
        runs.append((name, Path(run)))
    return runs


def _run(args) -> int:
    with contextlib.ExitStack() as stack:  # closes the landmark detector however the run ends
        return _evaluate(args, stack)


def _faces(args, dataset_spec, stack):
    """How predictions become faces: SynthTalk's own, or --renderer's (see the module docstring)."""
    from mirrortalk_jax.evaluate import faces
    from mirrortalk_jax.runs import loader

    if not args.renderer:
        if args.syncnet:
            raise ValueError("--syncnet scores rendered frames: give --renderer too")
        if dataset_spec.name != "synthtalk_v1":
            raise ValueError(f"{args.dataset_dir}: motion space {dataset_spec.name!r} has no built-in face; give "
                             "--renderer, a renderer run trained on this dataset")
        return faces.SynthTalkFaces()
    renderer = loader.load_model(args.renderer, what="--renderer")
    if renderer.spec is None or renderer.spec.channels != dataset_spec.channels:
        raise ValueError(f"--renderer {args.renderer} was trained on another motion space "
                         f"({None if renderer.spec is None else renderer.spec.name}) than {args.dataset_dir}'s "
                         f"({dataset_spec.name}, {dataset_spec.dim} channels)")
    from mirrortalk_jax.evaluate import landmark_detectors

    detector = stack.enter_context(landmark_detectors.MeshLandmarkDetector())
    identity = None
    try:
        from mirrortalk_jax.data.faces.identity import IdentityEmbedder

        identity = IdentityEmbedder()
    except ImportError as e:  # CSIM needs dlib; the other metrics do not
        print(f"no CSIM: {e}")
    syncnet = None
    if args.syncnet:
        from mirrortalk_jax.evaluate import lse

        syncnet = lse.SyncNetEmbedder(loader.load_model(args.syncnet, expect="syncnet", what="--syncnet").model)
    return faces.RenderedFaces(renderer.model, detector, identity=identity, syncnet=syncnet, vshift=args.vshift)


def _evaluate(args, stack: contextlib.ExitStack) -> int:
    from mirrortalk_jax import storage
    from mirrortalk_jax.data.sources import ClipSource
    from mirrortalk_jax.evaluate import fid as fid_lib
    from mirrortalk_jax.evaluate import results_table, style_similarity, suite
    from mirrortalk_jax.runs import loader

    models = named_runs(args.model, "--model")
    if not models and not args.regression:
        raise ValueError("nothing to evaluate: give --model NAME=RUN (and/or --regression RUN)")
    settings = suite.Settings(num_steps=args.num_steps, vshift=args.vshift, seed=args.seed,
                              image_metrics=not args.no_image_metrics)
    first = loader.stored_model(models[0][1] if models else args.regression).config
    reference_frames = int(first.data.get("reference_frames", 64))
    dataset_dir = storage.path(args.dataset_dir)
    splits = [suite.load_split(dataset_dir, s, first.data.audio_feature, reference_frames,
                               max_clips=args.max_clips) for s in args.splits.split(",")]
    judge_config = loader.stored_model(models[0][1]).config if models else None
    faces = _faces(args, ClipSource(dataset_dir, splits[0].name).spec, stack)
    extractor, fid_name = fid_lib.PixelProjection(), "the pixel-projection extractor (not comparable across papers)"
    if args.inception:
        from mirrortalk_jax.evaluate import inception

        extractor = inception.InceptionFeatures(inception.load_inception(args.inception))
        fid_name = "pytorch-fid's InceptionV3 pool3"
    judges = suite.Judges(expert=loader.load_model(args.expert).model,
                          style=style_similarity.StyleEvaluator.from_run(args.judge, generator_config=judge_config),
                          fid_extractor=extractor, faces=faces)
    methods = {"Ground Truth": suite.ground_truth(), "Mean motion": suite.mean_motion(dataset_dir, args.train_split),
               "Nearest-neighbour audio retrieval": suite.nearest_neighbour(dataset_dir, first.data.audio_feature,
                                                                             args.train_split)}
    if args.regression:
        methods["Audio-only regression"] = suite.generator(args.regression, settings)
    for name, run in models:
        methods[name] = suite.generator(run, settings)
    rows, predictions = suite.evaluate(splits, methods, judges, settings, progress=lambda m: print(f"scoring {m}"))
    table = results_table.ResultsTable(rows, {
        "units": f"M-LMD/F-LMD in pixels; Sync_conf = LSE-C of the motion expert; FID under {fid_name}",
        "dataset": str(dataset_dir),
        "sampler": f"{settings.num_steps} sampling steps, seed {settings.seed}"})
    paths = table.write(args.out)
    if args.previews and models:
        for split in splits:
            suite.write_previews(Path(args.out) / "previews", split, predictions[split.name], models[0][0],
                                 count=args.previews,
                                 faces=None if isinstance(faces, suite.faces_lib.SynthTalkFaces) else faces)
    print(table.to_markdown())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def add_parser(jobs) -> None:
    parser = jobs.add_parser("evaluate", help="score trained runs on dataset splits into the results table")
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--splits", default="heldout_sentences,heldout_speakers")
    parser.add_argument("--train_split", default="train", help="where the mean-motion and retrieval baselines look")
    parser.add_argument("--expert", required=True, help="motion-expert run (the Sync_conf embedder)")
    parser.add_argument("--judge", required=True, help="independent style-encoder run (StyleSim)")
    parser.add_argument("--regression", default="", help="audio-only regression run (a baseline row)")
    parser.add_argument("--model", action="append", default=[], help="NAME=RUN_DIR of a generator run: MirrorTalk, DreamTalk or ICS-A2M (repeat)")
    parser.add_argument("--out", default="results", help="folder for results.{md,csv,json} and previews")
    parser.add_argument("--max_clips", type=int, default=0, help="clips per split (0: all)")
    parser.add_argument("--num_steps", type=int, default=20,
                        help="DDIM / ODE steps of every generator (0: each run's own evaluation setting)")
    parser.add_argument("--vshift", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--previews", type=int, default=0, help="preview videos per split of the first --model")
    parser.add_argument("--renderer", default="", help="renderer run of the dataset's motion space (needed for a "
                                                       "prepared real-face dataset)")
    parser.add_argument("--syncnet", default="", help="converted SyncNet (LSE-C / LSE-D on rendered frames)")
    parser.add_argument("--inception", default="", help="converted pytorch-fid InceptionV3 (comparable FID)")
    parser.add_argument("--no_image_metrics", action="store_true", help="skip SSIM/PSNR/FID (faster)")
    parser.set_defaults(func=_run)
