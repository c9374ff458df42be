"""`mirrortalk generate --model mirrortalk|mimictalk|dreamtalk ...`: a talking-face mp4 (with the audio) from speech
and a photo.

MirrorTalk or MimicTalk's ICS-A2M, trained on a dataset made by `mirrortalk data prepare`, with a renderer trained
on the same dataset (ours or the PIRenderer port: real_corpus.py's renderer stages):

    mirrortalk generate --model mirrortalk --generator runs/hdtf/mirrortalk --renderer runs/hdtf/renderer \
        --image photo.jpg --audio speech.wav --reference how_she_talks.mp4 --out out.mp4

--image is any photo: its largest face is found, aligned and cropped as prepare crops video frames, animated, and
pasted back into the photo with a soft mask (--no_paste_back: the crop). --reference is a short video of the
talking style: it is prepared like a training video and projected into the run's motion space; the generator
makes every channel from audio and style, head pose and blinks included. --batch JOBS.jsonl runs many jobs
({"image", "audio", "reference", "out"} per line; a bad job is reported and the others run). The Python API is
generate/talking_face.py.

DreamTalk from its released weights (convert them once with tools/convert_dreamtalk.py, and the wav2vec2
encoder with tools/convert_hf_audio.py), as the original's inference_for_demo_video.py:

    mirrortalk generate --model dreamtalk --denoiser ckpt/dreamtalk/denoiser --renderer ckpt/dreamtalk/renderer \\
        --audio speech.wav --audio_encoder ckpt/wav2vec2 --image portrait.png \\
        --style_clip M030_front_happy_level3_001.mat --pose RichardShelby_front_neutral_level1_001.mat \\
        --out out.mp4

Audio: --audio_features, 50 Hz wav2vec2 rows (N, 1024) in a .npy (or the .npz of `mirrortalk features`), or
--audio_encoder, a converted wav2vec2 (or Hugging Face folder) run on --audio here. The video has N // 2
frames at 25 fps (rows // audio_stride for other denoisers); --audio is its sound track.
Style: --style_clip, a 3DMM .mat/.npz (`coeff` (T, 257): expression = columns 80:144) or a .npy (T, 64) of
expression; or --style_predictor, a trained dreamtalk_style_predictor run, with --identity, the speaker's
(68, 3) landmarks .npy, when it conditions on identity.
Pose (not generated): --pose, a 3DMM .mat/.npz (angles 224:227, translation 254:257 of `coeff`, crop = last 3
of `transform_params`) or a .npy (T, 9); cut to the video, or its last pose repeated, as the original. Without
--pose, the style clip's own pose when it is a 3DMM file with transform_params, else the original's frontal
"no_move" pose.
Image: a face crop at the renderer's size (256x256 for the released one), as the original takes it, or any photo:
its largest face is found and cropped as `data prepare` crops frames, and the frames are pasted back into the photo
(--no_paste_back: the crops). A square photo without a face found is taken as a crop and resized.

Checkpoints: converted folders (model.json) or training workdirs; the wrong kind, mismatched widths, missing
files or NaNs exit with status 2 and a message naming the input.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

MODELS = ("mirrortalk", "mimictalk", "dreamtalk")
GENERATOR_NAMES = {"mirrortalk": "mirrortalk", "mimictalk": "mimictalk_a2m"}  # --model -> registry name

log = logging.getLogger(__name__)


def _audio_rows(args, width: int, stride: int, wav: np.ndarray) -> np.ndarray:
    """The denoiser's audio rows (N, width), from --audio_features or computed from the wav (--audio_encoder)."""
    from mirrortalk_jax.data import encoder_features
    from mirrortalk_jax.generate import inputs

    row_rate = 25.0 * stride
    if args.audio_features:
        rows = inputs.load_audio_rows(args.audio_features, width, "--audio_features")
        seconds, wav_seconds = len(rows) / row_rate, len(wav) / encoder_features.SAMPLE_RATE
        # Features of another recording would animate the wrong speech: their lengths disagree.
        if abs(seconds - wav_seconds) > 0.2:
            raise ValueError(f"--audio_features {args.audio_features}: {len(rows)} rows = {seconds:.2f} s at "
                             f"{row_rate:g} Hz, but --audio {args.audio} lasts {wav_seconds:.2f} s; features of "
                             "that recording expected")
        return rows
    from mirrortalk_jax.commands.features import load_encoder

    if row_rate != encoder_features.FEATURE_RATE:
        raise ValueError(f"--audio_encoder makes {encoder_features.FEATURE_RATE:g} Hz rows; the denoiser takes "
                         f"{stride} row(s) per 25 fps frame ({row_rate:g} Hz): give --audio_features")
    encoder, config = load_encoder(args.audio_encoder)
    if config.hidden_size != width:
        raise ValueError(f"--audio_encoder {args.audio_encoder} makes {config.hidden_size}-wide features; the "
                         f"denoiser reads {width}-wide rows (DreamTalk: wav2vec2-large, 1024)")
    start = time.perf_counter()
    rows = encoder_features.EncoderFeatures(encoder, layer=-1)(wav)  # the last hidden state, as the original
    log.info("%s features: %d rows in %.1f s", config.name, len(rows), time.perf_counter() - start)
    return rows


