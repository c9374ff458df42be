"""`mirrortalk generate --model dreamtalk`: the tiny reference fixtures converted as tools/convert_dreamtalk.py
converts the released files, random 50 Hz feature rows, a short wav and a portrait, run as a user would, and
checked against the library function, the original's file layouts and every refused input."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import soundfile as sf
from flax import nnx
from PIL import Image

from mirrortalk_jax import base_config, cli
from mirrortalk_jax.runs import converted, loader
from mirrortalk_jax.convert import dreamtalk as convert_dt
from mirrortalk_jax.convert import pirenderer as convert_pir
from mirrortalk_jax.data import encoder_features, video
from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.generate import inputs
from mirrortalk_jax.generate.dreamtalk import generate_dreamtalk
from mirrortalk_jax.models.pirenderer import renderer as pirenderer
from mirrortalk_jax.models.registry import create_model

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SECONDS, RATE = 1.3, 16000
ROWS = int(SECONDS * 50)  # 65 rows of 50 Hz -> 32 frames
FRAMES = ROWS // 2
SIZE = 64  # the fixture renderer's size (any multiple of 32)


def _denoiser_config():
    return convert_dt.model_config_from_original(json.loads((FIXTURES / "dreamtalk_denoiser" / "config.json")
                                                            .read_text()))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """Converted fixture denoiser and renderer, as tools/convert_dreamtalk.py writes OUT/denoiser, OUT/renderer."""
    out = tmp_path_factory.mktemp("ckpt")
    convert_dt.convert_checkpoint(FIXTURES / "dreamtalk_denoiser" / "weights.safetensors", out / "denoiser",
                                  _denoiser_config())
    conf = json.loads((FIXTURES / "dreamtalk_renderer" / "config.json").read_text())["renderer_conf"]
    convert_pir.convert_renderer(FIXTURES / "dreamtalk_renderer" / "weights.safetensors", out / "renderer",
                                 pirenderer.model_config(conf, image_size=(SIZE, SIZE)))
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    r = np.random.default_rng(0)
    t = np.arange(int(SECONDS * RATE)) / RATE
    sf.write(d / "speech.wav", (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2)
             .astype(np.float32), RATE)
    np.save(d / "rows.npy", r.normal(size=(ROWS, 1024)).astype(np.float32))
    Image.fromarray(r.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(d / "portrait.png")
    np.save(d / "style.npy", r.normal(0, 0.8, (40, 64)).astype(np.float32))
    # The original's 3DMM layout: coeff (T, 257), transform_params (T, 5) = [w0, h0, s, tx, ty].
    coeff = r.normal(0, 0.5, (50, 257)).astype(np.float32)
    params = np.concatenate([np.full((50, 2), 256.0), 0.93 + r.normal(0, 0.01, (50, 1)),
                             127 + r.normal(0, 2, (50, 2))], axis=1).astype(np.float32)
    scipy.io.savemat(d / "style.mat", {"coeff": coeff, "transform_params": params})
    pose = np.concatenate([r.normal(0, 0.2, (20, 6)), np.tile([0.95, 120.0, 135.0], (20, 1))], 1)
    np.save(d / "pose.npy", pose.astype(np.float32))
    return d


def _args(ckpt, files, out, *extra, style=("--style_clip", "style.npy"), audio=("--audio_features", "rows.npy")):
    flag, name = style
    return ["generate", "--model", "dreamtalk", "--denoiser", str(ckpt / "denoiser"), "--renderer",
            str(ckpt / "renderer"), "--audio", str(files / "speech.wav"), audio[0], str(files / audio[1]),
            "--image", str(files / "portrait.png"), flag, str(files / name), "--steps", "4", "--render_batch", "12",
            "--out", str(out), "--save_motion", str(out.with_suffix(".npy")), *extra]


@pytest.fixture(scope="module")
def frontal(ckpt, files, tmp_path_factory):
    """The CLI with a .npy style clip and no pose: its mp4 and coefficients."""
    out = tmp_path_factory.mktemp("frontal") / "clip.mp4"
    assert cli.main(_args(ckpt, files, out)) == 0
    return video.read_mp4(out), np.load(out.with_suffix(".npy"))


def test_mp4_has_the_frames_and_the_audio_and_equals_the_library(ckpt, files, frontal, tmp_path):
    clip, coefficients = frontal
    assert clip.frames.shape == (FRAMES, SIZE, SIZE, 3) and clip.fps == 25
    assert clip.sample_rate == RATE and abs(len(clip.audio) / RATE - SECONDS) < 0.01
    # The library function on the same inputs, read without the CLI's loaders.
    denoiser = loader.load_model(ckpt / "denoiser", expect="dreamtalk", what="denoiser").model
    renderer = loader.load_model(ckpt / "renderer", expect="pirenderer", what="renderer").model
    image = np.asarray(Image.open(files / "portrait.png"))
    out = generate_dreamtalk(denoiser, renderer, np.load(files / "rows.npy"), image,
                             style_clip=np.load(files / "style.npy"), steps=4, seed=0, render_batch=5)
    assert out.frames.shape == (FRAMES, SIZE, SIZE, 3) and out.frames.dtype == np.uint8 and out.style_code is None
    np.testing.assert_array_equal(coefficients, out.coefficients)  # batch size changes nothing
    np.testing.assert_array_equal(coefficients[:, 64:], np.tile(inputs.FRONTAL_POSE, (FRAMES, 1)))
    # H.264 is lossy (noise-like frames of random weights lose ~18 levels), but deterministic: the library's
    # frames encoded alike decode to exactly the CLI's.
    video.write_mp4(tmp_path / "library.mp4", out.frames, 25.0)
    np.testing.assert_array_equal(video.read_mp4(tmp_path / "library.mp4").frames, clip.frames)
    assert out.frames.std() > 1  # a picture, not a constant


def test_pose_comes_from_the_pose_file_else_the_style_clips_3dmm_file(ckpt, files, frontal, tmp_path):
    clip, coefficients = frontal
    out = tmp_path / "posed.mp4"
    assert cli.main(_args(ckpt, files, out, "--pose", str(files / "pose.npy"))) == 0
    posed = np.load(out.with_suffix(".npy"))
    np.testing.assert_array_equal(posed[:, :64], coefficients[:, :64])  # pose never changes the expression
    pose = np.load(files / "pose.npy")
    np.testing.assert_array_equal(posed[:20, 64:], pose)
    np.testing.assert_array_equal(posed[20:, 64:], np.tile(pose[-1], (FRAMES - 20, 1)))  # last pose repeated
    assert np.abs(video.read_mp4(out).frames.astype(int) - clip.frames).mean() > 1
    # A .mat style clip: expression = coeff[:, 80:144], and without --pose its own pose (the original's columns).
    out = tmp_path / "mat.mp4"
    assert cli.main(_args(ckpt, files, out, style=("--style_clip", "style.mat"))) == 0
    mat = scipy.io.loadmat(files / "style.mat")
    want = np.concatenate([mat["coeff"][:, 224:227], mat["coeff"][:, 254:257], mat["transform_params"][:, 2:]], 1)
    np.testing.assert_array_equal(np.load(out.with_suffix(".npy"))[:, 64:], want[:FRAMES])
    np.save(tmp_path / "expression.npy", mat["coeff"][:, 80:144])
    out_npy = tmp_path / "npy.mp4"
    assert cli.main(_args(ckpt, files, out_npy, "--pose", str(files / "style.mat"),
                          style=("--style_clip", tmp_path / "expression.npy"))) == 0
    np.testing.assert_array_equal(np.load(out_npy.with_suffix(".npy")), np.load(out.with_suffix(".npy")))


def test_features_computed_by_an_audio_encoder(files, ckpt, tmp_path, capsys):
    """--audio_encoder: the tiny wav2vec2 fixture (32 wide) for a denoiser reading 32-wide rows."""
    config = _denoiser_config()
    config.audio_dim = 32
    model = create_model(config, None, nnx.Rngs(1))
    converted.save(tmp_path / "denoiser32", nnx.state(model, nnx.Not(nnx.RngState)), model_config=config)
    encoder = FIXTURES / "wav2vec2_tiny"
    out = tmp_path / "enc.mp4"
    args = _args(ckpt, files, out, audio=("--audio_encoder", encoder))
    args[args.index("--denoiser") + 1] = str(tmp_path / "denoiser32")
    assert cli.main(args) == 0
    from mirrortalk_jax.commands.features import load_encoder
    wav = encoder_features.read_audio(files / "speech.wav")
    rows = encoder_features.EncoderFeatures(load_encoder(str(encoder))[0])(wav)
    assert len(rows) == 64  # (20800 - 400) // 320 + 1
    renderer = loader.load_model(ckpt / "renderer", expect="pirenderer", what="renderer").model
    want = generate_dreamtalk(model, renderer, rows, np.asarray(Image.open(files / "portrait.png")),
                              style_clip=np.load(files / "style.npy"), steps=4)
    np.testing.assert_allclose(np.load(out.with_suffix(".npy")), want.coefficients, rtol=1e-5, atol=1e-5)
    assert video.read_mp4(out).num_frames == 32
    # The fixture denoiser reads 1024-wide rows: the encoder's 32 are refused by name.
    capsys.readouterr()
    assert cli.main(_args(ckpt, files, out, audio=("--audio_encoder", encoder))) == 2
    err = capsys.readouterr().err
    assert str(encoder) in err and "32-wide" in err and "1024" in err, err


@pytest.fixture(scope="module")
def predictor_run(ckpt, tmp_path_factory):
    """An untrained tiny style predictor for the fixture denoiser (32-d codes, 2 x 1024 audio per frame), saved
    as a checkpoint `load_model` reads (training one needs a dataset with wav2vec2 features)."""
    config = base_config.load_config_file(base_config.config_path("dreamtalk_style_predictor"), "tiny").model
    config.update(audio_dim=2 * 1024, audio_mean=0.0, audio_std=1.0)
    channels = tuple(f"exp{i}" for i in range(64))
    spec = MotionSpec("bfm64_expression", channels, {"lower": channels[:13], "upper": channels[13:], "eyes": (),
                                                      "pose": ()})
    model = create_model(config, spec, nnx.Rngs(2))
    assert model.style_dim == 32
    return converted.save(tmp_path_factory.mktemp("predictor") / "run",
                          nnx.state(model, nnx.Not(nnx.RngState)), model_config=config, motion_spec=spec)


def test_style_predictor_replaces_the_style_clip(ckpt, files, frontal, predictor_run, tmp_path):
    landmarks = np.random.default_rng(5).normal(size=(68, 3)).astype(np.float32)
    np.save(tmp_path / "identity.npy", landmarks)
    out = tmp_path / "predicted.mp4"
    args = _args(ckpt, files, out, "--identity", str(tmp_path / "identity.npy"),
                 style=("--style_predictor", predictor_run))
    assert cli.main(args) == 0
    coefficients = np.load(out.with_suffix(".npy"))
    assert video.read_mp4(out).num_frames == FRAMES and np.all(np.isfinite(coefficients))
    assert np.abs(coefficients[:, :64] - frontal[1][:, :64]).max() > 1e-3  # another style than the clip's
    denoiser = loader.load_model(ckpt / "denoiser", expect="dreamtalk", what="denoiser").model
    renderer = loader.load_model(ckpt / "renderer", expect="pirenderer", what="renderer").model
    predictor = loader.load_model(predictor_run, expect="dreamtalk_style_predictor", what="predictor").model
    want = generate_dreamtalk(denoiser, renderer, np.load(files / "rows.npy"),
                              np.asarray(Image.open(files / "portrait.png")), style_predictor=predictor,
                              identity=landmarks, steps=4)
    assert want.style_code.shape == (32,)
    np.testing.assert_allclose(coefficients, want.coefficients, rtol=1e-5, atol=1e-5)


def _bad_files(d: Path) -> dict[str, Path]:
    r = np.random.default_rng(1)
    made = {"narrow.npy": r.normal(size=(ROWS, 16)), "long.npy": r.normal(size=(3 * ROWS, 1024)),
            "style10.npy": r.normal(size=(40, 10)), "pose6.npy": r.normal(size=(20, 6))}
    nan = r.normal(size=(ROWS, 1024))
    nan[3, 7] = np.nan
    made["nan.npy"] = nan
    for name, array in made.items():
        np.save(d / name, array.astype(np.float32))
    scipy.io.savemat(d / "nocoeff.mat", {"exp": r.normal(size=(30, 64))})
    scipy.io.savemat(d / "narrow.mat", {"coeff": r.normal(size=(30, 100))})
    Image.fromarray(np.zeros((96, 128, 3), np.uint8)).save(d / "wide.png")
    (d / "text.png").write_text("not an image")
    return {name: d / name for name in [*made, "nocoeff.mat", "narrow.mat", "wide.png", "text.png"]}


def test_bad_inputs_exit_2_with_a_message_naming_the_file(ckpt, files, predictor_run, tmp_path, capsys):
    bad = _bad_files(tmp_path)
    out = tmp_path / "never.mp4"

    def replace(flag, value):
        args = _args(ckpt, files, out)
        args[args.index(flag) + 1] = str(value)
        return args

    cases = [
        (replace("--audio", tmp_path / "missing.wav"), ["missing.wav"]),
        (replace("--audio_features", bad["narrow.npy"]), ["narrow.npy", "1024"]),
        (replace("--audio_features", bad["nan.npy"]), ["nan.npy", "NaN"]),
        (replace("--audio_features", bad["long.npy"]), ["long.npy", "speech.wav"]),
        (replace("--denoiser", ckpt / "renderer"), ["--denoiser", "'pirenderer'", "'dreamtalk'"]),
        (replace("--renderer", ckpt / "denoiser"), ["--renderer", "'dreamtalk'", "'pirenderer'"]),
        (replace("--denoiser", tmp_path), ["--denoiser", str(tmp_path), "model.json"]),
        (replace("--image", bad["wide.png"]), ["wide.png", "64x64"]),
        (replace("--image", bad["text.png"]), ["text.png", "not a readable image"]),
        (replace("--style_clip", bad["nocoeff.mat"]), ["nocoeff.mat", "'coeff'", "80:144"]),
        (replace("--style_clip", bad["narrow.mat"]), ["narrow.mat", "(30, 100)", "257"]),
        (replace("--style_clip", bad["style10.npy"]), ["style10.npy", "(40, 10)", "64"]),
        (replace("--style_clip", tmp_path / "missing.mat"), ["missing.mat", "no such file"]),
        (_args(ckpt, files, out, "--pose", str(bad["pose6.npy"])), ["pose6.npy", "(20, 6)", "9"]),
        (_args(ckpt, files, out, style=("--style_predictor", predictor_run)), [str(predictor_run), "--identity"]),
        (_args(ckpt, files, out, "--identity", str(bad["pose6.npy"])), ["--identity", "--style_predictor"]),
        (replace("--render_batch", 0), ["--render_batch"]),
    ]
    for args, needles in cases:
        assert cli.main(args) == 2, args
        err = capsys.readouterr().err
        assert "Traceback" not in err and all(n in err for n in needles), (needles, err)
    assert not out.exists()
    with pytest.raises(SystemExit) as e:  # argparse: the --model choices
        cli.main(_args(ckpt, files, out)[:2] + ["sadtalker"] + _args(ckpt, files, out)[3:])
    assert e.value.code == 2 and "invalid choice: 'sadtalker'" in capsys.readouterr().err
    # The options of one model are not silently ignored by another.
    mirror = ["generate", "--model", "mirrortalk", "--out", str(out)]
    for args, needles in [(mirror, ["--model mirrortalk needs --generator and --renderer"]),
                          (mirror + ["--generator", str(ckpt / "denoiser"), "--renderer", str(ckpt / "renderer"),
                                     "--style_clip", str(files / "style.mat")], ["--style_clip", "DreamTalk's"]),
                          (_args(ckpt, files, out, "--reference", "x.mp4"), ["--reference", "mirrortalk"])]:
        assert cli.main(args) == 2, args
        err = capsys.readouterr().err
        assert "Traceback" not in err and all(n in err for n in needles), (needles, err)


def test_dreamtalk_animates_an_uncropped_photo_and_pastes_it_back(ckpt, files, tmp_path, capsys):
    """Any photo: scikit-image's astronaut (512x512, the face a fifth of it) is cropped around her face at the
    renderer's size, animated, and pasted back; --no_paste_back gives the crops."""
    import skimage.data

    photo = skimage.data.astronaut()
    Image.fromarray(photo).save(tmp_path / "astronaut.jpg", quality=95)
    out = tmp_path / "photo.mp4"
    args = _args(ckpt, files, out)
    args[args.index("--image") + 1] = str(tmp_path / "astronaut.jpg")
    assert cli.main(args) == 0
    clip = video.read_mp4(out)
    assert clip.frames.shape[1:] == (512, 512, 3)
    assert np.abs(clip.frames[:, 400:, :150].astype(float) - photo[400:, :150]).mean() < 4.0  # away from the face
    crops = tmp_path / "crops.mp4"
    assert cli.main(args[:-4] + ["--out", str(crops), "--no_paste_back"]) == 0
    assert video.read_mp4(crops).frames.shape == (clip.frames.shape[0], SIZE, SIZE, 3)


