"""`mirrortalk generate --model mirrortalk|mimictalk` on real material: scikit-image's astronaut photo (uncropped,
512x512), espeak speech, and a talking video of her as the style reference; the generators and our renderer trained
(briefly) on the real-face motion space `mirrortalk data prepare` fits on that video."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax

import numpy as np
import pytest
import skimage.data
import soundfile
from PIL import Image

from mirrortalk_jax import base_config, cli, safe_paths
from mirrortalk_jax.data import video
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from mirrortalk_jax.data.prepare import builders, dataset
from mirrortalk_jax.evaluate import head_motion
from mirrortalk_jax.generate import paste_back, portrait
from mirrortalk_jax.generate.talking_face import SAMPLES_PER_FRAME, TalkingFace
from mirrortalk_jax.train import trainer
from tests import real_videos

SIZE = 64  # the tiny renderer's crops


def _train(config, dataset_dir: Path, workdir: Path) -> Path:
    config.data.dataset_dir, config.data.eval_split = str(dataset_dir), "train"  # one clip: no held-out split
    config.train.update(dict(num_steps=2, batch_size=8, log_every=1, eval_every=0, checkpoint_every=1000,
                             warmup_steps=1))
    trainer.train_and_evaluate(config, workdir)
    return workdir


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    """Files a user brings (photo, speech, style video) and runs trained on the video's prepared dataset."""
    root = tmp_path_factory.mktemp("real_generate")
    files = {"photo": root / "astronaut.jpg", "speech": root / "speech.wav",
             "reference": real_videos.talking_video(root / "her style.mp4", seconds=3.2)}
    Image.fromarray(skimage.data.astronaut()).save(files["photo"], quality=95)
    soundfile.write(files["speech"], real_videos.sentence()[:16000 * 2], 16000)  # 2.0 s: 50 frames
    # Clips of at most 1.6 s: the 3.2 s video makes two clips of one speaker (a reference for the other).
    settings = dataset.PrepareSettings(options=dataset.clips.Options(image_size=SIZE, min_seconds=0.8,
                                                                     max_seconds=1.6), runner="local")
    builders.prepare([str(files["reference"])], root / "data", settings, log=lambda line: None)
    corpus = base_config.config_path("real_corpus")
    runs = {stage: _train(base_config.load_config_file(corpus, f"hdtf,{stage},tiny"), root / "data", root / stage)
            for stage in ("mirrortalk", "mimictalk", "renderer")}
    return root, files, runs


def _generate(material, model: str, out: Path, *extra: str) -> int:
    root, files, runs = material
    return cli.main(["generate", "--model", model, "--generator", str(runs[model]), "--renderer",
                     str(runs["renderer"]), "--image", str(files["photo"]), "--audio", str(files["speech"]),
                     "--reference", str(files["reference"]), "--steps", "2", "--out", str(out), *extra])


def test_both_generators_animate_an_uncropped_photo_and_paste_it_back(material, tmp_path, capsys):
    photo = np.asarray(Image.open(material[1]["photo"]))
    motions = {}
    for model in ("mirrortalk", "mimictalk"):
        out = tmp_path / f"{model}.mp4"
        assert _generate(material, model, out, "--save_motion", str(out.with_suffix(".npy"))) == 0
        assert f"wrote {out} (50 frames, 512x512" in capsys.readouterr().out
        clip = video.read_mp4(out)
        assert clip.frames.shape == (50, 512, 512, 3) and len(clip.audio) == pytest.approx(50 * 640, abs=1024)
        # Pasted back: far from the face the frames are the photo (up to the codec); on the face they are not.
        assert np.abs(clip.frames[:, 400:, :150].astype(float) - photo[400:, :150]).mean() < 4.0
        found = portrait.find_portrait(photo, SIZE)
        x0, y0, x1, y1 = paste_back.PasteBack(photo, found.transform, SIZE).box
        assert x0 < 230 < x1 and y0 < 130 < y1  # the box holds her face (real_videos.FACE_CENTRE)
        motions[model] = np.load(out.with_suffix(".npy"))
        assert motions[model].shape == (50, 29) and np.all(np.isfinite(motions[model]))
    assert np.abs(motions["mirrortalk"] - motions["mimictalk"]).max() > 1e-3
    crop = tmp_path / "crop.mp4"
    assert _generate(material, "mirrortalk", crop, "--no_paste_back") == 0
    assert video.read_mp4(crop).frames.shape == (50, SIZE, SIZE, 3)