def _pose(args):
    from mirrortalk_jax.generate import inputs

    if args.pose:
        return inputs.load_pose(args.pose, "--pose"), f"--pose {args.pose}"
    if args.style_clip and inputs.has_pose(args.style_clip):
        return inputs.load_pose(args.style_clip, "--style_clip"), f"the style clip's pose ({args.style_clip})"
    return None, "the frontal pose"


def _stored(path: str, name: str, what: str):
    """(model config, motion space) stored at `path`, which must hold a `name` model; no weights are read."""
    from mirrortalk_jax.runs import loader

    stored = loader.stored_model(path, expect=name, what=what)
    return stored.model_config, stored.spec


def _dreamtalk_portrait(args, size: tuple[int, int]):
    """(the renderer's input crop, a PasteBack into the photo or None). A photo of exactly the renderer's size is
    a face crop, used as given (the original's input); any other photo has its largest face found and cropped as
    prepare crops frames, and the frames go back into the photo unless --no_paste_back. A photo with no face found
    but the renderer's aspect ratio is taken as a crop and resized (the original's other accepted input)."""
    from mirrortalk_jax.data import media
    from mirrortalk_jax.generate import inputs

    photo = media.read_image(args.image, "--image", min_side=min(media.MIN_SIDE, *size))
    h, w = size
    if photo.shape[:2] == (h, w) or h != w:
        return inputs.load_image(args.image, size, "--image"), None
    from mirrortalk_jax.generate import paste_back
    from mirrortalk_jax.generate.portrait import find_portrait

    try:
        found = find_portrait(photo, h, what=f"--image {args.image}")
    except ValueError as e:
        if photo.shape[0] == photo.shape[1]:
            print(f"note: {e}; taking the square photo as a face crop")
            return inputs.load_image(args.image, size, "--image"), None
        raise ValueError(f"{e}; or give a face crop of the renderer's size {w}x{h}") from e
    if found.note:
        print(f"note: {found.note}")
    return found.crop, None if args.no_paste_back else paste_back.PasteBack(photo, found.transform, h)


