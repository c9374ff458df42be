"""The shared media readers (data/media.py, data/video.read_mp4) on files these tests make: photos as phones
and scanners write them, broken and hostile files, and the paths users get wrong. Every refusal names the file."""

import fractions
import logging
import os
import struct
import zlib

import av
import numpy as np
import pytest
import soundfile
from PIL import Image

from mirrortalk_jax.data import media, video
from mirrortalk_jax.data.media import MediaError

SR = 16000


# ----- Paths -----

def test_paths_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--audio .*missing\.wav: no such file"):
        media.check_file(tmp_path / "missing.wav", "--audio")
    with pytest.raises(MediaError, match="is a directory"):
        media.check_file(tmp_path, "--image")
    loop = tmp_path / "loop.png"
    os.symlink(loop, loop)
    with pytest.raises(MediaError, match="loop.png: symlink loop"):
        media.check_file(loop)
    broken = tmp_path / "broken.png"
    os.symlink(tmp_path / "gone.png", broken)
    with pytest.raises(FileNotFoundError, match="broken.png: broken symlink"):
        media.check_file(broken)
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(MediaError, match="pipe.wav: not a regular file"):  # refused without opening (no hang)
        media.check_file(fifo)
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="a part of the path is a file"):
        media.check_file(tmp_path / "file" / "child.wav")


# ----- Images -----

