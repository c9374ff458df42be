"""Speed of photo-to-video generation (generate/talking_face.py): the whole file, and streaming.

    python benchmarks/generate_speed.py --generator RUN --renderer RUN --photo P.jpg --audio S.wav \
        [--reference R.mp4] [--steps 10] [--chunk_frames 0] [--overlap_frames 8] [--json out.json]

Runs on trained runs (a generator and a renderer of one real-face motion space, e.g. real_corpus.py's stages).
Reported:
  - file: seconds to prepare the inputs (face finding, reference video preparation), to generate the motion,
    and frames/s of rendering + pasting back into the photo (the mp4 encoder included), warm (second run);
  - stream: the same speech fed as fast as it comes, in 0.2 s pieces, through `TalkingFace.stream`:
    first_frame_s = seconds from the first audio piece to the first frame (warm: programs compiled by a first
    pass), algorithmic_latency_s = the speech a chunk waits for (chunk_frames / 25), and steady frames/s after
    the first frame. Real-time streaming needs steady frames/s >= 25 (the issue's goal on a GPU: >= 25 frames/s
    and the first frame within 300 ms).

Prints one JSON object, then a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from mirrortalk_jax.data import media
from mirrortalk_jax.generate.reference import reference_clip
from mirrortalk_jax.generate.talking_face import FPS, SAMPLE_RATE, TalkingFace


def _stream(face: TalkingFace, portrait, reference, wav: np.ndarray, **settings) -> dict:
    piece = SAMPLE_RATE // 5
    start = time.perf_counter()
    first_at, frames, frames_after_first = None, 0, 0
    for batch in face.stream(portrait, reference, (wav[i:i + piece] for i in range(0, len(wav), piece)),
                             **settings):
        if first_at is None:
            first_at = time.perf_counter()
        else:
            frames_after_first += len(batch)
        frames += len(batch)
    end = time.perf_counter()
    steady = frames_after_first / (end - first_at) if frames_after_first else float("nan")
    return {"frames": frames, "first_frame_s": first_at - start, "total_s": end - start,
            "steady_frames_per_s": steady}


def benchmark(args) -> dict:
    face = TalkingFace.load(args.generator, args.renderer)
    sampling = {"num_steps": args.steps}
    t0 = time.perf_counter()
    image = media.read_image(args.photo, "--photo")
    portrait = face.portrait(image)
    t_portrait = time.perf_counter() - t0
    t0 = time.perf_counter()
    style = reference_clip(args.reference, face.basis) if args.reference else None
    t_reference = time.perf_counter() - t0
    reference = face.reference(style) if style else face.still_reference(portrait)
    wav = media.read_audio(args.audio, "--audio", SAMPLE_RATE)
    out: dict = {"device": str(jax.devices()[0]), "photo": list(image.shape[:2]), "audio_s": len(wav) / SAMPLE_RATE,
                 "steps": args.steps, "portrait_s": t_portrait, "reference_s": t_reference}
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in ("cold", "warm"):
            t0 = time.perf_counter()
            summary = face.write(Path(tmp) / "out.mp4", photo=args.photo, audio=args.audio,
                                 reference=args.reference or None, progress=False, **sampling)
            out[f"file_{attempt}"] = {"total_s": time.perf_counter() - t0, "frames": summary["frames"],
                                      "motion_s": summary["motion_seconds"],
                                      "render_frames_per_s": summary["render_frames_per_s"]}
    settings = dict(chunk_frames=args.chunk_frames, overlap_frames=args.overlap_frames, paste=True, **sampling)
    _stream(face, portrait, reference, wav, **settings)  # compiles every chunk shape
    out["stream"] = _stream(face, portrait, reference, wav, **settings)
    window = face.generator.window_frames or 64
    chunk = args.chunk_frames or (window - args.overlap_frames if window > 2 * args.overlap_frames else window)
    out["stream"]["chunk_frames"] = chunk
    out["stream"]["algorithmic_latency_s"] = chunk / FPS
    return out


def table(r: dict) -> str:
    s = r["stream"]
    return "\n".join([
        "| path | frames | motion s | render frames/s | first frame s | steady frames/s |",
        "|---|---|---|---|---|---|",
        f"| file (warm) | {r['file_warm']['frames']} | {r['file_warm']['motion_s']:.2f} | "
        f"{r['file_warm']['render_frames_per_s']:.1f} | | |",
        f"| stream (warm, chunks of {s['chunk_frames']}) | {s['frames']} | | | {s['first_frame_s']:.3f} "
        f"(+ {s['algorithmic_latency_s']:.2f} s of speech) | {s['steady_frames_per_s']:.1f} |",
        "", f"device {r['device']}; photo {r['photo'][1]}x{r['photo'][0]}, {r['audio_s']:.2f} s of speech, "
            f"{r['steps']} steps; face finding {r['portrait_s']:.2f} s, reference video {r['reference_s']:.2f} s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", required=True)
    parser.add_argument("--renderer", required=True)
    parser.add_argument("--photo", required=True)
    parser.add_argument("--audio", required=True)
    parser.add_argument("--reference", default="")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--chunk_frames", type=int, default=0)
    parser.add_argument("--overlap_frames", type=int, default=8)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    result = benchmark(args)
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    print()
    print(table(result))


if __name__ == "__main__":
    main()
