"""Readers of user media files (paths, images, audio), shared by every entry point that takes a user's file.

Every reader names the file and what is wrong with it, so a bad input is the user's to fix without a traceback:

* Paths (`check_file`): a missing file is a FileNotFoundError ("no such file"); a directory, a symlink loop, a
  broken symlink, an unreadable file or a non-regular file (fifo, device) is a MediaError that says which.
* Images (`read_image`): (H, W, 3) uint8 RGB as it is displayed: the EXIF orientation applied; 16-bit and
  32-bit grayscale scaled by their full range (65535), not clipped at 255; palette and grayscale expanded to
  RGB; transparency composited on white. Decompression bombs, images too small to be a face crop and corrupt
  or truncated files are refused; images longer than `max_side` are downscaled (JPEGs decoded at a reduced
  DCT scale, so a huge photo is never decoded whole).
* Audio (`read_audio`): any audio or video file FFmpeg reads -> (N,) float32 mono at 16 kHz (FFmpeg's
  swresample downmixes and resamples, as `ffmpeg -ar 16000 -ac 1`; `MonoDownmix`). Files without samples (empty, header only,
  truncated before the first sample) and NaN / inf samples are refused; a file cut short is decoded up to the
  cut with a warning saying how many seconds were kept of those it declares.

Incomplete media (audio here, video in data/video.py) is reported the same way, by `report_incomplete`.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz: what the speech encoders and audio frontends read
# Images: a face crop below MIN_SIDE pixels (short side) carries too little to animate; above MAX_SIDE (long side)
# it is downscaled, since every model here reads <= 512 px crops; above MAX_PIXELS decoded pixels it is refused,
# as decoding it would take gigabytes (an 8192^2 RGB image is 200 MB).
MIN_SIDE = 64
MAX_SIDE = 4096
MAX_PIXELS = 8192 * 8192
# Incomplete media: kept seconds this far below the declared duration are reported (AAC priming and frame
# rounding make complete files differ by a few tens of ms).
INCOMPLETE_TOLERANCE_S = 0.05


class MediaError(ValueError):
    """A file exists but cannot be used: it cannot be opened or decoded, or what it holds is unusable."""


# ----- Paths -----

def _open_for_reading(path: str) -> None:
    """Opens and closes `path`: the only reliable test of read permission (ACLs, root, network filesystems)."""
    os.close(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)))


def check_file(path: str | os.PathLike, what: str = "file") -> Path:
    """`path` as a Path if it is a readable regular file (symlinks followed), else an error naming it and why.

    Raises:
      FileNotFoundError: nothing at `path` ("no such file"), or a symlink to nothing ("broken symlink").
      MediaError: a directory, a symlink loop, a fifo / device / socket, or a file without read permission.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(f"{what} {path}: broken symlink (to {os.readlink(path)}): no such file") \
                from None
        raise FileNotFoundError(f"{what} {path}: no such file") from None
    except PermissionError:
        raise MediaError(f"{what} {path}: permission denied (a folder on the path cannot be searched)") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise MediaError(f"{what} {path}: symlink loop (the link resolves to itself)") from None
        if e.errno == errno.ENOTDIR:
            raise FileNotFoundError(f"{what} {path}: no such file (a part of the path is a file, not a folder)") \
                from None
        raise MediaError(f"{what} {path}: cannot be accessed ({e.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise MediaError(f"{what} {path}: is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise MediaError(f"{what} {path}: not a regular file (a fifo, device or socket)")
    try:
        _open_for_reading(os.fspath(path))
    except PermissionError:
        raise MediaError(f"{what} {path}: permission denied (the file is not readable)") from None
    except OSError as e:
        raise MediaError(f"{what} {path}: cannot be opened ({e.strerror})") from None
    return path


# ----- Incomplete media -----

def report_incomplete(what: str, path: str | os.PathLike, kept: float, declared: float | None,
                      skipped: int = 0) -> bool:
    """Logs a warning when a file decoded to less than it declares, or with unreadable packets; True if so."""
    short = declared is not None and kept < declared - INCOMPLETE_TOLERANCE_S
    if not short and not skipped:
        return False
    of = f" of the {declared:.2f} s it declares" if declared is not None else ""
    gaps = f"; {skipped} unreadable packet(s) skipped" if skipped else ""
    log.warning("%s %s: truncated or damaged: kept %.2f s%s%s", what, path, kept, of, gaps)
    return True


def declared_seconds(container, stream) -> float | None:
    """The duration a PyAV stream (else its container) declares, in seconds; None if neither does."""
    import av

    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


class PacketFrames:
    """Decoded frames of some streams of an open container, in file order, surviving damage: a packet the
    decoder rejects is skipped (counted in `skipped`) and decoding goes on; a read error (a file cut off in a
    packet) ends the frames as the end of the file would (kept in `read_error`)."""

    def __init__(self, container, *streams):
        self.container, self.streams = container, streams
        self.skipped = 0
        self.read_error: Exception | None = None

    def __iter__(self) -> Iterator:
        import av

        packets = self.container.demux(*self.streams)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as e:
                self.read_error = e
                return
            try:
                frames = packet.decode()
            except av.FFmpegError:
                self.skipped += 1
                continue
            yield from frames


# ----- Images -----

def _check_header(img, path: Path, what: str, min_side: int) -> None:
    """Refuses images too small to be a face crop, from the header (before decoding)."""
    w, h = img.size
    if min(w, h) < min_side:
        raise MediaError(f"{what} {path}: {w}x{h} pixels; expected at least {min_side} px on the short side "
                         "(a face crop, not a thumbnail or icon)")


def _draft(img, max_side: int) -> None:
    """Asks a JPEG decoder for the smallest DCT scale (1/2, 1/4, 1/8) that brings the long side within
    `max_side`, so a huge photo is decoded at that size instead of whole. A no-op for other formats."""
    w, h = img.size
    if max(w, h) <= max_side or img.format != "JPEG":
        return
    scale = next((s for s in (2, 4, 8) if -(-max(w, h) // s) <= max_side), 8)
    img.draft(None, (w // scale, h // scale))


def _check_pixels(img, path: Path, what: str) -> None:
    """Refuses images that would decode to more than MAX_PIXELS (after any JPEG draft scaling)."""
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise MediaError(f"{what} {path}: {w}x{h} = {w * h / 1e6:.0f} M pixels; refusing to decode more than "
                         f"{MAX_PIXELS / 1e6:.0f} M (a decompression bomb, or a photo to downscale first)")


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (H, W, 3) uint8."""
    return np.repeat(gray[..., None], 3, axis=-1)


def _scaled_gray(img, path: Path, what: str) -> np.ndarray:
    """(H, W, 3) uint8 from a 16-bit (I;16*), 32-bit integer (I, the 16-bit range) or float (F) grayscale image:
    integers scaled by 65535 (their full range), floats by 1 when they lie in [0, 1], else by 255 (PIL's
    convention for F)."""
    values = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        if not np.all(np.isfinite(values)):
            raise MediaError(f"{what} {path}: float image with NaN or infinite pixels")
        full = 1.0 if values.size and values.max() <= 1.0 else 255.0
    else:
        full = 65535.0
    return _gray_to_rgb(np.round(np.clip(values / full, 0.0, 1.0) * 255.0).astype(np.uint8))


def _without_alpha(img, path: Path, what: str):
    """An RGBA-like image composited on white (transparent background -> white, as viewers show it)."""
    from PIL import Image

    rgba = img.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] < 255:
        log.info("%s %s: transparent pixels composited on white", what, path)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _to_rgb(img, path: Path, what: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a decoded image of any PIL mode."""
    if img.mode.startswith("I") or img.mode == "F":
        return _scaled_gray(img, path, what)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        img = _without_alpha(img, path, what)
    try:
        return np.asarray(img.convert("RGB"), np.uint8)
    except ValueError as e:  # e.g. LAB, which PIL converts only with a colour profile
        raise MediaError(f"{what} {path}: {img.mode} images cannot be converted to RGB ({e})") from e


def _downscale(rgb: np.ndarray, path: Path, what: str, max_side: int) -> np.ndarray:
    """(H, W, 3) -> (h, w, 3) with max(h, w) <= max_side, aspect kept (Lanczos, antialiased)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    log.info("%s %s: %dx%d pixels downscaled to %dx%d (long side at most %d)", what, path, w, h, *size, max_side)
    return np.asarray(Image.fromarray(rgb).resize(size, Image.LANCZOS, reducing_gap=3.0), np.uint8)


def read_image(path: str | os.PathLike, what: str = "image", *, min_side: int = MIN_SIDE,
               max_side: int = MAX_SIDE) -> np.ndarray:
    """An image file as displayed: (H, W, 3) uint8 RGB, EXIF orientation applied, max(H, W) <= max_side.

    Args:
      path: any image PIL reads (PNG, JPEG, WebP, TIFF, BMP, GIF's first frame ...).
      what: how messages name the file (e.g. "--image").
      min_side: fewer pixels than this on the short side (as stored) is refused.
      max_side: a longer long side is downscaled to it (logged).

    Raises:
      FileNotFoundError / MediaError: see check_file; MediaError for undecodable, truncated, too small or too
      large images (a decompression bomb), each message naming the file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = check_file(path, what)
    try:
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; here every bomb is an error.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _check_header(img, path, what, min_side)
                _draft(img, max_side)
                _check_pixels(img, path, what)
                img.load()
                rgb = _to_rgb(ImageOps.exif_transpose(img), path, what)
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MediaError(f"{what} {path}: refused as a decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise MediaError(f"{what} {path}: not a readable image (unknown format or corrupt header)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # what PIL's decoders raise on damaged data
        raise MediaError(f"{what} {path}: not a readable image: corrupt or truncated ({e})") from None
    return _downscale(rgb, path, what, max_side)


# ----- Audio -----

class MonoDownmix:
    """Decoded audio frames of any channel layout and rate -> float32 mono chunks at `rate` (None: the input's).

    FFmpeg's swresample does the work with its standard downmix matrix (centre 1, front pair and surrounds
    1/sqrt(2) each, LFE 0), normalised so its coefficients sum to one, as `ffmpeg -ac 1` does when it writes a
    16-bit file: identical stereo channels come out unchanged and nothing clips. (Asked for float output,
    swresample leaves the matrix unnormalised, which would make stereo speech 1.41x louder than mono.)
    """

    def __init__(self, rate: int | None = None):
        self.rate = rate
        self._resampler = None
        self._gain = 1.0

    def _start(self, frame) -> None:
        import av

        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
        # The matrix's coefficient sum, read off a constant 1 on every channel of this layout at its own rate.
        probe = av.AudioFrame.from_ndarray(np.ones((len(frame.layout.channels), 64), np.float32), format="fltp",
                                           layout=frame.layout.name)
        probe.sample_rate = frame.sample_rate
        out = av.AudioResampler(format="flt", layout="mono").resample(probe)
        self._gain = 1.0 / max(1.0, float(out[0].to_ndarray().reshape(-1)[0])) if out else 1.0

    def __call__(self, frame) -> list[np.ndarray]:
        """The mono chunks one decoded frame gives (None flushes the resampler at the end)."""
        if frame is None and self._resampler is None:
            return []
        if self._resampler is None:
            self._start(frame)
        return [(f.to_ndarray().reshape(-1) * np.float32(self._gain)) for f in self._resampler.resample(frame)]


def _decode_audio(container, stream, sample_rate: int) -> tuple[np.ndarray, PacketFrames]:
    """(N,) float32 mono at `sample_rate` of one audio stream, and the decoder's damage report."""
    downmix = MonoDownmix(sample_rate)
    frames = PacketFrames(container, stream)
    chunks = [chunk for frame in frames for chunk in downmix(frame)]
    chunks.extend(downmix(None))
    return (np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)), frames


def read_audio(path: str | os.PathLike, what: str = "audio", sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Any audio or video file FFmpeg reads -> (N,) float32 mono at `sample_rate`, N >= 1, all finite.

    A file cut short is decoded up to the cut, with a warning naming it and the seconds kept.

    Raises:
      FileNotFoundError / MediaError: see check_file; MediaError for a file FFmpeg cannot read, without an
      audio stream, without samples (empty, header only, truncated) or with NaN / inf samples.
    """
    import av

    path = check_file(path, what)
    if path.stat().st_size == 0:
        raise MediaError(f"{what} {path}: empty file (0 bytes): no audio samples (header only or truncated)")
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.audio:
                raise MediaError(f"{what} {path}: no audio stream")
            stream = container.streams.audio[0]
            declared = declared_seconds(container, stream)
            audio, frames = _decode_audio(container, stream, sample_rate)
    except av.FFmpegError as e:
        raise MediaError(f"{what} {path}: not a readable audio file ({e})") from None
    if not len(audio):
        raise MediaError(f"{what} {path}: no audio samples (header only or truncated)")
    bad = int(np.sum(~np.isfinite(audio)))
    if bad:
        raise MediaError(f"{what} {path}: {bad} of {len(audio)} samples are NaN or infinite (after resampling "
                         f"to {sample_rate} Hz mono); expected finite audio")
    report_incomplete(what, path, len(audio) / sample_rate, declared, frames.skipped)
    return audio
