"""`mirrortalk serve`: the web demo (generate/web_app.py; needs the `demo` extra).

    mirrortalk serve --model MirrorTalk=runs/hdtf/mirrortalk --model MimicTalk=runs/hdtf/mimictalk \\
        --renderer runs/hdtf/renderer [--host 127.0.0.1] [--port 7860]
"""

from __future__ import annotations

import argparse

from mirrortalk_jax.commands.evaluate import named_runs


def _serve(args) -> int:
    from mirrortalk_jax.generate import web_app
    from mirrortalk_jax.runs import loader

    runs = named_runs(args.model, "--model")
    if not runs:
        raise ValueError("give at least one --model NAME=RUN (a mirrortalk or mimictalk run)")
    for name, run in runs:  # refused before the server starts, not at the first request
        loader.stored_model(run, what=f"--model {name}")
    loader.stored_model(args.renderer, what="--renderer")
    app = web_app.build_app(dict((name, str(run)) for name, run in runs), args.renderer)
    app.launch(server_name=args.host, server_port=args.port)
    return 0


def add_parser(jobs) -> None:
    p = jobs.add_parser("serve", help="web demo: photo + speech (+ style video) -> talking-face mp4",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=[], help="NAME=RUN of a mirrortalk / mimictalk run (repeat)")
    p.add_argument("--renderer", required=True, help="renderer run of the models' motion space")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(func=_serve)
