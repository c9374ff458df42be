"""MirrorTalk sampling speed: time per second of audio vs sampler steps and guidance; long audio in chunks.

    python benchmarks/sampling.py [--variant tiny] [--batch_size 1] [--window_frames 64]
        [--samplers ddim:5,ddim:10,ddim:20,ddim:50,dpm_solver:10,dpm_solver:20] [--repeats 5]
        [--audio_scale 1.5 --style_scale 2.0] [--long_seconds 10,30,60] [--long_sampler ddim:20]
        [--chunk_frames 64 --overlap_frames 8] [--no_one_shot_memory]

A MirrorTalk model of a mirrortalk_jax/configs/mirrortalk.py variant with random weights (speed does not depend on them; the
denoiser's parameters are perturbed so that its zero-initialised output layers carry signal) samples motion
for random log-mel audio features and a style code from a random reference clip.

1. One-shot windows (`MirrorTalk.sample` on `--window_frames` frames) for each `sampler:steps`, with guidance
   off (one denoiser pass per step) and on (`--audio_scale`, `--style_scale`: the uncond, audio and
   audio+style branches, stacked into one 3x larger batch per step). Each configuration is compiled ahead of
   time (compile seconds reported separately), run once to warm up, then timed over `--repeats` runs
   (median, to `block_until_ready`). Reported: ms per window, seconds of compute per second of audio (real-
   time factor; below 1 = faster than real time), ms per denoiser evaluation, compiled temp memory.
2. Long audio (`--long_seconds`) with `mirrortalk.generate` (chunks of `--chunk_frames`, each continuing the
   previous one through `--overlap_frames` inpainted frames) and `--long_sampler`, guidance on:
   - `generate` as a user calls it, timed end to end, with the compilations that happen inside the call
     counted and timed (jax.monitoring compile events);
   - the same chunk loop (`sample.diffusion.sample_long` over one compiled chunk function, built as
     `generate` builds it; checked equal to `generate`'s output) warmed up, so only sampling is timed: wall
     time should grow linearly with the audio length;
   - the compiled chunk function's `memory_analysis()` temp size for each length's chunk shapes, which must
     not depend on the length, next to the temp size one-shot sampling of the whole length would need
     (compiled, not run; skip with `--no_one_shot_memory`).

Prints one JSON object, then Markdown tables. The defaults (tiny variant) finish in a few minutes on a 2-core
CPU; `--variant base` works the same (slowly on a CPU: use `--samplers ddim:10 --repeats 1
--long_seconds 10,30`). Real inference speed is measured on a GPU/TPU with this same script, where the
batched guidance branches cost much less than 3x.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mirrortalk_jax import base_config

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def load_config(variant: str):
    return base_config.load_config_file(base_config.config_path("mirrortalk"), variant)


def parse_sampler(text: str) -> tuple[str, int]:
    name, sep, steps = text.strip().partition(":")
    if not sep:
        raise ValueError(f"samplers are given as name:steps (e.g. ddim:20), got {text!r}")
    return name, int(steps)


def temp_mib(compiled) -> float | None:
    try:
        mem = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    return None if mem is None else round(float(mem.temp_size_in_bytes) / MIB, 2)


class CompileCounter:
    """Counts XLA compilations and sums tracing + lowering + compile seconds (jax.monitoring events)."""

    EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")

    def __init__(self):
        self.compiles, self.seconds = 0, 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if event in self.EVENTS:
            self.seconds += duration
            self.compiles += event == self.EVENTS[-1]

    @contextlib.contextmanager
    def measure(self):
        """Yields a dict filled on exit with wall seconds and the compilations during the block."""
        out, c0, s0 = {}, self.compiles, self.seconds
        start = time.perf_counter()
        yield out
        out.update(wall_s=time.perf_counter() - start, compiles=self.compiles - c0, compile_s=self.seconds - s0)


def schedule_context(sampler: str):
    """Workaround: DPM-Solver++'s default "logsnr" grid reads the schedule's values at trace time, but
    `MirrorTalk.sample` builds its schedule inside the jitted function, where `jnp.asarray` gives tracers
    (TypeError "spacing 'logsnr' needs a concrete schedule"). Evaluating constants at trace time makes the
    schedule concrete; the compiled program is the same up to constant folding. `generate` has no such
    context, so `generate(..., sampler="dpm_solver")` fails until the library builds the schedule concretely."""
    return jax.ensure_compile_time_eval() if sampler == "dpm_solver" else contextlib.nullcontext()


def build_model(config, seed: int = 0):
    from flax import nnx

    from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
    from mirrortalk_jax.models import registry

    model = registry.create_model(config.model, SYNTHTALK_SPEC, nnx.Rngs(seed))  # the SDSE from its sub-config
    # Away from the adaLN-Zero start (x0 = 0 whatever the input); timing is the same either way.
    params = nnx.state(model.denoiser, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(seed + 1), len(jax.tree.leaves(params))))
    nnx.update(model.denoiser, jax.tree.map(lambda p: p + 0.02 * jax.random.normal(next(keys), p.shape), params))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--batch_size", type=int, default=1, help="independent sequences sampled together")
    parser.add_argument("--window_frames", type=int, default=64, help="one-shot window length (frames)")
    parser.add_argument("--samplers", default="ddim:5,ddim:10,ddim:20,ddim:50,dpm_solver:10,dpm_solver:20")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per one-shot configuration")
    parser.add_argument("--audio_scale", type=float, default=1.5)
    parser.add_argument("--style_scale", type=float, default=2.0)
    parser.add_argument("--long_seconds", default="10,30,60", help="audio lengths for chunked generation")
    parser.add_argument("--long_sampler", default="ddim:20")
    parser.add_argument("--chunk_frames", type=int, default=64)
    parser.add_argument("--overlap_frames", type=int, default=8)
    parser.add_argument("--no_one_shot_memory", action="store_true",
                        help="skip compiling one-shot sampling of the whole long audio (memory contrast)")
    args = parser.parse_args()

    from flax import nnx

    from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
    from mirrortalk_jax.sample import diffusion as samplers
    from mirrortalk_jax.sample import mirrortalk

    counter = CompileCounter()
    config = load_config(args.variant)
    fps, dim, feat = SYNTHTALK_SPEC.fps, SYNTHTALK_SPEC.dim, config.model.audio_dim
    b, ref_frames = args.batch_size, config.data.reference_frames
    model = build_model(config)
    graphdef, state = nnx.split(model)
    params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
    guidance_on = samplers.Guidance(audio_scale=args.audio_scale, style_scale=args.style_scale)
    guidances = {"off": samplers.NO_GUIDANCE, "on": guidance_on}

    keys = jax.random.split(jax.random.key(0), 4)
    reference = jax.random.normal(keys[0], (b, ref_frames, dim))
    reference_mask = jnp.ones((b, ref_frames), bool)
    style_fn = jax.jit(lambda s, r, m: nnx.merge(graphdef, s).style_code(r, m))
    style = jax.block_until_ready(style_fn(state, reference, reference_mask))

    # ----- 1. One-shot windows: steps x sampler x guidance -----
    def one_shot_fn(sampler: str, steps: int, guidance):
        def run(state, audio, style, key):
            with schedule_context(sampler):
                return mirrortalk.sample(nnx.merge(graphdef, state), audio, style, key, sampler=sampler,
                                         num_steps=steps, guidance=guidance)
        return jax.jit(run)

    window = args.window_frames
    audio = jax.random.normal(keys[1], (b, window, feat))
    one_shot = []
    for sampler, steps in map(parse_sampler, args.samplers.split(",")):
        for gname, guidance in guidances.items():
            start = time.perf_counter()
            compiled = one_shot_fn(sampler, steps, guidance).lower(state, audio, style, keys[2]).compile()
            compile_s = time.perf_counter() - start
            jax.block_until_ready(compiled(state, audio, style, keys[2]))  # warm-up
            times = []
            for r in range(args.repeats):
                start = time.perf_counter()
                jax.block_until_ready(compiled(state, audio, style, jax.random.fold_in(keys[2], r)))
                times.append(time.perf_counter() - start)
            wall = statistics.median(times)
            branches = len(samplers.guidance_branches(guidance.audio_scale, guidance.style_scale))
            one_shot.append({
                "sampler": sampler, "steps": steps, "guidance": gname, "branches": branches,
                "compile_s": round(compile_s, 2), "ms_per_window": round(1000 * wall, 2),
                "rtf": round(wall / (window / fps), 4),  # seconds of compute per second of audio
                "ms_per_denoiser_eval": round(1000 * wall / steps, 3),  # one batched call of all branches
                "temp_mib": temp_mib(compiled)})

    # ----- 2. Long audio in chunks -----
    long_sampler, long_steps = parse_sampler(args.long_sampler)
    sample_kwargs = dict(sampler=long_sampler, num_steps=long_steps, guidance=guidance_on)

    # The chunk function as `generate` builds it, but compiled once for every call and length.
    @jax.jit
    def chunk_fn(state, style, cond, known, known_mask, key):
        with schedule_context(long_sampler):
            return mirrortalk.sample(nnx.merge(graphdef, state), cond["audio"], style, key, known=known,
                                     known_mask=known_mask, **sample_kwargs)

    def chunked(audio_long, key, sample_chunk):
        return samplers.sample_long(sample_chunk, {"audio": audio_long}, audio_long.shape[1], args.chunk_frames,
                                    args.overlap_frames, key, motion_dim=dim)

    def dummy_chunk(cond, known, mask, key):  # compiles the loop's small glue ops for a new length, instantly
        return jnp.zeros(known.shape, jnp.float32)

    chunk_compiled: dict[tuple, object] = {}
    chunk_compile_s = None
    long_rows = []
    for seconds in (float(s) for s in args.long_seconds.split(",")):
        frames = int(round(seconds * fps))
        audio_long = jax.random.normal(jax.random.fold_in(keys[3], frames), (b, frames, feat))
        key = jax.random.fold_in(keys[2], frames)
        chunk = min(args.chunk_frames, frames)
        num_chunks = len(samplers.chunk_plan(frames, args.chunk_frames, args.overlap_frames))
        generate_error = None

        # Memory of the compiled chunk function for this length's chunk shapes.
        shape_key = (b, chunk)
        if shape_key not in chunk_compiled:
            start = time.perf_counter()
            chunk_compiled[shape_key] = chunk_fn.lower(
                state, style, {"audio": jax.ShapeDtypeStruct((b, chunk, feat), jnp.float32)},
                jax.ShapeDtypeStruct((b, chunk, dim), jnp.float32), jax.ShapeDtypeStruct((b, chunk), jnp.bool_),
                key).compile()
            chunk_compile_s = chunk_compile_s or round(time.perf_counter() - start, 2)
        one_shot_temp = None
        if not args.no_one_shot_memory:
            one_shot_temp = temp_mib(one_shot_fn(long_sampler, long_steps, guidance_on).lower(
                state, jax.ShapeDtypeStruct((b, frames, feat), jnp.float32), style, key).compile())

        # `generate` as a user calls it (whatever it compiles inside the call is counted).
        with counter.measure() as gen:
            try:
                reference_out = jax.block_until_ready(mirrortalk.generate(
                    model, audio_long, reference, reference_mask, key, chunk_frames=args.chunk_frames,
                    overlap_frames=args.overlap_frames, **sample_kwargs))
            except TypeError as e:  # see schedule_context
                reference_out, generate_error = None, str(e)
        # The same loop, warmed up: only sampling is timed.
        compiled = chunk_compiled[shape_key]
        jax.block_until_ready(chunked(audio_long, key, dummy_chunk))
        with counter.measure() as steady:
            out = jax.block_until_ready(chunked(
                audio_long, key, lambda cond, known, mask, k: compiled(state, style, cond, known, mask, k)))
        if reference_out is not None:
            np.testing.assert_allclose(np.asarray(out), np.asarray(reference_out), atol=1e-4, rtol=1e-4,
                                       err_msg="the benchmark's chunk loop differs from mirrortalk.generate")
        long_rows.append({
            "seconds": seconds, "frames": frames, "chunks": num_chunks,
            "generate_s": None if reference_out is None else round(gen["wall_s"], 3),
            "generate_compiles": gen["compiles"], "generate_compile_s": round(gen["compile_s"], 3),
            "generate_error": generate_error,
            "chunked_s": round(steady["wall_s"], 3), "chunked_compiles": steady["compiles"],
            "s_per_audio_s": round(steady["wall_s"] / seconds, 4),
            "ms_per_chunk": round(1000 * steady["wall_s"] / num_chunks, 2),
            "chunk_temp_mib": temp_mib(chunk_compiled[shape_key]), "one_shot_temp_mib": one_shot_temp})

    temps = {row["chunk_temp_mib"] for row in long_rows if row["frames"] >= args.chunk_frames}  # full chunks
    result = {
        "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
        "variant": args.variant, "params": params, "batch_size": b, "fps": fps,
        "guidance_on": {"audio_scale": args.audio_scale, "style_scale": args.style_scale},
        "one_shot": {"window_frames": window, "repeats": args.repeats, "rows": one_shot},
        "long": {"sampler": long_sampler, "steps": long_steps, "guidance": "on", "chunk_frames": args.chunk_frames,
                 "overlap_frames": args.overlap_frames, "chunk_compile_s": chunk_compile_s, "rows": long_rows,
                 "chunk_temp_constant": len(temps) == 1,
                 # asserted to 1e-4 for every length where generate ran
                 "chunked_matches_generate": all(r["generate_error"] is None for r in long_rows)},
    }
    print(json.dumps(result))

    print(f"\n{args.variant} ({params:,} parameters), batch {b}, one-shot windows of {window} frames "
          f"({window / fps:.2f} s) on {result['backend']} ({result['device_kind']}); guidance on = audio "
          f"{args.audio_scale}, style {args.style_scale}; rtf = compute seconds per audio second\n")
    print("| sampler | steps | guidance | branches | compile s | ms/window | rtf | ms/denoiser call | temp MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in one_shot:
        print(f"| {r['sampler']} | {r['steps']} | {r['guidance']} | {r['branches']} | {r['compile_s']} | "
              f"{r['ms_per_window']} | {r['rtf']} | {r['ms_per_denoiser_eval']} | {r['temp_mib']} |")
    print(f"\nlong audio: {long_sampler} {long_steps} steps, guidance on, chunks of {args.chunk_frames} frames with "
          f"{args.overlap_frames} overlap; chunk function compiled once in {chunk_compile_s} s\n")
    print("| audio s | frames | chunks | generate() s | its compiles (s) | chunked s (warm) | s per audio s | "
          "ms/chunk | chunk temp MiB | one-shot temp MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in long_rows:
        gen_s = "fails (generate_error)" if r["generate_s"] is None else r["generate_s"]
        print(f"| {r['seconds']:g} | {r['frames']} | {r['chunks']} | {gen_s} | {r['generate_compiles']} "
              f"({r['generate_compile_s']}) | {r['chunked_s']} | {r['s_per_audio_s']} | {r['ms_per_chunk']} | "
              f"{r['chunk_temp_mib']} | {'-' if r['one_shot_temp_mib'] is None else r['one_shot_temp_mib']} |")


if __name__ == "__main__":
    main()
