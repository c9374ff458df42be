"""`mirrortalk features ENCODER INPUT... --out OUT`: HuBERT / wav2vec 2.0 features, frame-aligned.

ENCODER is a converted checkpoint (tools/convert_hf_audio.py) or a Hugging Face folder (config.json +
safetensors, converted in memory). INPUT is either one dataset directory in the record schema, giving a new
dataset at OUT with `audio_features` (T, 2H) per record (train on it with data.audio_feature=precomputed), or
audio/video files, giving OUT/<name>.npz each with the 50 Hz hidden states (MimicTalk's input), the 25 fps
pairs, and with --dreamtalk_windows DreamTalk's 11-row windows. See docs/data.md.

Files: <name> is the file's stem, or where two inputs share one, its path from their common folder
("a/speech.wav" -> a__speech.npz). A file that cannot be used (missing, unreadable, no samples, NaN) is reported
with the reason and the others are still processed; the command then exits with status 2 and a summary. Each
.npz is written to a temporary file and renamed into place, so an interrupted run leaves no partial output.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path


def load_encoder(path: str):
    """(model, model config) from a converted checkpoint or a Hugging Face folder."""
    from mirrortalk_jax.convert import hf_audio, foreign
    from mirrortalk_jax.runs import converted, loader
    from mirrortalk_jax.models.audio_encoders.wav2vec2 import MODEL_TYPES

    if converted.is_converted(path):
        loaded = loader.load_model(path)
        model, config = loaded.model, loaded.model_config
    elif (Path(path) / "config.json").is_file():
        hf_config = hf_audio.read_hf_config(path)
        model, config = hf_audio.convert(foreign.read_tensors(path), hf_config, source=path), \
            hf_audio.model_config(hf_config)
    else:
        raise FileNotFoundError(f"{path}: neither a converted checkpoint (model.json) nor a Hugging Face folder "
                                "(config.json + safetensors)")
    if config.name not in MODEL_TYPES:
        raise ValueError(f"{path} holds a {config.name!r} model, not a speech encoder ({', '.join(MODEL_TYPES)})")
    return model, config


def _features(args) -> int:
    from mirrortalk_jax.data import encoder_features as ef

    inputs = [Path(p) for p in args.inputs]
    is_dataset = [(p / "dataset_info.json").is_file() for p in inputs]
    if any(is_dataset) and len(inputs) > 1:
        raise ValueError("give either one dataset directory or any number of audio files, not both")
    model, config = load_encoder(args.encoder)
    chunk = ef.ChunkConfig(chunk_frames=args.chunk_frames, context_frames=args.context_frames,
                           batch_size=args.batch_size)
    extractor = ef.EncoderFeatures(model, args.layer, chunk)
    info = {**ef.describe(config, args.layer, chunk), "encoder_checkpoint": str(args.encoder)}
    start = time.perf_counter()
    if is_dataset[0]:
        splits = [s for s in args.splits.split(",") if s] if args.splits else None
        path = ef.write_dataset(inputs[0], args.out, extractor, info, splits=splits, drop_frames=args.drop_frames)
        print(f"dataset with {config.name} features at {path} ({time.perf_counter() - start:.1f} s)")
    else:
        failed: list[tuple[Path, Exception]] = []
        written = ef.write_audio_features(inputs, args.out, extractor, info, windows=args.dreamtalk_windows,
                                          on_error=lambda path, e: _report_failure(failed, path, e))
        print(f"wrote {len(written)} feature file(s) to {args.out} ({time.perf_counter() - start:.1f} s)")
        if failed:
            print(f"mirrortalk: error: {len(failed)} of {len(inputs)} file(s) failed: "
                  f"{', '.join(str(p) for p, _ in failed)}", file=sys.stderr)
            return 2
    logging.getLogger(__name__).info("compiled window shapes: %d", ef.compiled_window_shapes())
    return 0


def _report_failure(failed: list[tuple[Path, Exception]], path: Path, error: Exception) -> None:
    """Says at once which file failed and why, and keeps it for the summary."""
    reason = str(error) if str(path) in str(error) else f"{path}: {error}"  # media errors name the file already
    print(f"mirrortalk: skipped {reason}", file=sys.stderr)
    failed.append((path, error))


def add_parser(jobs) -> None:
    p = jobs.add_parser("features", help="speech-encoder (HuBERT/wav2vec2) features for a dataset or audio files",
                        description=__doc__)
    p.add_argument("encoder", help="converted encoder checkpoint, or a Hugging Face folder")
    p.add_argument("inputs", nargs="+", help="one dataset directory, or audio/video files")
    p.add_argument("--out", required=True, help="new dataset directory, or folder for <name>.npz files")
    p.add_argument("--layer", type=int, default=-1,
                   help="hidden state to keep: 0 = transformer input .. L = last (-1, what MimicTalk/DreamTalk use)")
    p.add_argument("--chunk_frames", type=int, default=1000, help="50 Hz frames produced per window (20 s)")
    p.add_argument("--context_frames", type=int, default=100,
                   help="extra frames of audio each window sees on each side (long audio only)")
    p.add_argument("--batch_size", type=int, default=4, help="windows per forward pass")
    p.add_argument("--splits", default="", help="dataset mode: comma-separated splits (default: all)")
    p.add_argument("--drop_frames", action="store_true", help="dataset mode: leave the video frames out of the copy")
    p.add_argument("--dreamtalk_windows", action="store_true",
                   help="audio mode: also store DreamTalk's (T, 11, H) windows")
    p.set_defaults(func=_features)
