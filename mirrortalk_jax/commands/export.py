"""`mirrortalk export renderer|generator`: a trained or converted renderer, or a trained motion generator -> a
torch-free jax.export artifact (see export/runtime.py)."""

from __future__ import annotations


def _export_renderer(args) -> int:
    from mirrortalk_jax.export import renderers

    platforms = tuple(p.strip() for p in args.platforms.split(",") if p.strip())
    path = renderers.export_renderer(args.checkpoint, args.out, image_size=args.image_size, platforms=platforms)
    print(f"wrote {path} (run it with mirrortalk_jax/export/runtime.py: jax + numpy only)")
    return 0


def _export_generator(args) -> int:
    from mirrortalk_jax.export import generators

    platforms = tuple(p.strip() for p in args.platforms.split(",") if p.strip())
    path = generators.export_generator(args.checkpoint, args.out, window=args.window, platforms=platforms)
    print(f"wrote {path} (run it with mirrortalk_jax/export/runtime.py: jax + numpy only)")
    return 0


def add_parser(jobs) -> None:
    export = jobs.add_parser("export", help="write portable jax.export artifacts of converted or trained models"
                             ).add_subparsers(dest="action", required=True)
    renderer = export.add_parser("renderer", help="export a renderer (ours, PIRenderer) as StableHLO + weights")
    renderer.add_argument("--checkpoint", required=True, help="a renderer training run (its workdir) or a converted checkpoint folder (model.json)")
    renderer.add_argument("--out", required=True, help="new artifact folder")
    renderer.add_argument("--image_size", type=int, nargs=2, metavar=("H", "W"), default=None,
                          help="render size (default: the checkpoint config's, 256 256 for the released model)")
    renderer.add_argument("--platforms", default="cpu,cuda,tpu", help="comma-separated lowering platforms")
    renderer.set_defaults(func=_export_renderer)
    generator = export.add_parser("generator", help="export a motion generator (MirrorTalk, ICS-A2M) as StableHLO + "
                                                    "weights: one window of audio features -> motion")
    generator.add_argument("--checkpoint", required=True, help="a mirrortalk or mimictalk_a2m training run")
    generator.add_argument("--out", required=True, help="new artifact folder")
    generator.add_argument("--window", type=int, default=None, help="frames per call (default: the training window)")
    generator.add_argument("--platforms", default="cpu,cuda,tpu", help="comma-separated lowering platforms")
    generator.set_defaults(func=_export_generator)
