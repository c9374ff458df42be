"""SynthTalk build time and Grain pipeline throughput on this machine.

    python benchmarks/data_pipeline.py [--variant default] [--data_dir /tmp/mirrortalk_bench] [--batches 50]

Prints one JSON object and a table: build seconds (fresh build, all cores), clips/s of the build, and
training windows/s of the input pipeline for a few configurations (decoded in-process or by Grain workers).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import time

from absl import flags


def _throughput(source, window, batch_size: int, batches: int, workers: int) -> float:
    from mirrortalk_jax.data import pipeline

    it = iter(pipeline.training_dataset(source, window, batch_size=batch_size, seed=0, worker_count=workers))
    next(it)  # start-up (worker processes, first decode) is not throughput
    start = time.perf_counter()
    for _ in itertools.islice(it, batches):
        pass
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="default")
    parser.add_argument("--data_dir", default="/tmp/mirrortalk_bench")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()
    flags.FLAGS.mark_as_parsed()  # Grain worker processes read absl flags

    from mirrortalk_jax.data import pipeline, sources
    from mirrortalk_jax.data.synthtalk import builder, corpus

    shutil.rmtree(args.data_dir, ignore_errors=True)
    start = time.perf_counter()
    path = builder.build(args.data_dir, args.variant)
    build_s = time.perf_counter() - start
    source = sources.ClipSource(path, "train")
    num_clips = sum(len(sources.ClipSource(path, split)) for split in corpus.SPLITS)
    size_mb = sum(f.stat().st_size for f in path.iterdir()) / 2**20

    rows = {
        "motion+log_mel": pipeline.WindowConfig(),
        "motion+log_mel+frames": pipeline.WindowConfig(frames="window"),
    }
    result = {"variant": args.variant, "cpu_count": os.cpu_count(), "build_s": round(build_s, 1),
              "clips": num_clips, "build_clips_per_s": round(num_clips / build_s, 1),
              "dataset_mb": round(size_mb, 1), "batch_size": args.batch_size, "windows_per_s": {}}
    for name, window in rows.items():
        for workers in (0, 2):
            rate = _throughput(source, window, args.batch_size, args.batches, workers)
            result["windows_per_s"][f"{name}, workers={workers}"] = round(rate, 1)
    print(json.dumps(result))
    print("\n| measure | value |\n|---|---|")
    for key in ("variant", "cpu_count", "clips", "build_s", "build_clips_per_s", "dataset_mb"):
        print(f"| {key} | {result[key]} |")
    for key, value in result["windows_per_s"].items():
        print(f"| windows/s ({key}) | {value} |")


if __name__ == "__main__":
    main()