def test_one_short_video_personalizes_the_renderer_and_is_the_style_reference(material, tmp_path, capsys):
    """MimicTalk's use: the person's video adapts the renderer (`mirrortalk personalize`) and is the talking-style
    reference of the generator; the personalized renderer is a drop-in --renderer."""
    root, files, runs = material
    out = tmp_path / "her"
    assert cli.main(["personalize", "--renderer", str(runs["renderer"]), "--video", str(files["reference"]),
                     "--out", str(out), "--steps", "2", "--tail_seconds", "0.8", "--eval_every", "2"]) == 0
    capsys.readouterr()
    video_out = tmp_path / "personal.mp4"
    assert cli.main(["generate", "--model", "mirrortalk", "--generator", str(runs["mirrortalk"]), "--renderer",
                     str(out / "renderer"), "--image", str(files["photo"]), "--audio", str(files["speech"]),
                     "--reference", str(files["reference"]), "--steps", "2", "--out", str(video_out)]) == 0
    assert f"wrote {video_out} (50 frames, 512x512" in capsys.readouterr().out
    assert video.read_mp4(video_out).frames.shape == (50, 512, 512, 3)


def test_pose_and_eyes_are_generated_not_copied(material):
    """Every channel of the motion space comes from the generator: the pose and eyelid channels move, and are not
    the reference clip's (which is 3.2 s of another sentence)."""
    root, files, runs = material
    face = TalkingFace.load(runs["mirrortalk"], runs["renderer"])
    from mirrortalk_jax.generate.reference import reference_clip
    from mirrortalk_jax.data import media

    style = reference_clip(files["reference"], face.basis)
    motion = face.motion(media.read_audio(files["speech"]), face.reference(style), num_steps=2)
    spec = face.generator.spec
    generated, reference = head_motion.summary(motion, spec), head_motion.summary(style.motion, spec)
    assert generated["pose_std_deg"] > 0 and reference["pose_std_deg"] > 1.0  # her head rolls +-6 degrees
    pose = [spec.index(c) for c in head_motion.ANGLES]
    assert np.abs(motion[:, pose] - style.motion[:len(motion), pose]).mean() > 1e-3


