"""MirrorTalk vs baselines on SynthTalk tiny: lip sync (M-LMD, F-LMD, motion-expert LSE-C) and style (StyleSim).

    python benchmarks/mirrortalk_quality.py [--workdir runs/mirrortalk_quality] [--ddim_steps 20]
        [--expert_steps 300 --sdse_steps 300 --mirrortalk_steps 400 --regression_steps 200 --eval_sdse_steps 300]
        [--expert_run DIR --sdse_run DIR --mirrortalk_run DIR --regression_run DIR --eval_sdse_run DIR]

About 5 minutes on a 2-core CPU with the tiny configs' own step counts (a rerun reuses the finished runs and
takes about 30 s). Prints one JSON object and a Markdown table on stdout (progress goes to stderr).

1. Data: SynthTalk `tiny` under WORKDIR/data (built if missing), or --dataset_dir.
2. Training with the repository's configs (`trainer.train_and_evaluate`), each stage in WORKDIR/runs/<name>
   (a run already at its step count is reused, a shorter one resumed; --<name>_run points at any run):
     motion_expert       configs/motion_expert.py:tiny                      stage 0
     style_encoder       configs/style_encoder.py:tiny, content encoder = the expert      stage 1 (SDSE)
     mirrortalk          configs/mirrortalk.py:tiny, SDSE + expert loaded and frozen       stage 2
     regression          configs/synthtalk_regression.py:tiny               audio-only baseline
     style_encoder_eval  configs/style_encoder.py:tiny, train.seed=--eval_seed, random content projection:
                         the INDEPENDENT judge for StyleSim (never the generator's own SDSE)
3. Evaluation on `heldout_sentences` and `heldout_speakers`, every clip whole:
     Ground Truth    the clip's motion;
     Mean motion     the per-channel mean motion of the training split, every frame;
     Audio-only      the regression model on the clip's audio;
     MirrorTalk      `generate` (DDIM, --ddim_steps, chunks of the config's window_frames with
                     --overlap_frames known frames) from the clip's audio and a style reference = the next
                     clip of the same speaker in the split (cyclic), centre-cropped to reference_frames.
     MirrorTalk (other-speaker ref)   control (--control): the same, with a reference of another speaker.
   Scores per clip, averaged over clips:
     M-LMD / F-LMD   evaluate.landmarks on pixel landmarks of the dataset's image size (64 px for tiny): the
                     prediction through `synthtalk_landmarks` with the clip's own face_shape, against the
                     record's landmarks_2d; per frame centred on the set's own mean;
     LSE-C / LSE-D / offset   models.motion_expert.sync_offset_confidence with the stage-0 expert, motion vs
                     the clip's audio; |offset| is the mean absolute best offset in frames. --vshift defaults
                     to 10, not syncnet_python's 15: the procedure zero-pads the audio embeddings, and with
                     unit-norm embeddings a zero row is at distance 1, closer than a typical misaligned window;
                     at +-15 on clips of 30-57 windows that padding wins for several ground-truth clips (their
                     best offset lands on the edge) while at 10 every ground-truth clip comes out at offset 0;
     StyleSim        cosine of the judge's embeddings of the sequence and of its (true-speaker) reference;
     Retrieval       top-1: the nearest reference crop (cosine, judge) among those of every clip in the split,
                     references cut from the query's own clip excluded, is of the clip's speaker.

All clips of a split are generated in one batch (audio edge-padded to the longest clip; the padded frames
are dropped), so `generate` compiles once per split.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("motion_expert", "style_encoder", "mirrortalk", "regression", "style_encoder_eval")
# Command-line name of each stage (--<name>_run, --<name>_steps).
FLAG = {"motion_expert": "expert", "style_encoder": "sdse", "mirrortalk": "mirrortalk", "regression": "regression",
        "style_encoder_eval": "eval_sdse"}
METHODS = ("Ground Truth", "Mean motion", "Audio-only regression", "MirrorTalk")
CONTROL = "MirrorTalk (other-speaker ref)"


def load_config(name: str, variant: str = "tiny"):
    spec = importlib.util.spec_from_file_location(f"config_{name}", ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/mirrortalk_quality")
    parser.add_argument("--data_root", default="", help="SynthTalk data root (default WORKDIR/data)")
    parser.add_argument("--dataset_dir", default="", help="an already built dataset (skips the build)")
    parser.add_argument("--variant", default="tiny", help="SynthTalk variant and config variant")
    for stage in STAGES:
        parser.add_argument(f"--{FLAG[stage]}_run", dest=f"{stage}_run", default="",
                            help=f"reuse this trained {stage} run instead of WORKDIR/runs/{stage}")
        parser.add_argument(f"--{FLAG[stage]}_steps", dest=f"{stage}_steps", type=int, default=0,
                            help=f"{stage} training steps (0: the config's own)")
    parser.add_argument("--eval_seed", type=int, default=1, help="train.seed of the independent StyleSim encoder")
    parser.add_argument("--splits", default="heldout_sentences,heldout_speakers")
    parser.add_argument("--ddim_steps", type=int, default=20)
    parser.add_argument("--chunk_frames", type=int, default=0, help="0: the MirrorTalk config's window_frames")
    parser.add_argument("--overlap_frames", type=int, default=8)
    parser.add_argument("--vshift", type=int, default=10,
                        help="largest offset searched by LSE-C (frames); syncnet_python's 15 is too large for "
                             "SynthTalk tiny's 34-61 frame clips (see the module docstring)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--control", type=int, default=1, help="1: add the other-speaker-reference control row")
    return parser.parse_args(argv)


# ----- Training -----


def stage_config(stage: str, args, runs: dict[str, Path], dataset_dir: Path):
    if stage == "motion_expert":
        config = load_config("motion_expert", args.variant)
    elif stage == "style_encoder":
        config = load_config("style_encoder", args.variant)
        config.model.content_encoder_workdir = str(runs["motion_expert"])
    elif stage == "mirrortalk":
        config = load_config("mirrortalk", args.variant)
        config.model.style_encoder_workdir = str(runs["style_encoder"])
        config.model.motion_expert_workdir = str(runs["motion_expert"])
    elif stage == "regression":
        config = load_config("synthtalk_regression", args.variant)
    elif stage == "style_encoder_eval":
        config = load_config("style_encoder", args.variant)
        config.train.seed = args.eval_seed  # own seed, own workdir, random content projection: independent
    else:
        raise ValueError(stage)
    config.data.dataset_dir = str(dataset_dir)
    steps = getattr(args, f"{stage}_steps")
    if steps:
        config.train.num_steps = steps
        config.train.warmup_steps = min(config.train.warmup_steps, max(steps // 10, 1))
    return config


def latest_step(run_dir: Path) -> int | None:
    from mirrortalk_jax.train import checkpointing

    if not (run_dir / "checkpoints").is_dir():
        return None
    ckpt = checkpointing.Checkpointer(run_dir / "checkpoints", async_save=False)
    try:
        return ckpt.latest_step()
    finally:
        ckpt.close()


def train_stages(args, workdir: Path, dataset_dir: Path) -> tuple[dict[str, Path], dict[str, float]]:
    from mirrortalk_jax.train import trainer

    runs, seconds = {}, {}
    for stage in STAGES:
        given = getattr(args, f"{stage}_run")
        runs[stage] = Path(given) if given else workdir / "runs" / stage
        if given:
            continue
        config = stage_config(stage, args, runs, dataset_dir)
        # A finished run is reused as is. (Not through the trainer's resume: restoring a run with frozen
        # subtrees, i.e. SDSE with a content encoder run and MirrorTalk stage 2, currently fails on the
        # optimizer's MaskedNodes in checkpointing.abstract_with_shardings.)
        done = latest_step(runs[stage])
        if done is not None and done >= config.train.num_steps:
            print(f"[mirrortalk_quality] reusing {stage} (step {done}) in {runs[stage]}", file=sys.stderr)
            continue
        start = time.perf_counter()
        trainer.train_and_evaluate(config, runs[stage])
        seconds[stage] = round(time.perf_counter() - start, 1)
        print(f"[mirrortalk_quality] trained {stage} in {seconds[stage]} s -> {runs[stage]}", file=sys.stderr)
    if runs["style_encoder_eval"].resolve() == runs["style_encoder"].resolve():
        raise ValueError("the StyleSim encoder must not be the generator's own SDSE run")
    return runs, seconds


# ----- Evaluation -----


def load_split(dataset_dir: Path, split: str, audio_feature: str, reference_frames: int):
    import numpy as np

    from mirrortalk_jax.data.audio_features import audio_frame_features
    from mirrortalk_jax.data.sources import ClipSource

    source = ClipSource(dataset_dir, split)
    clips = []
    for i in range(len(source)):
        r = source[i]
        motion = np.asarray(r["motion"], np.float32)
        clips.append({
            "clip_id": r["clip_id"].decode() if isinstance(r["clip_id"], bytes) else str(r["clip_id"]),
            "speaker": int(r["speaker_index"]),
            "motion": motion,
            "landmarks_2d": np.asarray(r["landmarks_2d"], np.float32),
            "face_shape": np.asarray(json.loads(r["metadata"])["face_shape"], np.float64),
            "audio": audio_frame_features(r["audio"], motion.shape[0], kind=audio_feature,
                                          fps=float(r["fps"])).astype(np.float32),
        })
    # Style references: the next clip of the same speaker (cyclic); the control: the next clip of the next
    # speaker (in sorted speaker order), so every reference clip is used as often as the others.
    speakers = sorted({c["speaker"] for c in clips})
    by_speaker = {s: [i for i, c in enumerate(clips) if c["speaker"] == s] for s in speakers}
    for i, c in enumerate(clips):
        own = by_speaker[c["speaker"]]
        if len(own) < 2:
            raise ValueError(f"speaker {c['speaker']} has a single clip in {split}: no reference clip")
        c["ref_index"] = own[(own.index(i) + 1) % len(own)]
        other = by_speaker[speakers[(speakers.index(c["speaker"]) + 1) % len(speakers)]]
        c["control_ref_index"] = other[own.index(i) % len(other)] if len(speakers) > 1 else None

    def crop(motion):  # centre crop of reference_frames frames, padded and masked when shorter
        n = motion.shape[0]
        start = max((n - reference_frames) // 2, 0)
        piece = motion[start:start + reference_frames]
        out = np.zeros((reference_frames, motion.shape[1]), np.float32)
        out[:len(piece)] = piece
        return out, np.arange(reference_frames) < len(piece)

    refs = [crop(c["motion"]) for c in clips]
    image_size = int(source.info.metadata["image_size"])
    return clips, refs, image_size


def pad_batch(arrays):
    """[(T_i, F)] -> (B, T_max, F), the end edge-padded (repeats the last frame, usually silence)."""
    import numpy as np

    t_max = max(a.shape[0] for a in arrays)
    return np.stack([np.pad(a, ((0, t_max - a.shape[0]), (0, 0)), mode="edge") for a in arrays])


def generate_mirrortalk(model, clips, refs, ref_key: str, args, chunk_frames: int, seed: int):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mirrortalk_jax.models import mirrortalk

    audio = pad_batch([c["audio"] for c in clips])
    ref_motion = np.stack([refs[c[ref_key]][0] for c in clips])
    ref_mask = np.stack([refs[c[ref_key]][1] for c in clips])
    out = mirrortalk.generate(model, jnp.asarray(audio), jnp.asarray(ref_motion), jnp.asarray(ref_mask),
                              jax.random.key(seed), chunk_frames=chunk_frames, overlap_frames=args.overlap_frames,
                              num_steps=args.ddim_steps)
    out = np.asarray(out)
    return [out[i, :c["motion"].shape[0]] for i, c in enumerate(clips)]


def score(preds, clips, refs, image_size, expert, judge, vshift: int) -> dict:
    """Per-method averages over the clips of a split."""
    import numpy as np

    from mirrortalk_jax.evaluate import landmarks, style_similarity, sync
    from mirrortalk_jax.models.motion_expert import sync_offset_confidence

    m_lmd, f_lmd, syncs = [], [], []
    for pred, c in zip(preds, clips):
        lm = landmarks.synthtalk_landmarks(pred, c["face_shape"], image_size)
        m_lmd.append(landmarks.m_lmd(lm, c["landmarks_2d"]))
        f_lmd.append(landmarks.f_lmd(lm, c["landmarks_2d"]))
        syncs.append(sync_offset_confidence(expert, pred, c["audio"], vshift=vshift))
    s = sync.summarize(syncs)
    gen_emb = judge.embed(list(preds))
    # StyleSim is always against the clip's true-speaker reference (the style it should have).
    ref_emb = judge.embed([refs[c["ref_index"]][0][refs[c["ref_index"]][1]] for c in clips])
    gallery = judge.embed([m[k] for m, k in refs])  # reference crop of every clip of the split
    labels = np.array([c["speaker"] for c in clips])
    exclude = np.eye(len(clips), dtype=bool)  # a clip's own crop never answers for it
    return {
        "m_lmd_px": float(np.mean(m_lmd)), "f_lmd_px": float(np.mean(f_lmd)),
        "lse_c": s["lse_c"], "lse_d": s["lse_d"], "mean_abs_offset": s["mean_abs_offset"],
        "offset_zero_fraction": s["offset_zero_fraction"],
        "style_sim": style_similarity.style_similarity(gen_emb, ref_emb),
        "retrieval_acc": style_similarity.retrieval_accuracy(gen_emb, labels, gallery, labels, exclude),
        "num_clips": len(clips),
    }


def evaluate(args, runs: dict[str, Path], dataset_dir: Path) -> tuple[dict, dict]:
    import numpy as np
    from flax import nnx

    from mirrortalk_jax.data.sources import ClipSource
    from mirrortalk_jax.evaluate.style_similarity import StyleEvaluator
    from mirrortalk_jax.train import pretrained

    seconds = {}
    start = time.perf_counter()
    generator = pretrained.load_model(runs["mirrortalk"])
    expert = pretrained.load_model(runs["motion_expert"]).model
    regression = pretrained.load_model(runs["regression"]).model
    judge = StyleEvaluator.from_run(runs["style_encoder_eval"], generator_config=generator.config)
    cfg = generator.config
    chunk_frames = args.chunk_frames or int(cfg.data.window_frames)
    train = ClipSource(dataset_dir, cfg.data.train_split)
    mean_motion = np.concatenate([train[i]["motion"] for i in range(len(train))]).mean(0).astype(np.float32)
    regress = nnx.jit(lambda model, audio: model(audio))
    seconds["load"] = round(time.perf_counter() - start, 1)

    results = {}
    for split in args.splits.split(","):
        clips, refs, image_size = load_split(dataset_dir, split, cfg.data.audio_feature,
                                             int(cfg.data.reference_frames))
        preds = {
            "Ground Truth": [c["motion"] for c in clips],
            "Mean motion": [np.broadcast_to(mean_motion, c["motion"].shape).copy() for c in clips],
            "Audio-only regression": [np.asarray(regress(regression, c["audio"][None]))[0] for c in clips],
        }
        start = time.perf_counter()
        preds["MirrorTalk"] = generate_mirrortalk(generator.model, clips, refs, "ref_index", args, chunk_frames,
                                                  args.seed)
        seconds[f"generate_{split}"] = round(time.perf_counter() - start, 1)
        if args.control and all(c["control_ref_index"] is not None for c in clips):
            preds[CONTROL] = generate_mirrortalk(generator.model, clips, refs, "control_ref_index", args,
                                                 chunk_frames, args.seed)
        start = time.perf_counter()
        results[split] = {name: score(p, clips, refs, image_size, expert, judge, args.vshift)
                          for name, p in preds.items()}
        results[split]["_image_size"] = image_size
        results[split]["_speakers"] = len({c["speaker"] for c in clips})
        seconds[f"score_{split}"] = round(time.perf_counter() - start, 1)
    return results, seconds


def markdown(results: dict) -> str:
    cols = [("M-LMD (px) ↓", "m_lmd_px", "{:.3f}"), ("F-LMD (px) ↓", "f_lmd_px", "{:.3f}"),
            ("LSE-C ↑", "lse_c", "{:.3f}"), ("LSE-D ↓", "lse_d", "{:.3f}"),
            ("mean abs offset", "mean_abs_offset", "{:.2f}"), ("offset 0", "offset_zero_fraction", "{:.2f}"),
            ("StyleSim ↑", "style_sim", "{:.3f}"), ("Retrieval ↑", "retrieval_acc", "{:.2f}")]
    lines = ["| split | method | " + " | ".join(c[0] for c in cols) + " |",
             "|---|---|" + "---:|" * len(cols)]
    for split, rows in results.items():
        methods = {k: v for k, v in rows.items() if not k.startswith("_")}
        label = f"{split} ({rows['_speakers']} spk, {next(iter(methods.values()))['num_clips']} clips)"
        for name, m in methods.items():
            lines.append(f"| {label} | {name} | " + " | ".join(fmt.format(m[key]) for _, key, fmt in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    total = time.perf_counter()
    workdir = Path(args.workdir).expanduser()
    workdir.mkdir(parents=True, exist_ok=True)

    from mirrortalk_jax.data.synthtalk import builder

    # stdout carries only the report: TFDS and friends print progress there, send it to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        start = time.perf_counter()
        if args.dataset_dir:
            dataset_dir = Path(args.dataset_dir)
        else:
            dataset_dir = builder.build(args.data_root or workdir / "data", args.variant)
        build_s = round(time.perf_counter() - start, 1)
        runs, train_s = train_stages(args, workdir, dataset_dir)
        results, eval_s = evaluate(args, runs, dataset_dir)
    report = {
        "benchmark": "mirrortalk_quality", "variant": args.variant, "dataset_dir": str(dataset_dir),
        "cpu_count": os.cpu_count(), "runs": {k: str(v) for k, v in runs.items()},
        "settings": {"ddim_steps": args.ddim_steps, "chunk_frames": args.chunk_frames or "window_frames",
                     "overlap_frames": args.overlap_frames, "vshift": args.vshift, "seed": args.seed,
                     "eval_seed": args.eval_seed,
                     "steps": {s: getattr(args, f"{s}_steps") or "config" for s in STAGES}},
        "seconds": {"build": build_s, "train": train_s, **eval_s,
                    "total": round(time.perf_counter() - total, 1)},
        "results": results,
    }
    print(json.dumps(report))
    print()
    print(markdown(results))
    return report


if __name__ == "__main__":
    main()
