"""Speech-encoder feature extraction speed and memory: HuBERT-large at full size (random weights).

    python benchmarks/audio_features.py [--config mirrortalk_jax/configs/released/audio_encoders.py:hubert_large] [--seconds 5,20,60]
        [--chunk_frames 1000 --context_frames 100 --batch_size 1] [--repeats 2] [--compare_seconds 40]
        [--one_shot_memory_seconds 60,300]

What a user pays to run `mirrortalk features` on this machine: a model of the config's size with random weights
(speed does not depend on them) extracts the last hidden state of synthetic speech-like audio of each length with
`data.encoder_features.EncoderFeatures` (the job's code path: normalisation, windows, batches, stitching).

- seconds of compute per second of audio (median of `--repeats` warm runs; below 1 = faster than real time), and
  the first call of each length separately (it compiles the window shapes it has not seen: short clips use a
  smaller bucket, long audio always the full window);
- memory: the process's peak resident set (weights + XLA + buffers) and, from the compiler's memory analysis,
  the temporary bytes of one window call, which do not depend on the length, next to what one-shot processing of
  the whole clip would need (compiled, not run);
- `--compare_seconds`: chunked vs one-shot last hidden states on one clip longer than a window (relative max
  error), the cost of cutting the transformer's global attention. With random weights this is only indicative:
  trained encoders attend mostly locally, random ones do not.

Prints one JSON object, then a Markdown table. Timings on a shared CPU vary with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirrortalk_jax import base_config
from mirrortalk_jax.data import encoder_features as ef
from mirrortalk_jax.models.audio_encoders import wav2vec2 as audio_encoders
from mirrortalk_jax.models.registry import create_model

ROOT = Path(__file__).resolve().parents[1]


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced-sounding test signal: a 120-240 Hz harmonic tone with a syllable-rate envelope plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    f0 = 180 + 60 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    voice = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    return (0.2 * voice + 0.02 * rng.normal(size=t.size)).astype(np.float32)


def _mib(n: float) -> float:
    return round(n / 2**20, 1)


def window_memory(extractor: ef.EncoderFeatures, bucket: int) -> dict:
    """Compiler memory analysis of one window call of `bucket` frames (what a chunk costs on the device)."""
    model, size = extractor.model, extractor.chunk.batch_size
    samples = (bucket - 1) * model.hop + model.receptive_field
    x = jnp.zeros((size, samples), jnp.float32)
    mask = jnp.ones((size, bucket), bool)
    stats = jnp.zeros((size, model.first_conv_channels), jnp.float32)
    compiled = ef._hidden.lower(extractor._graphdef, extractor.layer, extractor._state, x, mask, stats,
                                stats).compile()
    analysis = compiled.memory_analysis()
    return {"frames": bucket, "temp_mib": _mib(analysis.temp_size_in_bytes),
            "argument_mib": _mib(analysis.argument_size_in_bytes)}


def one_shot_memory(model: nnx.Module, seconds: float, layer: int) -> float:
    """Temporary MiB the compiler plans for one-shot processing of `seconds` of audio (compiled, not run)."""
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda state, x: nnx.merge(graphdef, state).hidden_state(x, layer))
    x = jax.ShapeDtypeStruct((1, int(16000 * seconds)), jnp.float32)
    return _mib(fn.lower(state, x).compile().memory_analysis().temp_size_in_bytes)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=base_config.config_path("audio_encoders") + ":hubert_large")
    parser.add_argument("--seconds", default="5,20,60", help="audio lengths to time")
    parser.add_argument("--chunk_frames", type=int, default=1000)
    parser.add_argument("--context_frames", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=1, help="windows per call (1 suits a CPU)")
    parser.add_argument("--layer", type=int, default=-1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compare_seconds", type=float, default=40.0, help="0 skips the chunked/one-shot check")
    parser.add_argument("--one_shot_memory_seconds", default="60,300")
    args = parser.parse_args(argv)

    config = base_config.load_config_file(args.config)
    start = time.perf_counter()
    model = create_model(config.model, None, nnx.Rngs(0))
    init_s = time.perf_counter() - start
    chunk = ef.ChunkConfig(chunk_frames=args.chunk_frames, context_frames=args.context_frames,
                           batch_size=args.batch_size)
    extractor = ef.EncoderFeatures(model, args.layer, chunk)
    result = {"config": args.config, "device": str(jax.devices()[0].device_kind), "cpu_count": jax.device_count(),
              "params": audio_encoders.parameter_count(model), "init_s": round(init_s, 1),
              "chunk": {"chunk_frames": chunk.chunk_frames, "context_frames": chunk.context_frames,
                        "batch_size": chunk.batch_size, "buckets": list(chunk.bucket_sizes())},
              "lengths": []}
    for seconds in [float(s) for s in args.seconds.split(",") if s]:
        audio = speech_like(seconds)
        start = time.perf_counter()
        out = extractor(audio)
        first = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            extractor(audio)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        frames = out.shape[0]
        windows = 1 if frames <= chunk.window_frames else -(-frames // chunk.chunk_frames)
        result["lengths"].append({"seconds": seconds, "frames": frames, "windows": windows,
                                  "first_call_s": round(first, 2), "warm_s": round(median, 2),
                                  "s_per_audio_s": round(median / seconds, 3)})
        print(json.dumps(result["lengths"][-1]), flush=True)
    result["window_memory"] = [window_memory(extractor, b) for b in chunk.bucket_sizes()[-1:]]
    result["one_shot_temp_mib"] = {s: one_shot_memory(model, float(s), args.layer)
                                   for s in args.one_shot_memory_seconds.split(",") if s and float(s) > 0}
    if args.compare_seconds:
        audio = speech_like(args.compare_seconds, seed=1)
        chunked, whole = extractor(audio), ef.one_shot(model, audio, args.layer)
        err = np.abs(chunked - whole)
        result["chunked_vs_one_shot"] = {"seconds": args.compare_seconds,
                                         "max_rel": float(err.max() / np.abs(whole).max()),
                                         "mean_rel": float(err.mean() / np.abs(whole).mean())}
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result, indent=1))
    print(table(result))
    return result


def table(r: dict) -> str:
    rows = [(f"{r['config']}: {r['params'] / 1e6:.4g} M params on {r['device']}, windows of "
            f"{r['chunk']['chunk_frames']} + 2 x {r['chunk']['context_frames']} frames, batch {r['chunk']['batch_size']}"),
            "", "| audio (s) | 50 Hz frames | windows | first call (s) | warm (s) | s per audio s |",
            "|---:|---:|---:|---:|---:|---:|"]
    rows += [f"| {x['seconds']:g} | {x['frames']} | {x['windows']} | {x['first_call_s']} | {x['warm_s']} | "
             f"{x['s_per_audio_s']} |" for x in r["lengths"]]
    w = r["window_memory"][0]
    rows += ["", f"peak RSS {r['peak_rss_mib']} MiB; one window ({w['frames']} frames): {w['temp_mib']} MiB "
                 f"temporaries + {w['argument_mib']} MiB arguments, whatever the length; one-shot temporaries: "
             + ", ".join(f"{s} s -> {m} MiB" for s, m in r["one_shot_temp_mib"].items())]
    if "chunked_vs_one_shot" in r:
        c = r["chunked_vs_one_shot"]
        rows.append(f"chunked vs one-shot ({c['seconds']:g} s, random weights): max rel {c['max_rel']:.2e}, "
                    f"mean rel {c['mean_rel']:.2e}")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