def _save(tmp_path, name, image: Image.Image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored landscape with orientation 6 ("rotate 90 CW to display") is read upright."""
    stored = np.zeros((80, 120, 3), np.uint8)
    stored[:10, :10] = (255, 0, 0)  # red top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(tmp_path, "phone.jpg", Image.fromarray(stored), exif=exif, quality=95)
    image = media.read_image(path)
    assert image.shape == (120, 80, 3)
    # Rotated clockwise: the stored top-left corner is displayed top-right.
    assert image[:8, -8:, 0].mean() > 200 and image[:8, :8, 0].mean() < 50


def test_16_bit_grayscale_keeps_its_range(tmp_path):
    gray = np.full((70, 90), 30000, np.uint16)
    gray[:, 45:] = 60000
    path = _save(tmp_path, "scan16.png", Image.fromarray(gray))
    assert Image.open(path).mode.startswith("I")
    image = media.read_image(path)
    assert image.shape == (70, 90, 3) and image.dtype == np.uint8
    assert abs(int(image[0, 0, 0]) - round(30000 / 65535 * 255)) <= 1  # 117, not clipped to white
    assert abs(int(image[0, -1, 1]) - round(60000 / 65535 * 255)) <= 1


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 2] = 255  # blue, fully transparent on the left half
    rgba[:, 32:, 3] = 255
    image = media.read_image(_save(tmp_path, "cutout.png", Image.fromarray(rgba)))
    np.testing.assert_array_equal(image[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(image[0, -1], [0, 0, 255])


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (RGB, 8 bit) with a token of image data (what a bomb's
    header looks like before its compressed rows are inflated)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(1024))) + chunk(b"IEND", b""))


def test_decompression_bomb_and_tiny_images_are_refused_by_name(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(20000, 20000))
    with pytest.raises(MediaError, match=r"--image .*bomb\.png: .*decompression bomb"):
        media.read_image(bomb, "--image")
    # Under PIL's own bomb limit but still gigabytes decoded: refused by our pixel cap, before decoding.
    big = tmp_path / "big.png"
    big.write_bytes(_png_header_only(9000, 9000))
    with pytest.raises(MediaError, match=r"big\.png: 9000x9000 = 81 M pixels"):
        media.read_image(big)
    icon = _save(tmp_path, "icon.png", Image.new("RGB", (8, 8)))
    with pytest.raises(MediaError, match=r"icon\.png: 8x8 pixels; expected at least 64 px"):
        media.read_image(icon)


def test_huge_photo_is_downscaled_not_decoded_whole(tmp_path):
    yy, xx = np.mgrid[0:6000, 0:8000]
    gray = ((xx + yy) % 256).astype(np.uint8)
    path = _save(tmp_path, "huge.jpg", Image.fromarray(gray), quality=80)
    image = media.read_image(path)
    assert max(image.shape[:2]) <= media.MAX_SIDE
    assert image.shape[:2] == (3000, 4000)  # aspect kept: the JPEG decoder's 1/2 scale, nothing more
    assert image.shape[:2] == media.read_image(path, max_side=4000).shape[:2]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_images_are_named(tmp_path, damage):
    path = _save(tmp_path, "face.jpg", Image.fromarray(np.full((96, 96, 3), 128, np.uint8)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"not an image at all" * 10)
    with pytest.raises(MediaError, match=r"face\.jpg: not a readable image"):
        media.read_image(path)


# ----- Audio -----

def _wav(path, samples: np.ndarray, rate: int = SR, subtype: str = "PCM_16"):
    soundfile.write(path, samples, rate, subtype=subtype)
    return path


def test_audio_is_mono_16k_from_any_rate_and_layout(tmp_path):
    t = np.arange(48000) / 48000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)], axis=1)
    audio = media.read_audio(_wav(tmp_path / "stereo48k.wav", stereo, 48000))
    assert audio.dtype == np.float32 and audio.ndim == 1 and abs(len(audio) - SR) <= 32
    assert 0.49 < np.abs(audio).max() < 0.51  # identical channels come out unchanged, not 1.41x louder
    surround = np.repeat(stereo[:, :1], 6, axis=1)
    surround[:, 3] = 0.0  # LFE
    path = tmp_path / "surround.wav"
    soundfile.write(path, surround, 48000, subtype="FLOAT")
    assert 0.49 < np.abs(media.read_audio(path)).max() < 0.51


def test_empty_header_only_and_nan_audio_name_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match=r"--audio .*empty\.wav: empty file"):
        media.read_audio(empty, "--audio")
    header = _wav(tmp_path / "header.wav", np.zeros(0, np.int16))
    assert header.stat().st_size == 44
    with pytest.raises(MediaError, match=r"header\.wav: no audio samples"):
        media.read_audio(header)
    samples = np.zeros(SR, np.float32)
    samples[100] = np.nan
    samples[200] = np.inf
    nan = _wav(tmp_path / "nan.wav", samples, subtype="FLOAT")
    with pytest.raises(MediaError, match=r"nan\.wav: \d+ of \d+ samples are NaN or infinite"):
        media.read_audio(nan)
    with pytest.raises(MediaError, match=r"notes\.txt: (not a readable audio file|no audio stream)"):
        (tmp_path / "notes.txt").write_text("hello " * 100)
        media.read_audio(tmp_path / "notes.txt")


def test_truncated_audio_is_used_with_a_warning(tmp_path, caplog):
    """A WAV cut mid-data is read up to the cut; an m4a whose index declares 4 s warns how much was kept."""
    speech = (0.3 * np.sin(np.arange(4 * SR) / 10)).astype(np.float32)
    wav = _wav(tmp_path / "long.wav", speech)
    wav.write_bytes(wav.read_bytes()[: 44 + 2 * int(1.5 * SR)])
    np.testing.assert_allclose(media.read_audio(wav), speech[: int(1.5 * SR)], atol=1e-4)

    m4a = tmp_path / "long.m4a"
    with av.open(os.fspath(m4a), "w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("aac", rate=SR, layout="mono")
        frame = av.AudioFrame.from_ndarray(speech[None], format="flt", layout="mono")
        frame.sample_rate = SR
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    data = m4a.read_bytes()
    m4a.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        audio = media.read_audio(m4a)
    assert 1.0 < len(audio) / SR < 3.0
    assert f"long.m4a: truncated or damaged: kept {len(audio) / SR:.2f} s of the 4.0" in caplog.text


# ----- Video -----

def _patch_rotation(path, height: int) -> None:
    """Sets the first track's display matrix (mp4 `tkhd`) to a 90-degree clockwise rotation, as phones write."""
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    offset = at + 4 + 4 + (32 if data[at + 4] == 1 else 20) + 8 + 8  # version/flags, times, ids, layer, volume
    assert struct.unpack(">9i", data[offset:offset + 36])[0] == 0x10000  # the identity matrix is there
    data[offset:offset + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, height << 16, 0, 0x40000000)
    path.write_bytes(bytes(data))


def test_read_mp4_applies_the_rotation(tmp_path):
    frames = np.zeros((6, 32, 48, 3), np.uint8)
    frames[:, :8, :8, 0] = 255
    path = tmp_path / "phone.mp4"
    video.write_mp4(path, frames, fps=25.0)
    _patch_rotation(path, 32)
    clip = video.read_mp4(path)
    assert clip.frames.shape == (6, 48, 32, 3)
    assert clip.frames[0, :8, -8:, 0].mean() > 200 and clip.frames[0, :8, :8, 0].mean() < 50


def _encode(path, images, times_ms, options=None):
    """H.264 with the given presentation times (ms): a variable-frame-rate file when they are uneven."""
    with av.open(os.fspath(path), "w", options=options or {}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = images.shape[2], images.shape[1], "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for image, t in zip(images, times_ms):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = t, fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_read_mp4_samples_variable_frame_rate_by_time(tmp_path):
    """Frames shown at 0, 40, 80, 200, 240, 280 ms: at 25 fps the third is held over the gap, so frame n is
    the one on screen at n * 40 ms (counting by index would pull the later frames 80 ms early)."""
    images = np.stack([np.full((32, 32, 3), 40 * k, np.uint8) for k in range(6)])
    _encode(tmp_path / "vfr.mp4", images, [0, 40, 80, 200, 240, 280])
    clip = video.read_mp4(tmp_path / "vfr.mp4", fps=25)
    shown = [int(round(f.mean() / 40)) for f in clip.frames]
    assert shown == [0, 1, 2, 2, 2, 3, 4, 5] and clip.fps == 25.0
    # At 50 fps every frame is doubled (and the gap held over six output frames).
    assert [int(round(f.mean() / 40)) for f in video.read_mp4(tmp_path / "vfr.mp4", fps=50).frames][:8] == \
        [0, 0, 1, 1, 2, 2, 2, 2]
    with pytest.raises(ValueError, match="fps must be a positive finite number"):
        video.read_mp4(tmp_path / "vfr.mp4", fps=0)


@pytest.fixture(scope="module")
def indexed_mp4(tmp_path_factory):
    """50 frames (2 s) with the index at the front (faststart), so a cut file still says what it held."""
    path = tmp_path_factory.mktemp("mp4") / "full.mp4"
    images = np.random.default_rng(0).integers(0, 255, (50, 32, 32, 3), dtype=np.uint8)
    _encode(path, images, [40 * i for i in range(50)], {"movflags": "faststart"})
    return path


@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_truncated_mp4_keeps_what_decodes_and_warns(indexed_mp4, tmp_path, caplog, keep):
    data = indexed_mp4.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * keep)])
    with caplog.at_level(logging.WARNING):
        clip = video.read_mp4(cut)
    assert 0 < clip.num_frames < 50 and clip.declared_duration == pytest.approx(2.0)
    assert f"cut.mp4: truncated or damaged: kept {clip.duration:.2f} s of the 2.00 s it declares" in caplog.text


def test_damaged_middle_of_an_mp4_is_skipped_with_a_warning(indexed_mp4, tmp_path, caplog):
    data = bytearray(indexed_mp4.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = bytes(2000)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        clip = video.read_mp4(damaged)
    assert clip.num_frames == 50 and clip.skipped_packets > 0  # timing kept: the frame before a gap is held
    assert "damaged.mp4: truncated or damaged" in caplog.text and "unreadable packet(s) skipped" in caplog.text
    intact = video.read_mp4(indexed_mp4)
    assert intact.skipped_packets == 0 and intact.num_frames == 50


def test_mp4_without_a_decodable_frame_is_refused(indexed_mp4, tmp_path):
    data = indexed_mp4.read_bytes()
    cut = tmp_path / "header_only.mp4"
    cut.write_bytes(data[: data.find(b"mdat") + 8])
    with pytest.raises(MediaError, match=r"header_only\.mp4: not a readable mp4: no decodable video frames"):
        video.read_mp4(cut)