def _generate_dreamtalk(args) -> int:
    from mirrortalk_jax.data import encoder_features, video
    from mirrortalk_jax.generate import inputs
    from mirrortalk_jax.runs import loader
    from mirrortalk_jax.generate.dreamtalk import FPS, renderer_coefficients
    from mirrortalk_jax.generate.render import iter_frames
    from mirrortalk_jax.models.dreamtalk.net import dims_from_config

    if args.identity and not args.style_predictor:
        raise ValueError("--identity goes with --style_predictor (a style clip carries the style itself)")
    # Every input is checked against the checkpoints' configs before any weights are read.
    denoiser_config, spec = _stored(args.denoiser, "dreamtalk", "--denoiser")
    dims, stride = dims_from_config(denoiser_config, spec), int(denoiser_config.get("audio_stride", 1))
    renderer_config, _ = _stored(args.renderer, "pirenderer", "--renderer")
    if renderer_config.coeff_nc != dims.motion_dim + inputs.POSE_DIM:
        raise ValueError(f"--renderer {args.renderer} reads {renderer_config.coeff_nc} coefficients per frame; "
                         f"--denoiser {args.denoiser} makes {dims.motion_dim} + {inputs.POSE_DIM} pose: they do "
                         "not belong together")
    wav = encoder_features.read_audio(args.audio, "--audio")
    image, paste = _dreamtalk_portrait(args, tuple(renderer_config.get("image_size", (256, 256))))
    style_clip = identity = None
    if args.style_clip:
        style_clip = inputs.load_style_clip(args.style_clip, dims.motion_dim, "--style_clip")
    else:
        predictor_config, _ = _stored(args.style_predictor, "dreamtalk_style_predictor", "--style_predictor")
        if predictor_config.get("use_identity", True):
            if not args.identity:
                raise ValueError(f"--style_predictor {args.style_predictor} conditions on the speaker's identity: "
                                 f"give --identity, a ({predictor_config.num_landmarks}, 3) landmarks .npy")
            identity = inputs.load_identity(args.identity, int(predictor_config.num_landmarks), "--identity")
    pose, pose_source = _pose(args)
    rows = _audio_rows(args, dims.audio_dim, stride, wav)

    denoiser = loader.load_model(args.denoiser, expect="dreamtalk", what="--denoiser").model
    renderer = loader.load_model(args.renderer, expect="pirenderer", what="--renderer").model
    predictor = predictor_frames = None
    if args.style_predictor:
        run = loader.load_model(args.style_predictor, expect="dreamtalk_style_predictor", what="--style_predictor")
        predictor = run.model
        # The clip length it was trained on, when the run says (converted checkpoints carry no data config).
        predictor_frames = run.config.get("data", {}).get("window_frames")
        if predictor.style_dim != dims.d_model:
            raise ValueError(f"--style_predictor {args.style_predictor} makes {predictor.style_dim}-d style codes; "
                             f"--denoiser {args.denoiser} takes {dims.d_model}-d ones: train the predictor on "
                             "that denoiser's style encoder")
    start = time.perf_counter()
    coefficients, _ = renderer_coefficients(
        denoiser, renderer, rows, style_clip=style_clip, style_predictor=predictor, identity=identity,
        predictor_frames=predictor_frames, pose=pose, steps=args.steps, guidance=args.guidance, seed=args.seed)
    log.info("generated %d frames of motion with %s in %.1f s", len(coefficients), pose_source,
             time.perf_counter() - start)
    target = Path(args.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    if args.save_motion:
        np.save(args.save_motion, coefficients)
    # Rendered batch by batch straight into the encoder: host memory holds one batch of frames, not the video.
    frames = iter_frames(renderer, image, coefficients, args.render_batch)
    if paste is not None:
        frames = (np.stack([paste(f) for f in batch]) for batch in frames)
        image = paste.photo
    video.write_mp4(target, frames, FPS, audio=wav,
                    sample_rate=encoder_features.SAMPLE_RATE)
    t, (h, w) = len(coefficients), image.shape[:2]
    print(f"wrote {target} ({t} frames, {w}x{h}, {t / FPS:.2f} s at {FPS:g} fps, "
          f"audio {len(wav) / encoder_features.SAMPLE_RATE:.2f} s)")
    return 0


def _require(args, names: tuple[str, ...]) -> None:
    missing = [f"--{n}" for n in names if not getattr(args, n)]
    if missing:
        raise ValueError(f"--model {args.model} needs {' and '.join(missing)}")


def _refuse(args, names: tuple[str, ...]) -> None:
    given = [f"--{n}" for n in names if getattr(args, n)]
    if given:
        raise ValueError(f"{', '.join(given)}: DreamTalk's options; --model {args.model} does not read them")


def _generate_from_reference(args) -> int:
    """MirrorTalk / ICS-A2M + a renderer of their motion space (generate/talking_face.py)."""
    from mirrortalk_jax.generate.talking_face import TalkingFace, run_jobs

    _require(args, ("generator", "renderer", "out") if not args.batch else ("generator", "renderer"))
    _refuse(args, ("denoiser", "audio_features", "audio_encoder", "style_clip", "style_predictor", "identity",
                   "pose"))
    if not args.batch:
        _require(args, ("image", "audio", "reference"))
    face = TalkingFace.load(args.generator, args.renderer, expect=GENERATOR_NAMES[args.model])
    settings = {"seed": args.seed, "paste": not args.no_paste_back, "batch_size": args.render_batch,
                "num_steps": args.steps or 0}
    if args.guidance is not None:
        settings["guidance"] = {"style": args.guidance}
    if args.batch:
        results = run_jobs(face, args.batch, **settings)
        failed = [r for r in results if "error" in r]
        for r in results:
            print(r["error"] if "error" in r else f"line {r['line']}: wrote {r['out']} ({r['frames']} frames)")
        print(f"{len(results) - len(failed)} of {len(results)} jobs done")
        return 1 if failed else 0
    summary = face.write(args.out, photo=args.image, audio=args.audio, reference=args.reference,
                         save_motion=args.save_motion, **settings)
    for note in summary["notes"]:
        print(f"note: {note}")
    print(f"wrote {summary['out']} ({summary['frames']} frames, {summary['width']}x{summary['height']}, "
          f"{summary['seconds']:.2f} s at 25 fps; motion in {summary['motion_seconds']:.1f} s, rendering "
          f"{summary['render_frames_per_s']:.1f} frames/s)")
    return 0


def _generate(args) -> int:
    if (args.steps is not None and args.steps < 1) or args.render_batch < 1:
        raise ValueError(f"--steps and --render_batch must be >= 1, got {args.steps} and {args.render_batch}")
    if args.model == "dreamtalk":
        _require(args, ("denoiser", "renderer", "audio", "image", "out"))
        if not (args.audio_features or args.audio_encoder) or not (args.style_clip or args.style_predictor):
            raise ValueError("--model dreamtalk needs --audio_features or --audio_encoder, and --style_clip or "
                             "--style_predictor")
        if args.generator or args.reference or args.batch:
            raise ValueError("--generator, --reference and --batch go with --model mirrortalk or mimictalk")
        args.steps = args.steps or 10
        args.guidance = 1.0 if args.guidance is None else args.guidance
        return _generate_dreamtalk(args)
    return _generate_from_reference(args)


def add_parser(jobs) -> None:
    p = jobs.add_parser("generate", help="talking-head mp4 from audio + a portrait with converted or trained models",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=MODELS, help="which method generates")
    p.add_argument("--generator", help="mirrortalk / mimictalk: the trained run (on a prepared real-face dataset)")
    p.add_argument("--denoiser",
                   help="DreamTalk denoiser: converted checkpoint (tools/convert_dreamtalk.py: OUT/denoiser) or run")
    p.add_argument("--renderer",
                   help="renderer run of the generator's motion space; DreamTalk: its PIRenderer (converted "
                        "checkpoint, tools/convert_dreamtalk.py: OUT/renderer, or run)")
    p.add_argument("--audio", help="speech (any audio/video file FFmpeg reads); the mp4's sound")
    p.add_argument("--reference", help="mirrortalk / mimictalk: a short video of the talking style to imitate")
    p.add_argument("--no_paste_back", action="store_true",
                   help="write the animated face crop instead of the whole photo")
    p.add_argument("--batch", help="mirrortalk / mimictalk: a JSONL file of jobs (image, audio, reference, out)")
    audio = p.add_mutually_exclusive_group()
    audio.add_argument("--audio_features", help="50 Hz feature rows of --audio: .npy (N, 1024) or a "
                                                "`mirrortalk features` .npz")
    audio.add_argument("--audio_encoder", help="converted wav2vec2 (tools/convert_hf_audio.py) or Hugging Face "
                                               "folder: features computed here")
    p.add_argument("--image", help="any photo with a face (DreamTalk: also a face crop at the renderer's size, "
                                   "used as given)")
    style = p.add_mutually_exclusive_group()
    style.add_argument("--style_clip", help="reference style: 3DMM .mat/.npz (coeff) or .npy (frames, 64)")
    style.add_argument("--style_predictor", help="trained dreamtalk_style_predictor run (style from the audio)")
    p.add_argument("--identity", help="with --style_predictor: the speaker's (68, 3) landmarks .npy")
    p.add_argument("--pose", help="head pose: 3DMM .mat/.npz or .npy (frames, 9) (default: see above)")
    p.add_argument("--steps", type=int, help="DDIM / ODE steps (default: the run's own; DreamTalk's original: 10)")
    p.add_argument("--guidance", type=float,
                   help="style guidance scale (default: the run's own; DreamTalk's original: 1.0; 0 = neutral "
                        "style)")
    p.add_argument("--seed", type=int, default=0, help="diffusion noise seed")
    p.add_argument("--render_batch", type=int, default=16, help="frames per renderer call (the original: 16)")
    p.add_argument("--save_motion", help="also save the generated motion (DreamTalk: the renderer's 73 coefficients "
                                         "per frame) to this .npy")
    p.add_argument("--out", help="the mp4 to write")
    p.set_defaults(func=_generate)
