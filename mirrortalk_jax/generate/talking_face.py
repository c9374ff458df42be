"""Talking-face video from a photo, speech and a short video of how the person talks: the Python API behind
`mirrortalk generate --model mirrortalk|mimictalk`.

    face = TalkingFace.load("runs/hdtf/mirrortalk", "runs/hdtf/renderer")
    summary = face.write("out.mp4", photo="portrait.jpg", audio="speech.wav", reference="style.mp4")

    portrait = face.portrait(media.read_image("portrait.jpg"))      # the face found, aligned and cropped
    reference = face.reference(reference_clip("style.mp4", face.basis))
    for frames in face.stream(portrait, reference, audio_chunks):   # bounded latency, see `stream`
        ...

Pipeline: the audio becomes the generator's frame-aligned features (data.audio_features); the generator
(sample/generators.py, any model trained on the real-face motion space of `mirrortalk data prepare`) makes every
motion channel, head pose and eyelids included, from the audio and the reference's style; the renderer (ours or
the PIRenderer port, trained on the same motion space) animates the photo's face crop; each frame is pasted back
into the photo (generate/paste_back.py) unless asked for the crop. Frames are rendered batch by batch straight
into the encoder: memory does not grow with the audio's length.

The generator run carries its motion basis (the dataset's fitted mesh basis, in its checkpoint metadata), so
the photo's face and the reference video are projected into the motion space it was trained on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from mirrortalk_jax.data import audio_features, media, schema, video
from mirrortalk_jax.data.prepare.motion_space import MeshBasis
from mirrortalk_jax.generate import paste_back
from mirrortalk_jax.generate.portrait import Portrait, find_portrait
from mirrortalk_jax.generate.reference import ReferenceClip, reference_clip
from mirrortalk_jax.runs import loader
from mirrortalk_jax.sample import frames as frames_lib
from mirrortalk_jax.sample import generators

FPS = schema.FPS
SAMPLE_RATE = schema.AUDIO_SAMPLE_RATE
SAMPLES_PER_FRAME = round(SAMPLE_RATE / FPS)


def motion_basis(path: str | os.PathLike, what: str = "--generator") -> MeshBasis:
    """The real-face motion basis a run was trained with: from its checkpoint metadata, or (older runs) from the
    dataset its config names."""
    stored = loader.stored_model(path, what=what)
    text = stored.motion_basis
    if text is None:
        dataset_dir = stored.config.get("data", {}).get("dataset_dir")
        try:
            from mirrortalk_jax.data import sources

            text = sources.load_info(dataset_dir).metadata.get("motion_basis") if dataset_dir else None
        except sources.DatasetError:
            text = None
    if text is None:
        raise ValueError(f"{what} {path} records no real-face motion basis: it was not trained on a dataset made "
                         "by `mirrortalk data prepare` (SynthTalk's motion cannot animate a photo)")
    return MeshBasis.from_json(text)


@dataclasses.dataclass
class TalkingFace:
    generator: generators.MotionGenerator
    renderer: Any  # a renderer module (models/renderer interface)
    basis: MeshBasis
    image_size: int

    @classmethod
    def load(cls, generator_path: str | os.PathLike, renderer_path: str | os.PathLike, *,
             expect: str | None = None) -> TalkingFace:
        """A generator run and a renderer run (or converted checkpoint) of one motion space; `expect` the
        generator's model name. Mismatches are refused before any weights are read, naming both."""
        basis = motion_basis(generator_path)
        gen_spec = loader.stored_model(generator_path, expect=expect, what="--generator").spec
        ren_spec = loader.stored_model(renderer_path, what="--renderer").spec
        if gen_spec is None or basis.spec.channels != gen_spec.channels:
            raise ValueError(f"--generator {generator_path}: its motion basis does not make its motion space")
        if ren_spec is None or ren_spec.channels != gen_spec.channels:
            raise ValueError(f"--renderer {renderer_path} was trained on the motion space "
                             f"{None if ren_spec is None else (ren_spec.name, ren_spec.dim)}; --generator "
                             f"{generator_path} makes {(gen_spec.name, gen_spec.dim)}: train the renderer on the "
                             "generator's dataset")
        generator = loader.load_generator(generator_path, expect=expect, what="--generator")
        renderer = loader.load_model(renderer_path, what="--renderer").model
        if not hasattr(renderer, "render_frames"):
            raise ValueError(f"--renderer {renderer_path} holds a {type(renderer).__name__}, not a renderer")
        size = renderer.image_size
        return cls(generator, renderer, basis, int(size[0] if isinstance(size, tuple | list) else size))

    # ----- Inputs -----

    def portrait(self, photo: np.ndarray, what: str = "photo") -> Portrait:
        return find_portrait(photo, self.image_size, basis=self.basis, what=what)

    def features(self, wav: np.ndarray, num_frames: int | None = None) -> np.ndarray:
        """(N,) 16 kHz speech -> (T, F) the generator's frame-aligned features, T = N // 640 frames."""
        num_frames = len(wav) // SAMPLES_PER_FRAME if num_frames is None else num_frames
        return audio_features.audio_frame_features(wav, num_frames, kind=self.generator.audio_feature or "log_mel",
                                                   fps=FPS).astype(np.float32)

    def reference(self, clip: ReferenceClip) -> generators.Reference:
        """A reference video's motion (and its audio's features) as the generator reads it (batch 1)."""
        frames = max(self.generator.reference_frames, 1)
        return generators.Reference.of_clips([clip.motion], frames,
                                             [self.features(clip.audio, len(clip.motion))])

    def still_reference(self, portrait: Portrait) -> generators.Reference:
        """Without a reference video: the photo's own face, one still frame, is the style (a calm speaker)."""
        return generators.Reference.of_clips([portrait.motion[None]], max(self.generator.reference_frames, 1))

    # ----- Motion and frames -----

    def motion(self, wav: np.ndarray, reference: generators.Reference, *, seed: int = 0,
               **sampling: Any) -> np.ndarray:
        """(T, D) motion for the whole speech, in memory independent of its length: generators that chunk long
        audio themselves (MirrorTalk's inpainted chunks, DreamTalk's per-frame windows) get it whole, the others
        (ICS-A2M) window by window through `motion_chunks`."""
        audio = self.features(wav)
        if not len(audio):
            raise ValueError(f"{len(wav) / SAMPLE_RATE:.3f} s of audio is shorter than one video frame")
        if "chunk_frames" in self.generator.accepts:
            return self.generator.generate(audio[None], reference, jax.random.key(seed), **sampling)[0]
        return np.concatenate(list(self.motion_chunks(reference, [wav], seed=seed, **sampling)))

    def _render(self, portrait: Portrait, motion: np.ndarray, batch_size: int,
                paster: paste_back.PasteBack | None) -> Iterator[np.ndarray]:
        for crops in frames_lib.render_batches(self.renderer, portrait.crop, portrait.motion, motion,
                                               batch_size=batch_size):
            yield np.stack([paster(c) for c in crops]) if paster is not None else crops

    def _paster(self, portrait: Portrait, paste: bool) -> paste_back.PasteBack | None:
        return paste_back.PasteBack(portrait.photo, portrait.transform, self.image_size) if paste else None

    def frames(self, portrait: Portrait, motion: np.ndarray, *, batch_size: int = 16,
               paste: bool = True) -> Iterator[np.ndarray]:
        """(n, H, W, 3) uint8 batches: the photo with the animated face pasted back (or the crops)."""
        return self._render(portrait, motion, batch_size, self._paster(portrait, paste))

    def stream(self, portrait: Portrait, reference: generators.Reference, audio_chunks: Iterable[np.ndarray], *,
               chunk_frames: int = 0, overlap_frames: int = 8, seed: int = 0, paste: bool = True,
               batch_size: int = 8, **sampling: Any) -> Iterator[np.ndarray]:
        """Frames as speech arrives: audio chunks (any sizes, 16 kHz) in, (n, H, W, 3) uint8 batches out, each
        motion chunk of `motion_chunks` rendered and yielded as soon as it is generated. Latency: one chunk of
        speech plus its generation and rendering; memory: one chunk."""
        paster = self._paster(portrait, paste)
        for motion in self.motion_chunks(reference, audio_chunks, chunk_frames=chunk_frames,
                                         overlap_frames=overlap_frames, seed=seed, **sampling):
            yield from self._render(portrait, motion, batch_size, paster)

    def motion_chunks(self, reference: generators.Reference, audio_chunks: Iterable[np.ndarray], *,
                      chunk_frames: int = 0, overlap_frames: int = 8, seed: int = 0,
                      **sampling: Any) -> Iterator[np.ndarray]:
        """Motion as speech arrives: audio chunks (any sizes, 16 kHz) in, (n, D) motion pieces out, in order.

        Every `chunk_frames` frames of speech (default: the generator's training window less the overlap) become
        one motion chunk, generated on its audio plus the `overlap_frames` frames before it; those frames, held
        back from the previous chunk, are cross-faded between the two, so chunks join without a jump. A chunk's
        features are computed with a margin of earlier audio, so they equal the whole-file features away from the
        very start.
        """
        # Default: a chunk plus its overlap fill the generator's training window (one window per chunk).
        window = self.generator.window_frames or 64
        chunk = int(chunk_frames or (window - overlap_frames if window > 2 * overlap_frames else window))
        if not 0 <= overlap_frames < chunk:
            raise ValueError(f"overlap_frames must be in [0, chunk_frames = {chunk}), got {overlap_frames}")
        keep = (overlap_frames + 8) * SAMPLES_PER_FRAME  # audio kept for the next chunk: overlap + a margin
        pending = np.zeros(0, np.float32)  # audio not yet turned into motion
        history = np.zeros(0, np.float32)  # the end of the audio already used
        held = np.zeros((0, 0), np.float32)  # the previous chunk's last frames of motion, not yet given out
        key = jax.random.key(seed)
        index = 0

        def next_chunk(audio: np.ndarray, new_frames: int, final: bool) -> np.ndarray:
            nonlocal held, history, index
            context = np.concatenate([history, audio])
            lead = len(history) // SAMPLES_PER_FRAME  # frames of context before the new ones
            shared = min(len(held), lead)
            features = self.features(context, lead + new_frames)[lead - shared:]
            motion = self.generator.generate(features[None], reference, jax.random.fold_in(key, index),
                                             **sampling)[0]
            if shared:
                weight = (np.arange(1, shared + 1, dtype=np.float32) / (shared + 1))[:, None]
                motion[:shared] = (1 - weight) * held[-shared:] + weight * motion[:shared]
            hold = 0 if final else min(overlap_frames, len(motion) - shared)
            held = motion[len(motion) - hold:]
            history = context[-keep:]
            index += 1
            return motion[:len(motion) - hold]

        for piece in audio_chunks:
            piece = np.asarray(piece, np.float32).reshape(-1)
            if not np.all(np.isfinite(piece)):
                raise ValueError("audio chunk: NaN or infinite samples")
            pending = np.concatenate([pending, piece])
            while len(pending) >= chunk * SAMPLES_PER_FRAME:
                audio, pending = pending[:chunk * SAMPLES_PER_FRAME], pending[chunk * SAMPLES_PER_FRAME:]
                yield next_chunk(audio, chunk, final=False)
        rest = len(pending) // SAMPLES_PER_FRAME
        if rest:
            yield next_chunk(pending[:rest * SAMPLES_PER_FRAME], rest, final=True)
        elif len(held):
            yield held

    # ----- Files -----

    def write(self, out: str | os.PathLike, *, photo: str | os.PathLike, audio: str | os.PathLike,
              reference: str | os.PathLike | None, seed: int = 0, paste: bool = True, batch_size: int = 16,
              save_motion: str | os.PathLike | None = None, progress: bool = True, **sampling: Any) -> dict:
        """One talking-face mp4 from files; returns a summary (frames, seconds, speeds, notes). Every input is
        read and checked before anything is generated; messages name the file. Without `reference` the photo's
        own still face is the style (`still_reference`)."""
        image = media.read_image(photo, "--image")
        wav = media.read_audio(audio, "--audio", SAMPLE_RATE)
        portrait = self.portrait(image, f"--image {photo}")
        style = reference_clip(reference, self.basis, what="--reference") if reference else None
        start = time.perf_counter()
        motion = self.motion(wav, self.reference(style) if style else self.still_reference(portrait), seed=seed,
                             **sampling)
        motion_seconds = time.perf_counter() - start
        if save_motion:
            np.save(save_motion, motion)
        target = Path(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with tqdm(total=len(motion), desc=f"render {target.name}", unit="frame", disable=not progress) as bar:
            def counted():
                for batch in self.frames(portrait, motion, batch_size=batch_size, paste=paste):
                    bar.update(len(batch))
                    yield batch
            video.write_mp4(target, counted(), FPS, audio=wav[:len(motion) * SAMPLES_PER_FRAME],
                            sample_rate=SAMPLE_RATE)
        render_seconds = time.perf_counter() - start
        height, width = (image.shape[:2] if paste else (self.image_size, self.image_size))
        notes = [portrait.note] if portrait.note else []
        if style is None:
            notes.append("no reference video: the photo's still face is the style")
        elif style.note != "ok":
            notes.append(f"reference: {style.note}")
        return {"out": str(target), "frames": len(motion), "seconds": len(motion) / FPS, "width": width,
                "height": height, "motion_seconds": round(motion_seconds, 2),
                "render_frames_per_s": round(len(motion) / max(render_seconds, 1e-9), 2), "notes": notes}


def run_jobs(face: TalkingFace, jobs_path: str | os.PathLike, **defaults: Any) -> list[dict]:
    """Every job of a JSONL file ({"image", "audio", "reference", "out"[, "seed"]} per line), each with
    `defaults` for what it does not say. A bad job is reported ({"line", "error"}) and the others still run."""
    results = []
    for number, line in enumerate(Path(jobs_path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            job = json.loads(line)
            missing = [k for k in ("image", "audio", "reference", "out") if k not in job]
            if missing:
                raise ValueError(f"missing {missing}")
            settings = {**defaults, **{k: v for k, v in job.items() if k not in ("image", "audio", "reference",
                                                                                 "out")}}
            results.append({"line": number, **face.write(job["out"], photo=job["image"], audio=job["audio"],
                                                         reference=job["reference"], **settings)})
        except (ValueError, TypeError, OSError, media.MediaError) as e:
            results.append({"line": number, "error": f"{jobs_path}:{number}: {e}"})
    return results
