"""Renderer quality at equal training budget: ours and the PIRenderer port trained the same way on the same data,
then scored by self-reenactment on held-out clips (evaluate/renderer_quality.py).

    python benchmarks/renderer_quality.py [--size tiny] [--steps 1000] [--dataset_dir DIR]
        [--splits heldout_speakers,heldout_sentences] [--perceptual_net ckpt/vgg19] [--workdir runs/bench_renderers]
        [--json out.json]

Both train with mirrortalk_jax/configs/renderer.py at `--size` (ours, and its `pirenderer` option) for `--steps`
steps of 16 target frames each (the configs' batches), same seed, same learning-rate schedule. Default data: the
SynthTalk variant the config names (built if missing); `--dataset_dir` takes any dataset with frames (e.g. a
`mirrortalk data prepare` output, whose `heldout_*` splits you name with --splits). Existing runs in
`--workdir` resume (so a finished benchmark re-scores without retraining).

Prints one JSON object (metrics per split and renderer, training wall time, steps) and the Markdown table.
Landmark errors use the prepare pipeline's MediaPipe tracker when the `faces` extra is installed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mirrortalk_jax import base_config
from mirrortalk_jax.data.sources import ClipSource
from mirrortalk_jax.evaluate import landmark_detectors, renderer_quality, results_table
from mirrortalk_jax.runs import loader
from mirrortalk_jax.train import trainer

RENDERERS = {"Ours": "", "PIRenderer": "pirenderer"}


def train(size: str, option: str, steps: int, workdir: Path, dataset_dir: str, data_root: str) -> float:
    config = base_config.load_config_file(base_config.config_path("renderer"), ",".join(filter(None, (size, option))))
    config.train.num_steps = steps
    config.train.decay_steps = steps
    config.train.eval_every = 0
    config.train.checkpoint_every = max(steps // 4, 1)
    config.data.dataset_dir = dataset_dir
    config.data.data_root = data_root
    start = time.perf_counter()
    trainer.train_and_evaluate(config, workdir)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=("tiny", "base", "large"))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--dataset_dir", default="", help="default: the config's SynthTalk variant")
    parser.add_argument("--data_root", default="data", help="where SynthTalk is built when --dataset_dir is empty")
    parser.add_argument("--splits", default="heldout_speakers,heldout_sentences")
    parser.add_argument("--perceptual_net", default="", help="converted VGG19 for the perceptual column")
    parser.add_argument("--max_clips", type=int, default=8)
    parser.add_argument("--max_frames", type=int, default=50)
    parser.add_argument("--workdir", default="runs/bench_renderers")
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    workdir = Path(args.workdir)
    train_s = {name: train(args.size, option, args.steps, workdir / name, args.dataset_dir, args.data_root)
               for name, option in RENDERERS.items()}
    first = loader.stored_model(workdir / "Ours").config
    dataset_dir = Path(first.data.dataset_dir or trainer.resolve_dataset(first.data))
    perceptual = None
    if args.perceptual_net:
        from mirrortalk_jax.models.vgg import vgg19

        net = loader.load_model(args.perceptual_net, expect="vgg19").model
        perceptual = lambda a, b: vgg19.perceptual_distance(net, a, b)  # noqa: E731
    try:
        detector = landmark_detectors.MeshLandmarkDetector()
    except ImportError:
        detector = None
    settings = renderer_quality.Settings(max_clips=args.max_clips, max_frames=args.max_frames)
    models = {"Portrait copy (no motion)": renderer_quality.PortraitCopy(),
              **{name: loader.load_model(workdir / name).model for name in RENDERERS}}
    rows = {}
    for split in args.splits.split(","):
        source = ClipSource(dataset_dir, split)
        rows[split] = {name: renderer_quality.evaluate(m, source, settings, perceptual=perceptual, detector=detector)
                       for name, m in models.items()}
    if detector is not None:
        detector.close()
    result = {"size": args.size, "steps": args.steps, "target_frames_per_step": 16, "dataset": str(dataset_dir),
              "train_wall_s": train_s, "landmarks": "mesh" if detector is not None else None, "scores": rows}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    print()
    print(results_table.ResultsTable(rows, {"steps": args.steps, "size": args.size}).to_markdown())


if __name__ == "__main__":
    main()
