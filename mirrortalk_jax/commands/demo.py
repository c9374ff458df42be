"""`mirrortalk demo`: the main job (see mirrortalk_jax/demo.py for what it does and writes)."""

from __future__ import annotations

import os


def _run(args) -> int:
    from mirrortalk_jax import demo
    from mirrortalk_jax.evaluate import suite

    steps = demo.parse_steps(args.steps)
    settings = demo.DemoSettings(
        workdir=args.workdir, data_root=args.data_root, dataset_dir=args.dataset_dir,
        dataset_variant=args.dataset_variant, config_variant=args.config_variant,
        ablations=tuple(filter(None, args.ablations.split(","))),
        competitors=tuple(filter(None, args.competitors.split(","))), steps=steps, max_clips=args.max_clips,
        previews=args.previews, eval=suite.Settings(num_steps=args.num_steps, vshift=args.vshift))
    demo.run(settings)
    return 0


def add_parser(jobs) -> None:
    from mirrortalk_jax import demo

    parser = jobs.add_parser("demo", help="build SynthTalk, train the tiny MirrorTalk stack, evaluate, preview")
    parser.add_argument("--workdir", default="runs/demo", help="runs, results table, previews and plots go here")
    parser.add_argument("--data_root", default=os.environ.get("MIRRORTALK_DATA_DIR", "data"))
    parser.add_argument("--dataset_dir", default="", help="use this dataset instead of building SynthTalk")
    parser.add_argument("--dataset_variant", default="default", help="SynthTalk size: default or tiny")
    parser.add_argument("--config_variant", default="tiny", help="model config variant of every stage")
    parser.add_argument("--ablations", default="",
                        help="comma-separated: no_memory_bank,no_hsic,no_triplet,no_hier_mod (each adds runs)")
    parser.add_argument("--competitors", default=",".join(demo.COMPETITORS),
                        help="published systems trained and scored beside MirrorTalk ('' for none)")
    parser.add_argument("--steps", default="", help="training steps per stage, e.g. mirrortalk=800,regression=100")
    parser.add_argument("--max_clips", type=int, default=48, help="clips evaluated per split (0: all)")
    parser.add_argument("--previews", type=int, default=2, help="preview videos per split")
    parser.add_argument("--num_steps", type=int, default=20, help="DDIM / ODE sampling steps")
    parser.add_argument("--vshift", type=int, default=10, help="largest offset searched by Sync_conf (frames)")
    parser.set_defaults(func=_run)