def test_input_loaders_follow_the_originals_layout(files, tmp_path):
    mat = scipy.io.loadmat(files / "style.mat")
    np.testing.assert_array_equal(inputs.load_style_clip(files / "style.mat"), mat["coeff"][:, 80:144])
    np.savez(tmp_path / "style.npz", coeff=mat["coeff"], transform_params=mat["transform_params"])
    np.testing.assert_array_equal(inputs.load_pose(tmp_path / "style.npz"), inputs.load_pose(files / "style.mat"))
    assert inputs.has_pose(files / "style.mat") and inputs.has_pose(tmp_path / "style.npz")
    assert not inputs.has_pose(files / "style.npy")
    pose = np.arange(18, dtype=np.float32).reshape(2, 9)
    np.testing.assert_array_equal(inputs.fit_pose(pose, 1), pose[:1])
    np.testing.assert_array_equal(inputs.fit_pose(pose, 4), pose[[0, 1, 1, 1]])
    Image.fromarray(np.full((128, 128, 3), 200, np.uint8)).save(tmp_path / "big.png")
    image = inputs.load_image(tmp_path / "big.png", (SIZE, SIZE))
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8 and np.all(image == 200)


def test_help_documents_the_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["generate", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for needle in ("--model {mirrortalk,mimictalk,dreamtalk}", "tools/convert_dreamtalk.py", "--audio_encoder", "columns 80:144",
                   "transform_params", "--render_batch"):
        assert needle in out, needle
