"""Personalization (MimicTalk's ablation) on real material: a renderer trained on one set of videos, adapted to a
person from a short video of them, scored on the video's held-out tail.

    python benchmarks/personalize.py [--size tiny] [--base_steps 600] [--steps 400] [--curve 50,100,200,400]
        [--seconds 5,10,30] [--tail_seconds 2] [--workdir runs/bench_personalize] [--json out.json]
        [--perceptual_net ckpt/vgg19] [--inception ckpt/inception]

Material (scikit-image's astronaut photo, espeak speech; tests/real_videos.py): the base renderer (ours at
`--size`, `--base_steps` steps) trains on three videos of altered copies of the photo (mirrored, colour-rolled,
smaller), as a person-agnostic renderer would on other people; the person is the unaltered photo talking for
max(--seconds) + --tail_seconds seconds. Rows of the ablation (all `--steps` steps, adapting on the first
`--ablation_seconds`): one-shot (the base renderer, the tail's first frame as portrait), static appearance only,
LoRA only, both. Curves: held-out PSNR against steps (each variant, at `--curve` steps, with training wall time)
and against the seconds of video adapted on (both, at `--steps`). Also steps/s, time to +3 dB over one-shot, and
the process's peak resident memory. Existing runs in `--workdir` resume, so a finished benchmark re-scores.

Prints one JSON object and the Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import real_videos  # noqa: E402

from mirrortalk_jax import base_config  # noqa: E402
from mirrortalk_jax.data import video  # noqa: E402
from mirrortalk_jax.data.prepare import builders, clips, dataset, motion_space  # noqa: E402
from mirrortalk_jax.data.sources import ClipSource  # noqa: E402
from mirrortalk_jax.evaluate import fid, landmark_detectors, renderer_quality  # noqa: E402
from mirrortalk_jax.runs import loader  # noqa: E402
from mirrortalk_jax.train import personalize, trainer  # noqa: E402

FPS = 25
VARIANTS = {"static only": dict(static=True, rank=0), "LoRA only": dict(static=False, rank=2),
            "static + LoRA": dict(static=True, rank=2)}


def _speech(seconds: float) -> np.ndarray:
    sentence = real_videos.sentence()
    return np.tile(sentence, int(np.ceil(seconds * 16000 / len(sentence))))[:round(seconds * 16000)]


def _video(path: Path, seconds: float, alter=None, **kwargs) -> Path:
    if not path.exists():
        frames = real_videos.frames(round(seconds * FPS), **kwargs)
        video.write_mp4(path, frames if alter is None else alter(frames), FPS, _speech(seconds), 16000)
    return path


def base_renderer(root: Path, size: str, steps: int) -> Path:
    """Ours trained on altered copies of the photo (see the module docstring)."""
    run = root / "base_renderer"
    material = root / "material"
    material.mkdir(parents=True, exist_ok=True)
    videos = [_video(material / "mirrored.mp4", 6.0, lambda f: f[:, :, ::-1]),
              _video(material / "colour_rolled.mp4", 6.0, lambda f: np.roll(f[:, :, ::-1], 1, axis=-1)),
              _video(material / "smaller.mp4", 6.0, lambda f: np.roll(f, 2, axis=-1), face_scale=0.8)]
    data = root / "base_data"
    if not (data / "dataset_info.json").exists():
        side = base_config.load_config_file(base_config.config_path("renderer"), size).model.image_size[0]
        settings = dataset.PrepareSettings(options=clips.Options(image_size=side, min_seconds=0.8, max_seconds=1.6),
                                           runner="local")
        builders.prepare([str(v) for v in videos], data, settings, log=lambda line: None)
    config = base_config.load_config_file(base_config.config_path("real_corpus"), f"hdtf,renderer,{size}")
    config.data.dataset_dir, config.data.eval_split = str(data), "train"
    config.train.update(num_steps=steps, decay_steps=steps, eval_every=0, checkpoint_every=max(steps // 2, 1))
    trainer.train_and_evaluate(config, run)
    return run


class Scorer:
    def __init__(self, basis_json: str, perceptual_net: str, inception: str):
        from mirrortalk_jax.data.faces.identity import IdentityEmbedder

        self.detector = landmark_detectors.MeshLandmarkDetector()
        self.identity = IdentityEmbedder()
        self.basis = motion_space.MeshBasis.from_json(basis_json)
        self.perceptual = None
        if perceptual_net:
            from mirrortalk_jax.models.vgg import vgg19

            net = loader.load_model(perceptual_net, expect="vgg19").model
            self.perceptual = lambda a, b: vgg19.perceptual_distance(net, a, b)  # noqa: E731
        if inception:
            from mirrortalk_jax.evaluate import inception as inception_lib

            self.fid_features = inception_lib.InceptionFeatures(inception_lib.load_inception(inception))
            self.fid_name = "Inception"
        else:
            self.fid_features, self.fid_name = fid.PixelProjection(), "pixel projection (not comparable)"

    def quick(self, renderer, tail: ClipSource) -> dict:
        return renderer_quality.evaluate(renderer, tail, renderer_quality.Settings(max_clips=0, max_frames=0))

    def full(self, renderer, tail: ClipSource) -> dict:
        return renderer_quality.evaluate(renderer, tail, renderer_quality.Settings(max_clips=0, max_frames=0),
                                         perceptual=self.perceptual, detector=self.detector, identity=self.identity,
                                         basis=self.basis, fid_features=self.fid_features)


def adapt(base: Path, person: Path, out: Path, steps: int, curve: list[int], scorer: Scorer, **settings) -> dict:
    """Personalization in increments (the schedule is constant after warm-up, so increments equal one run),
    the held-out tail scored after each; training wall time excludes the scoring."""
    points, train_seconds = [], 0.0
    for target in sorted({*curve, steps}):
        if target > steps:
            continue
        start = time.perf_counter()
        result = personalize.personalize(base, person, out, personalize.Settings(
            steps=target, eval_every=max(target, 1), checkpoint_every=max(target, 1), **settings),
            log=lambda line: None)
        train_seconds += time.perf_counter() - start
        tail = ClipSource(result.data, personalize.TAIL_SPLIT)
        renderer = loader.load_model(result.renderer).model
        points.append({"steps": target, "train_seconds": round(train_seconds, 1),
                       "psnr": scorer.quick(renderer, tail)["psnr"]})
    final = scorer.full(loader.load_model(result.renderer).model, ClipSource(result.data, personalize.TAIL_SPLIT))
    return {"curve": points, "metrics": final, "data": str(result.data), "train_seconds": round(train_seconds, 1),
            "steps_per_s": round(steps / max(train_seconds, 1e-9), 3)}


def _fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=("tiny", "base"))
    parser.add_argument("--base_steps", type=int, default=600)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--curve", default="50,100,200,400")
    parser.add_argument("--seconds", default="5,10,30", help="video lengths for the length curve")
    parser.add_argument("--ablation_seconds", type=float, default=10.0)
    parser.add_argument("--tail_seconds", type=float, default=2.0)
    parser.add_argument("--perceptual_net", default="", help="converted VGG19 for the perceptual column")
    parser.add_argument("--inception", default="", help="converted Inception for comparable FID")
    parser.add_argument("--workdir", default="runs/bench_personalize")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    root = Path(args.workdir)
    lengths = [float(s) for s in args.seconds.split(",")]
    curve = [int(s) for s in args.curve.split(",")]

    start = time.perf_counter()
    base = base_renderer(root, args.size, args.base_steps)
    base_seconds = time.perf_counter() - start
    person = _video(root / "material" / "person.mp4", max(lengths + [args.ablation_seconds]) + args.tail_seconds)
    scorer = Scorer(loader.stored_model(base).motion_basis, args.perceptual_net, args.inception)

    def run(name: str, seconds: float, steps: int, points: list[int], **variant) -> dict:
        out = root / f"{name.replace(' ', '_').replace('+', 'and')}_{seconds:g}s"
        return adapt(base, person, out, steps, points, scorer, seconds=seconds, tail_seconds=args.tail_seconds,
                     **variant)

    ablation = {name: run(name, args.ablation_seconds, args.steps, curve, **v) for name, v in VARIANTS.items()}
    tail = ClipSource(ablation["static + LoRA"]["data"], personalize.TAIL_SPLIT)
    one_shot = scorer.full(loader.load_model(base).model, tail)
    lengths_curve = {}
    for seconds in lengths:
        found = (ablation["static + LoRA"] if seconds == args.ablation_seconds
                 else run("static + LoRA", seconds, args.steps, [], **VARIANTS["static + LoRA"]))
        lengths_curve[seconds] = {"psnr": found["metrics"]["psnr"], "ssim": found["metrics"]["ssim"]}
    gain_target = one_shot["psnr"] + 3.0
    to_gain = {name: next((p["train_seconds"] for p in r["curve"] if p["psnr"] >= gain_target), None)
               for name, r in ablation.items()}
    report = {
        "size": args.size, "base_steps": args.base_steps, "base_train_seconds": round(base_seconds, 1),
        "steps": args.steps, "ablation_seconds": args.ablation_seconds, "tail_seconds": args.tail_seconds,
        "one_shot": one_shot, "ablation": ablation, "lengths": lengths_curve,
        "seconds_to_plus_3db": to_gain, "fid_features": scorer.fid_name,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(report, indent=1, default=float))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))
    cols = ("csim", "psnr", "ssim", "perceptual", "fid", "aed", "apd")
    print(f"\nHeld-out tail ({args.tail_seconds:g} s), adapting on {args.ablation_seconds:g} s for {args.steps} steps")
    print("| method | " + " | ".join(c.upper() for c in cols) + " | train s |")
    print("|---|" + "---:|" * (len(cols) + 1))
    for name, metrics, secs in [("one-shot", one_shot, None),
                                *((n, r["metrics"], r["train_seconds"]) for n, r in ablation.items())]:
        print(f"| {name} | " + " | ".join(_fmt(metrics.get(c)) for c in cols) + f" | {_fmt(secs, 0)} |")
    print("\nPSNR against steps (training seconds)")
    for name, r in ablation.items():
        print(f"- {name}: " + ", ".join(f"{p['steps']}: {p['psnr']:.2f} ({p['train_seconds']:.0f} s)"
                                        for p in r["curve"]))
    print("\nPSNR / SSIM against the seconds adapted on: " + ", ".join(
        f"{s:g} s: {v['psnr']:.2f} / {v['ssim']:.3f}" for s, v in lengths_curve.items()))


if __name__ == "__main__":
    main()
