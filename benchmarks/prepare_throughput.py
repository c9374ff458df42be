"""`data prepare` throughput: frames per second per core, end to end, at 256x256 crops.

    python benchmarks/prepare_throughput.py [--seconds 20] [--size 512] [--image_size 256] [--json out.json]

Makes a talking video from scikit-image's astronaut photo (a real face, `--size` pixels square, with head
motion) and espeak speech, then times, on the same file:

  - the face landmarker alone (MediaPipe, video mode) in ms per frame, the cost the issue's target is set by;
  - one video through `process_video` in one process (decode twice, landmarks, tracking, crops, PNG, identity
    on 3 frames per clip): frames per second, and per CPU second (the process's CPU time, so a busy machine
    does not understate the work's speed);
  - the whole `prepare` (records and dataset included) over 2 copies with 1 worker, then with 2 workers: the
    speed-up.

Prints one JSON object, then a Markdown table. Target: >= 60 frames/s per core at 256x256.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' video maker

from mirrortalk_jax.data.faces.landmarker import FaceLandmarker  # noqa: E402
from mirrortalk_jax.data.prepare import builders, clips, dataset  # noqa: E402
from tests import real_videos  # noqa: E402


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=512, help="source video side")
    parser.add_argument("--image_size", type=int, default=256, help="crop side")
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="prepare_bench_"))
    try:
        n = round(args.seconds * 25)
        frames = real_videos.frames(n, args.size)
        speech = real_videos.sentence()
        audio = (speech.tolist() * (int(args.seconds * 16000) // len(speech) + 1))[:int(args.seconds * 16000)]
        import numpy as np
        source = real_videos.encode(tmp / "talk.mp4", frames, audio=np.asarray(audio, np.float32))

        with FaceLandmarker(num_faces=2) as marker:
            marker.detect(frames[0], 0)
            _, wall, cpu = _timed(lambda: [marker.detect(f, 40 * (i + 1)) for i, f in enumerate(frames[1:])])
        landmarker_ms = 1000 * cpu / (n - 1)

        options = clips.Options(image_size=args.image_size)
        entry, wall, cpu = _timed(lambda: clips.process_video(source, tmp / "one", options))
        assert entry["status"] == "ok", entry
        one = {"frames": n, "wall_s": wall, "cpu_s": cpu, "fps_wall": n / wall, "fps_per_cpu_s": n / cpu}

        copies = [shutil.copy(source, tmp / f"copy{i}.mp4") for i in range(2)]
        runs = {}
        for workers in (1, 2):
            out = tmp / f"ds{workers}"
            settings = dataset.PrepareSettings(options=options, workers=workers)
            _, wall, _ = _timed(lambda: builders.prepare([str(c) for c in copies], out, settings,
                                                         log=lambda line: None))
            runs[workers] = {"wall_s": wall, "fps_wall": 2 * n / wall}
            shutil.rmtree(builders.work_dir(out), ignore_errors=True)
        result = {"source_size": args.size, "image_size": args.image_size, "seconds": args.seconds,
                  "cores": os.cpu_count(), "landmarker_cpu_ms_per_frame": landmarker_ms, "process_video": one,
                  "prepare_1_worker": runs[1], "prepare_2_workers": runs[2],
                  "speedup_2_workers": runs[1]["wall_s"] / runs[2]["wall_s"],
                  "load_average": os.getloadavg()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=1))
    print("\n| measure | value |\n|---|---:|")
    print(f"| landmarker CPU ms/frame | {landmarker_ms:.1f} |")
    print(f"| process_video frames/s (wall, 1 process) | {one['fps_wall']:.1f} |")
    print(f"| process_video frames per CPU second | {one['fps_per_cpu_s']:.1f} |")
    print(f"| prepare frames/s, 1 worker / 2 workers | {runs[1]['fps_wall']:.1f} / {runs[2]['fps_wall']:.1f} |")
    print(f"| speed-up with 2 workers | {result['speedup_2_workers']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
