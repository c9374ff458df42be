"""LSE-C / LSE-D throughput: the SyncNet embedder (released size, random weights) on a synthetic clip.

    python benchmarks/syncnet_lse.py [--variant released] [--frames 24] [--chunk 8] [--repeats 2]

Prints one JSON object: windows/s of the whole embedder call (MFCC + both towers, compiled; first call
excluded), of the lip tower alone run over whole clips (`lip_sequence`, what the embedder does) and run window by
window (`forward_lip` on stacked 5-frame windows, what syncnet_python does), and of the audio tower.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirrortalk_jax import base_config
from mirrortalk_jax.evaluate import lse
from mirrortalk_jax.models import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rate(fn, count: int, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn())
    return count * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="released")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    config = base_config.load_config_file(base_config.config_path("syncnet"), args.variant).model
    model = registry.create_model(config, None, nnx.Rngs(0))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(args.frames, 224, 224, 3), dtype=np.uint8)
    audio = (rng.normal(size=args.frames * lse.SAMPLES_PER_FRAME) * 3000).astype(np.int16)
    n = lse.num_windows(args.frames, len(audio))
    embedder = lse.SyncNetEmbedder(model, chunk=args.chunk)

    graphdef, state = nnx.split(model)
    seq = jax.jit(lambda s, x: nnx.merge(graphdef, s).lip_sequence(x))
    win = jax.jit(lambda s, x: nnx.merge(graphdef, s).forward_lip(x))
    aud = jax.jit(lambda s, x: nnx.merge(graphdef, s).forward_aud(x))
    clip = jnp.asarray(frames[:args.chunk + 4][None], jnp.float32)
    windows = jnp.stack([clip[0, i:i + 5] for i in range(args.chunk)])
    mfcc = jnp.asarray(rng.normal(size=(args.chunk, 13, 20)), jnp.float32)
    out = {
        "device": str(jax.devices()[0]), "variant": args.variant, "frames": args.frames, "windows": n,
        "chunk": args.chunk,
        "embedder_windows_per_s": _rate(lambda: embedder(frames, audio), n, args.repeats),
        "lip_sequence_windows_per_s": _rate(lambda: seq(state, clip), args.chunk, args.repeats),
        "lip_window_by_window_windows_per_s": _rate(lambda: win(state, windows), args.chunk, args.repeats),
        "audio_windows_per_s": _rate(lambda: aud(state, mfcc), args.chunk, args.repeats),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
