"""`mirrortalk personalize`: a trained renderer adapted to one person from a short video (train/personalize.py).

    mirrortalk personalize --renderer runs/hdtf/renderer --video her.mp4 --out runs/her \
        [--steps 300] [--rank 2] [--seconds 0] [--tail_seconds 2] [--no_static] [--target REGEX ...]

Writes OUT/data (the video prepared in the renderer's motion space, its last --tail_seconds held out), OUT/run (the
training run: LoRA and appearance kept apart), OUT/renderer (the result, LoRA merged: give it as --renderer to
`mirrortalk generate`, `evaluate-renderers` or `export renderer`). Re-running with the same --out resumes. Ends
with the held-out tail's PSNR / SSIM of the one-shot renderer and of the personalized one.
The same video is the talking-style reference of `mirrortalk generate --reference`, so one short video
personalizes appearance (this command) and motion (MirrorTalk's style code, ICS-A2M's prompt).
"""

from __future__ import annotations


def _run(args) -> int:
    import time

    from mirrortalk_jax.data.sources import ClipSource
    from mirrortalk_jax.evaluate import renderer_quality
    from mirrortalk_jax.runs import loader
    from mirrortalk_jax.train import personalize

    settings = personalize.Settings(
        steps=args.steps, rank=args.rank, static=not args.no_static, targets=tuple(args.target or (".*",)),
        seconds=args.seconds, tail_seconds=args.tail_seconds, learning_rate=args.learning_rate,
        batch_size=args.batch_size, eval_every=args.eval_every, checkpoint_every=args.eval_every)
    start = time.perf_counter()
    result = personalize.personalize(args.renderer, args.video, args.out, settings)
    seconds = time.perf_counter() - start
    tail = ClipSource(result.data, personalize.TAIL_SPLIT)
    scores = {name: renderer_quality.evaluate(loader.load_model(path, what=name).model, tail,
                                              renderer_quality.Settings(max_clips=4, max_frames=50))
              for name, path in (("one-shot", result.base), ("personalized", result.renderer))}
    print(f"personalized in {seconds:.0f} s ({settings.steps} steps); held-out tail ({args.tail_seconds:g} s):")
    for name, s in scores.items():
        print(f"  {name:13s} PSNR {s['psnr']:.2f} dB  SSIM {s['ssim']:.3f}")
    print(f"renderer: {result.renderer}")
    return 0


def add_parser(jobs) -> None:
    parser = jobs.add_parser("personalize", help="adapt a trained renderer to one person from a short video")
    parser.add_argument("--renderer", required=True, help="a renderer training run on a prepared dataset")
    parser.add_argument("--video", required=True, help="the person's video (or a dataset prepared from it)")
    parser.add_argument("--out", required=True, help="folder for data/, run/ and renderer/ (re-run: resume)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rank", type=int, default=2, help="LoRA rank (0: static appearance only)")
    parser.add_argument("--no_static", action="store_true", help="no person-specific appearance (LoRA only)")
    parser.add_argument("--target", action="append", help="regex over kernel paths that get LoRA (repeat; "
                        "default: every convolution and linear layer)")
    parser.add_argument("--seconds", type=float, default=0.0, help="seconds of video to adapt on (0: all)")
    parser.add_argument("--tail_seconds", type=float, default=2.0, help="the video's last seconds, held out")
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--eval_every", type=int, default=50, help="held-out evaluation and checkpoint interval")
    parser.set_defaults(func=_run)