def test_streaming_yields_frames_before_the_speech_has_all_arrived(material):
    root, files, runs = material
    face = TalkingFace.load(runs["mimictalk"], runs["renderer"])
    from mirrortalk_jax.generate.reference import reference_clip
    from mirrortalk_jax.data import media

    wav = media.read_audio(files["speech"])
    found = face.portrait(np.asarray(Image.open(files["photo"])))
    reference = face.reference(reference_clip(files["reference"], face.basis))
    fed = []

    def chunks():  # 0.2 s at a time, recording how much has arrived
        for start in range(0, len(wav), 3200):
            fed.append(start + 3200)
            yield wav[start:start + 3200]

    batches, fed_at_first = [], None
    for batch in face.stream(found, reference, chunks(), chunk_frames=16, overlap_frames=4, paste=False,
                             num_steps=2):
        fed_at_first = fed[-1] if fed_at_first is None else fed_at_first
        batches.append(batch)
    frames = np.concatenate(batches)
    assert frames.shape == (len(wav) // SAMPLES_PER_FRAME, SIZE, SIZE, 3)
    assert fed_at_first <= 20 * SAMPLES_PER_FRAME + 3200  # the first chunk (16 frames) was enough to start
    with pytest.raises(ValueError, match="overlap_frames must be in"):
        next(face.stream(found, reference, chunks(), chunk_frames=8, overlap_frames=8))


def test_batch_jobs_report_the_bad_one_and_do_the_rest(material, tmp_path, capsys):
    root, files, runs = material
    jobs = tmp_path / "jobs.jsonl"
    good = {"image": str(files["photo"]), "audio": str(files["speech"]), "reference": str(files["reference"]),
            "out": str(tmp_path / "good.mp4")}
    jobs.write_text("\n".join(json.dumps(j) for j in [
        {**good, "image": str(tmp_path / "missing.jpg"), "out": str(tmp_path / "bad.mp4")}, good, {"image": "x"}]))
    assert cli.main(["generate", "--model", "mimictalk", "--generator", str(runs["mimictalk"]), "--renderer",
                     str(runs["renderer"]), "--batch", str(jobs), "--steps", "2"]) == 1
    out = capsys.readouterr().out
    assert "jobs.jsonl:1" in out and "missing.jpg" in out and "jobs.jsonl:3" in out and "missing ['audio'" in out
    assert "1 of 3 jobs done" in out
    assert video.read_mp4(tmp_path / "good.mp4").frames.shape[0] == 50 and not (tmp_path / "bad.mp4").exists()


def test_bad_photos_and_mismatched_runs_are_refused_by_name(material, tmp_path, capsys, tiny_dataset):
    root, files, runs = material
    Image.fromarray(np.full((300, 300, 3), 128, np.uint8)).save(tmp_path / "wall.png")
    Image.fromarray(skimage.data.astronaut()[::10, ::10]).save(tmp_path / "tiny.png")
    two = real_videos.frames(1, second_face=True)[0]
    found = portrait.find_portrait(two, SIZE)
    assert found.faces == 2 and "animating the largest" in found.note
    assert found.crop.shape == (SIZE, SIZE, 3) and found.motion is None
    synthtalk = _train(base_config.load_config_file(base_config.config_path("mimictalk_a2m"), "tiny"), tiny_dataset,
                       tmp_path / "synthtalk_run")
    cases = [
        (["--image", str(tmp_path / "wall.png")], ["wall.png", "no face found"]),
        (["--image", str(tmp_path / "tiny.png")], ["tiny.png", "64"]),
        (["--reference", str(tmp_path / "wall.png")], ["--reference", "wall.png"]),
        (["--renderer", str(runs["mimictalk"])], ["--renderer", "not a renderer"]),
        (["--generator", str(synthtalk)], ["synthtalk_run", "no real-face motion basis"]),
    ]
    base = ["generate", "--model", "mimictalk", "--generator", str(runs["mimictalk"]), "--renderer",
            str(runs["renderer"]), "--image", str(files["photo"]), "--audio", str(files["speech"]), "--reference",
            str(files["reference"]), "--out", str(tmp_path / "never.mp4")]
    for change, needles in cases:
        args = list(base)
        for flag, value in zip(change[::2], change[1::2]):
            args[args.index(flag) + 1] = value
        assert cli.main(args) == 2, change
        err = capsys.readouterr().err
        assert "Traceback" not in err and all(n in err for n in needles), (needles, err)
    assert not (tmp_path / "never.mp4").exists()


@pytest.mark.slow  # about 2.5 minutes; the evaluation suite runs by default in test_demo, renderer scores in test_prepare
def test_evaluation_runs_on_the_prepared_real_dataset(material, tmp_path, capsys, syncnet_dir):
    """`mirrortalk evaluate` on a dataset of `mirrortalk data prepare` (a 29-channel mesh space, no SynthTalk face):
    predictions are rendered from each clip's first frame, landmarks re-tracked on both sides, CSIM from dlib's
    identity embeddings, previews of real | generated frames."""
    root, files, runs = material
    corpus = base_config.config_path("real_corpus")
    judges = {stage: _train(base_config.load_config_file(corpus, f"hdtf,{stage},tiny"), root / "data",
                            tmp_path / stage) for stage in ("motion_expert", "style_encoder")}
    args = ["evaluate", "--dataset_dir", str(root / "data"), "--splits", "train", "--expert",
            str(judges["motion_expert"]), "--judge", str(judges["style_encoder"]), "--model",
            f"MirrorTalk={runs['mirrortalk']}", "--model", f"ICS-A2M={runs['mimictalk']}", "--num_steps", "2",
            "--vshift", "2", "--out", str(tmp_path / "results")]
    assert cli.main(args) == 2  # no built-in face for a mesh space: a renderer is asked for
    assert "no built-in face; give --renderer" in capsys.readouterr().err
    assert cli.main(args + ["--syncnet", str(syncnet_dir)]) == 2
    assert "--syncnet scores rendered frames: give --renderer too" in capsys.readouterr().err
    assert cli.main(args + ["--renderer", str(runs["renderer"]), "--previews", "1", "--syncnet", str(syncnet_dir)]) == 0
    rows = json.loads((tmp_path / "results" / "results.json").read_text())["rows"]["train"]
    assert set(rows) >= {"Ground Truth", "Mean motion", "MirrorTalk", "ICS-A2M"}
    for name, metrics in rows.items():
        assert metrics["num_clips"] == 2
        for key in ("ssim", "psnr", "m_lmd", "f_lmd", "csim", "aed", "apd", "lse_c", "style_sim", "fid",
                    "syncnet_lse_c", "syncnet_lse_d"):
            assert metrics[key] is not None and np.isfinite(metrics[key]), (name, key)
        assert -1.0 <= metrics["csim"] <= 1.0 and metrics["landmark_frames"] > 0.0
    assert rows["Ground Truth"]["aed"] == 0.0 and rows["MirrorTalk"]["aed"] > 0.0
    previews = list((tmp_path / "results" / "previews").glob("*.mp4"))
    assert len(previews) == 1 and video.read_mp4(previews[0]).frames.shape[1:] == (SIZE, 2 * SIZE, 3)


def test_the_web_demo_serves_both_models_through_its_api(material, tmp_path, monkeypatch):
    """`mirrortalk serve`'s app on loopback, driven as a user's script would: gradio_client uploads the files and
    calls /generate; the video it returns is the command's."""
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client, handle_file

    from mirrortalk_jax.generate import web_app

    root, files, runs = material
    app = web_app.build_app({"MirrorTalk": runs["mirrortalk"], "MimicTalk": runs["mimictalk"]}, runs["renderer"],
                            out_dir=tmp_path / "served")
    _, url, _ = app.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        client = Client(url, verbose=False)
        photo, speech = handle_file(str(files["photo"])), handle_file(str(files["speech"]))
        # MirrorTalk with region guidance and the style video; MimicTalk without a reference video.
        path, details = client.predict(photo, speech, handle_file(str(files["reference"])), "MirrorTalk", 2,
                                       1.0, 1.5, 2.0, 1.0, 1.0, 1.0, api_name="/generate")
        assert video.read_mp4(path).frames.shape == (50, 512, 512, 3) and details.startswith("50 frames")
        path, details = client.predict(photo, speech, None, "MimicTalk", 2, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                                       api_name="/generate")
        assert video.read_mp4(path).frames.shape == (50, 512, 512, 3)
        assert "no reference video" in details
    finally:
        app.close()
    face = TalkingFace.load(runs["mimictalk"], runs["renderer"])
    assert web_app.guidance_for(face, {"style": 1.0, "lower": 2.0}) is None  # ICS-A2M reads no regions
    assert web_app.guidance_for(face, {"style": 1.5, "lower": 2.0}) == {"style": 1.5}


FROM_ARTIFACTS = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import runtime
    generator, renderer = runtime.load(sys.argv[2]), runtime.load(sys.argv[3])
    x = np.load(sys.argv[4])
    motion = generator(audio=x["audio"], reference_motion=x["reference_motion"], reference_mask=x["reference_mask"],
                       reference_audio=x["reference_audio"], seed=np.int32(0))["motion"][0]
    n = len(motion)
    frames = renderer(source_image=np.repeat(x["portrait"][None], n, 0),
                      source_motion=np.repeat(x["portrait_motion"][None], n, 0), driving_motion=motion)["image"]
    assert not [m for m in sys.modules if m.split(".")[0] in ("mirrortalk_jax", "flax")]
    np.savez(sys.argv[5], motion=motion, frames=frames)
""")


def test_speech_to_frames_runs_from_exported_artifacts_alone(material, tmp_path, capsys):
    """`mirrortalk export generator` + `export renderer`: a fresh process with runtime.py, jax and numpy turns a
    window of audio features, a reference and a portrait into the same motion and frames as the package."""
    root, files, runs = material
    from mirrortalk_jax.data import media
    from mirrortalk_jax.export import runtime
    from mirrortalk_jax.sample import frames as render
    from mirrortalk_jax.generate.reference import reference_clip

    (tmp_path / "served").mkdir()
    for file in (runtime.__file__, safe_paths.__file__):
        shutil.copy(file, tmp_path / "served")
    renderer_art = tmp_path / "renderer_art"
    assert cli.main(["export", "renderer", "--checkpoint", str(runs["renderer"]), "--out", str(renderer_art),
                     "--platforms", "cpu"]) == 0
    for model in ("mirrortalk", "mimictalk"):
        art = tmp_path / f"{model}_art"
        assert cli.main(["export", "generator", "--checkpoint", str(runs[model]), "--out", str(art),
                         "--platforms", "cpu"]) == 0
        face = TalkingFace.load(runs[model], runs["renderer"])
        window = face.generator.window_frames
        assert runtime.load(art).manifest["conventions"]["window_frames"] == window
        audio = face.features(media.read_audio(files["speech"]))[None, :window]
        reference = face.reference(reference_clip(files["reference"], face.basis))
        found = face.portrait(np.asarray(Image.open(files["photo"])))
        np.savez(tmp_path / "inputs.npz", audio=audio, reference_motion=reference.motion,
                 reference_mask=reference.mask.astype(np.float32), reference_audio=reference.audio,
                 portrait=found.crop.astype(np.float32) / 127.5 - 1.0, portrait_motion=found.motion)
        subprocess.run([sys.executable, "-c", FROM_ARTIFACTS, str(tmp_path / "served"), str(art), str(renderer_art),
                        str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")], check=True, timeout=600)
        # The same XLA_FLAGS (device count) as this process: CPU XLA's threading follows it, and the untrained
        # ICS-A2M's ODE amplifies its last-bit differences.
        want = face.generator.generate(audio, reference, jax.random.key(0))[0]
        with np.load(tmp_path / "out.npz") as out:
            np.testing.assert_allclose(out["motion"], want, atol=1e-4)
            frames = render.to_uint8(out["frames"])
        expected = render.render_clip(face.renderer, found.crop, found.motion, want)
        assert np.abs(frames.astype(int) - expected).max() <= 1
    capsys.readouterr()
    assert cli.main(["export", "generator", "--checkpoint", str(runs["renderer"]), "--out",
                     str(tmp_path / "never")]) == 2
    assert "'motion_renderer' does not generate motion" in capsys.readouterr().err


def test_pasting_the_photos_own_crop_back_restores_the_photo():
    photo = skimage.data.astronaut()
    transform = np.array([0.25, -30.0, -5.0], np.float32)  # a 256-pixel square at (120, 20), to 64 pixels
    crop = dataset.clips.crop(photo, transform, SIZE)
    paste = paste_back.PasteBack(photo, transform, SIZE)
    out = paste(crop)
    x0, y0, x1, y1 = paste.box
    assert (x0, y0, x1, y1) == (120, 20, 376, 276)
    outside = np.ones(photo.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(out[outside], photo[outside])
    # Inside: the photo, up to the 4x down- and up-sampling of the crop.
    assert np.abs(out[y0:y1, x0:x1].astype(float) - photo[y0:y1, x0:x1]).mean() < 12.0
    mask = paste_back.soft_mask(SIZE)
    assert mask[SIZE // 2, SIZE // 2] == 1.0 and mask[0, 0] == 0.0 and mask[0, SIZE // 2] < 0.05
    with pytest.raises(ValueError, match=r"expected a \(64, 64, 3\) generated crop"):
        paste(crop[:32])


def test_blinks_and_pose_spread_are_counted():
    spec = dataset.motion_space.motion_spec("mesh", 2, 1)
    t = np.arange(250)  # 10 s
    motion = np.zeros((250, spec.dim), np.float32)
    eyes = np.full(250, 0.3)
    for start in (30, 120, 200):  # three closures of 4 frames
        eyes[start:start + 4] = 0.05
    motion[:, spec.index("eye_open_right")] = motion[:, spec.index("eye_open_left")] = eyes
    motion[:, spec.index("yaw")] = np.radians(10.0) * np.sin(t / 10.0)
    stats = head_motion.summary(motion, spec)
    assert stats["blinks"] == 3 and stats["blinks_per_min"] == pytest.approx(18.0)
    assert stats["pose_std_deg"] == pytest.approx(10.0 / np.sqrt(2) / 3, rel=0.05)
    with pytest.raises(ValueError, match="no channel"):
        head_motion.summary(np.zeros((10, SYNTHTALK_SPEC.dim)), SYNTHTALK_SPEC)
