"""Talking-face videos made from real material for the prepare tests: scikit-image's astronaut photo (a real
face), moved with a known head roll, and espeak-ng speech; plus the encodings a corpus in the wild holds."""

from __future__ import annotations

import fractions
import functools
from pathlib import Path

import av
import numpy as np
import skimage.data
from PIL import Image

from mirrortalk_jax.data import video
from mirrortalk_jax.data.synthtalk import speech

FACE_CENTRE = (230, 130)  # the astronaut's face in the 512x512 photo
HEAD = (90, 0, 370, 280)  # a square around her head: the face is about a third of the frame


@functools.lru_cache(maxsize=1)
def sentence() -> np.ndarray:
    """~3.5 s of espeak-ng speech, 16 kHz float32."""
    return speech.synthesize("The quick brown fox jumps over the lazy dog near the river bank.").audio


def roll_degrees(num_frames: int) -> np.ndarray:
    """The in-plane head rotation applied to frame t (degrees, counter-clockwise)."""
    return 6.0 * np.sin(np.arange(num_frames) / 7.0)


def frames(num_frames: int, size: int = 256, *, brightness: float = 1.0, face_scale: float = 1.0,
           second_face: bool = False, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """(T, size, size, 3): the astronaut's head rolling by `roll_degrees`, swaying sideways (with a second face:
    (T, size, 5 / 3 size, 3), a smaller still copy on the right)."""
    photo = Image.fromarray(skimage.data.astronaut())
    out = []
    for t, angle in enumerate(roll_degrees(num_frames)):
        image = photo.rotate(float(angle), resample=Image.BILINEAR, center=FACE_CENTRE,
                             translate=(4 * np.sin(t / 5.0), 0))
        image = image.crop(HEAD).resize((round(size * face_scale),) * 2, Image.BILINEAR)
        width = size + (size * 2) // 3 if second_face else size
        canvas = Image.new("RGB", (width, size), (90, 90, 90))
        canvas.paste(image, shift)  # a shift moves the head partly out of the frame
        if second_face:  # a second, smaller person on the right, standing still
            small = photo.crop(HEAD).resize(((size * 2) // 3,) * 2, Image.BILINEAR)
            canvas.paste(small, (size, size // 3))
        out.append(np.asarray(canvas, np.float32) * brightness)
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def talking_video(path: Path, seconds: float = 1.6, **kwargs) -> Path:
    """An mp4 (H.264 + AAC) of `frames` at 25 fps with the sentence's first `seconds` of speech."""
    audio = sentence()[:round(seconds * 16000)]
    video.write_mp4(path, frames(round(seconds * 25), **kwargs), 25.0, audio, 16000)
    return path


def encode(path: Path, images: np.ndarray | None, *, fps: float = 25.0, audio: np.ndarray | None = None,
           codec: str = "libx264", pix_fmt: str = "yuv420p", rotation: int | None = None,
           times: np.ndarray | None = None, container_format: str | None = None, stereo_48k: bool = False) -> Path:
    """A file in any encoding PyAV writes: codec / pixel format (10-bit HEVC), a display rotation, frame times
    in seconds (variable frame rate), audio (AAC, 16 kHz mono, or the same sound on both channels at 48 kHz);
    `images` None: an audio-only file."""
    with av.open(str(path), "w", format=container_format) as out:
        stream = None
        if images is not None:
            stream = out.add_stream(codec, rate=int(round(fps)) if times is None else 1000)
            stream.width, stream.height, stream.pix_fmt = images.shape[2], images.shape[1], pix_fmt
            if times is not None:
                stream.time_base = fractions.Fraction(1, 1000)
            if rotation is not None:
                stream.set_display_rotation(rotation)
        rate = 48000 if stereo_48k else 16000
        astream = None
        if audio is not None:
            astream = out.add_stream("aac", rate=rate)
            astream.layout = "stereo" if stereo_48k else "mono"
        for i, image in enumerate(images if images is not None else []):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if times is not None:
                frame.pts = int(round(times[i] * 1000))
            for packet in stream.encode(frame):
                out.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
        if astream is not None:
            samples = np.interp(np.arange(len(audio) * rate // 16000) * 16000 / rate, np.arange(len(audio)), audio)
            channels = np.stack([samples, samples]) if stereo_48k else samples[None]
            chunk = 1024
            for start in range(0, channels.shape[1], chunk):
                part = np.ascontiguousarray(channels[:, start:start + chunk].T.reshape(1, -1), np.float32)
                frame = av.AudioFrame.from_ndarray(part, format="flt", layout=astream.layout.name)
                frame.sample_rate, frame.pts = rate, start
                for packet in astream.encode(frame):
                    out.mux(packet)
            for packet in astream.encode():
                out.mux(packet)
    return path
