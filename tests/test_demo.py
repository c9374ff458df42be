"""The demo job end to end on a shrunk budget, the `evaluate` command on its runs, and the suite's baselines."""

import io
import json
import math

import jax
import numpy as np
import pytest
from PIL import Image

from mirrortalk_jax import cli, demo
from mirrortalk_jax.data import video
from mirrortalk_jax.evaluate import results_table, suite
from mirrortalk_jax.runs import loader
from mirrortalk_jax.sample import generators

STAGES = ("motion_expert", "style_encoder", "mirrortalk", "regression", "style_judge", "dreamtalk_lip_expert", "dreamtalk",
          "mimictalk_a2m")
STEPS = tuple((stage, 6) for stage in STAGES)


@pytest.fixture(scope="module")
def demo_run(tiny_dataset, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    settings = demo.DemoSettings(workdir=str(workdir), dataset_dir=str(tiny_dataset), steps=STEPS, max_clips=0,
                                 previews=1, eval=suite.Settings(num_steps=2))
    log = []
    paths = demo.run(settings, log=log.append)
    return settings, paths, log


def test_demo_writes_table_previews_and_curves(demo_run):
    settings, paths, log = demo_run
    table = results_table.read_json(paths["results_json"])
    assert results_table.read_csv(paths["results_csv"]).rows.keys() == table.rows.keys()
    assert paths["results_md"].read_text().startswith("| split | method | SSIM ↑")
    for split in settings.splits:
        rows = table.rows[split]
        assert list(rows) == ["Ground Truth", "Mean motion", "Nearest-neighbour audio retrieval",
                              "Audio-only regression", "MirrorTalk", "DreamTalk", "MimicTalk ICS-A2M",
                              "MirrorTalk (other-speaker reference)"]
        gt = rows["Ground Truth"]
        # Ground truth against itself: the metrics' fixed points.
        assert gt["ssim"] == pytest.approx(1.0) and math.isinf(gt["psnr"]) and gt["fid"] == pytest.approx(0, abs=1e-6)
        # Landmarks are recomputed in float32 from the record's motion: zero up to rounding.
        assert gt["m_lmd"] < 1e-5 and gt["f_lmd"] < 1e-5 and gt["aed"] == 0.0 and gt["apd"] == 0.0
        for name, metrics in rows.items():
            finite = {k: v for k, v in metrics.items() if k != "psnr" or name != "Ground Truth"}
            assert all(np.isfinite(v) for v in finite.values() if v is not None), (split, name, metrics)
            if name != "Ground Truth":
                assert metrics["m_lmd"] > 0 and metrics["ssim"] < 1
    previews = sorted(paths["previews"].glob("*.mp4"))
    assert len(previews) == len(settings.splits)
    clip = video.read_mp4(previews[0])
    assert clip.frames.shape[2] == 2 * clip.frames.shape[1] and clip.audio.size > 0  # GT | generated, with audio
    png = Image.open(io.BytesIO(paths["curves"].read_bytes()))
    assert png.format == "PNG" and png.size[0] > 400
    assert "wrote:" in log[-1] and str(paths["results_md"]) in log[-1]


def test_dreamtalk_stage_trains_with_its_lip_expert(demo_run):
    settings, _, _ = demo_run
    runs = demo.Path(settings.workdir) / "runs"
    logged = [json.loads(line) for line in (runs / "dreamtalk" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in logged if "train/sync" in r]
    assert train and all(np.isfinite(r["train/sync"]) and r["train/sync"] > 0 for r in train)
    for r in train:  # the total is the denoising loss plus the weighted sync term
        assert r["train/loss"] == pytest.approx(r["train/denoise"] + demo.DREAMTALK_SYNC_WEIGHT * r["train/sync"],
                                                rel=1e-4)


def test_demo_rerun_resumes_instead_of_retraining(demo_run):
    settings, paths, _ = demo_run
    log = []
    demo.train_stages(demo.plan_stages(settings, demo.Path(settings.dataset_dir)), demo.Path(settings.workdir) / "runs",
                      log=log.append)
    assert len(log) == len(STEPS) and all("done earlier" in line for line in log)


def test_evaluate_command_matches_the_demo(demo_run, tmp_path):
    settings, paths, _ = demo_run
    runs = demo.Path(settings.workdir) / "runs"
    out = tmp_path / "eval"
    code = cli.main(["evaluate", "--dataset_dir", settings.dataset_dir, "--splits", "heldout_speakers",
                     "--expert", str(runs / "motion_expert"), "--judge", str(runs / "style_judge"),
                     "--regression", str(runs / "regression"), "--model", f"MirrorTalk={runs / 'mirrortalk'}",
                     "--model", f"DreamTalk={runs / 'dreamtalk'}",
                     "--model", f"MimicTalk ICS-A2M={runs / 'mimictalk_a2m'}", "--num_steps", "2", "--out", str(out)])
    assert code == 0
    ours = results_table.read_json(out / "results.json").rows["heldout_speakers"]
    theirs = results_table.read_json(paths["results_json"]).rows["heldout_speakers"]
    for method in ("Mean motion", "Audio-only regression", "MirrorTalk", "DreamTalk", "MimicTalk ICS-A2M"):
        for key in ("m_lmd", "lse_c", "style_sim", "ssim"):
            assert ours[method][key] == pytest.approx(theirs[method][key], rel=1e-5), (method, key)
    assert cli.main(["evaluate", "--dataset_dir", settings.dataset_dir, "--expert", str(runs / "motion_expert"),
                     "--judge", str(runs / "style_judge"), "--model", "no-equals-sign"]) == 2


def test_nearest_neighbour_recovers_training_motion(tiny_dataset):
    """Queried with training clips, audio retrieval must mostly find the very frames it was built from."""
    split = suite.load_split(tiny_dataset, "train", "log_mel", 48, with_frames=False)
    preds = suite.nearest_neighbour(tiny_dataset, "log_mel")(split)
    exact = np.mean([np.mean(np.all(p == c.motion, axis=1)) for p, c in zip(preds, split.clips)])
    assert exact > 0.9
    mean = suite.mean_motion(tiny_dataset)(split)
    assert all(np.allclose(m, m[0]) for m in mean)


def test_split_selection_keeps_a_reference_for_every_clip(tiny_dataset):
    split = suite.load_split(tiny_dataset, "heldout_speakers", "log_mel", 48, with_frames=False, max_clips=3)
    speakers = [c.speaker for c in split.clips]
    assert all(speakers.count(s) >= 2 for s in speakers)
    for i, c in enumerate(split.clips):
        assert c.ref_index != i and split.clips[c.ref_index].speaker == c.speaker
        assert split.clips[c.control_ref_index].speaker != c.speaker


def test_bad_demo_arguments_fail_with_a_clear_message(tiny_dataset, tmp_path, capsys):
    assert demo.parse_steps("mirrortalk=8,regression=3") == (("mirrortalk", 8), ("regression", 3))
    for bad in ("mirrortalk=abc", "mirrortalk", "=5", "mirrortalk=0"):
        with pytest.raises(ValueError, match="STAGE=POSITIVE_INT"):
            demo.parse_steps(bad)
    args = ["demo", "--workdir", str(tmp_path / "w"), "--dataset_dir", str(tiny_dataset)]
    assert cli.main(args + ["--steps", "no_such_stage=5"]) == 2
    assert "unknown stage" in capsys.readouterr().err
    assert cli.main(args + ["--ablations", "no_such_ablation"]) == 2
    assert "unknown ablation" in capsys.readouterr().err
    assert cli.main(args + ["--competitors", "wav2lip"]) == 2
    assert "unknown competitor" in capsys.readouterr().err
    assert not (tmp_path / "w" / "runs").exists()  # nothing trained, nothing half-written


def test_suite_runs_only_generators_on_their_own_audio_features(demo_run, tiny_dataset):
    settings, _, _ = demo_run
    runs = demo.Path(settings.workdir) / "runs"
    with pytest.raises(ValueError, match="does not generate motion; generators: .*dreamtalk"):
        suite.generator(runs / "motion_expert", suite.Settings())
    split = suite.load_split(tiny_dataset, "heldout_speakers", "mfcc", 48, with_frames=False, max_clips=2)
    for name in ("mirrortalk", "dreamtalk", "mimictalk_a2m"):
        with pytest.raises(ValueError, match="trained on audio features 'log_mel'.*loaded with 'mfcc'"):
            suite.generator(runs / name, suite.Settings(num_steps=2))(split)


def test_every_generator_behind_one_interface(demo_run, tiny_dataset):
    """The trained runs load as one kind of object, take the same inputs, refuse settings they have no use for,
    and the trainer's samplers are theirs."""
    settings, _, _ = demo_run
    runs = demo.Path(settings.workdir) / "runs"
    split = suite.load_split(tiny_dataset, "heldout_speakers", "log_mel", 48, with_frames=False, max_clips=2)
    clips = split.clips[:2]
    audio = np.stack([c.audio[:40] for c in clips])
    reference = generators.Reference.of_clips([c.motion for c in clips], 48, [c.audio for c in clips])
    assert reference.motion.shape == (2, 48, clips[0].motion.shape[1]) and reference.mask.shape == (2, 48)
    for name in ("mirrortalk", "dreamtalk", "mimictalk_a2m", "regression"):
        generator = loader.load_generator(runs / name)
        assert isinstance(generator, generators.MotionGenerator) and generator.audio_feature == "log_mel"
        sampling = {"num_steps": 2} if "num_steps" in generator.accepts else {}
        out = generator.generate(audio, reference, jax.random.key(0), **sampling)
        assert out.shape == (2, 40, clips[0].motion.shape[1]) and np.all(np.isfinite(out)), name
        if generator.accepts:
            with pytest.raises(TypeError, match="takes the sampling settings.*got \\['temperature_x'\\]"):
                generator.generate(audio, reference, jax.random.key(0), temperature_x=1.0)
        sampler = generators.eval_sampler(generator.config.model.name)
        assert (sampler is None) == (name == "regression"), name
    with pytest.raises(ValueError, match="reads guidance \\['style'\\]; got \\['lower'\\]"):
        loader.load_generator(runs / "dreamtalk").generate(audio, reference, jax.random.key(0),
                                                     guidance={"lower": 2.0})


def test_generators_follow_the_reference_clip(demo_run, tiny_dataset):
    """Each generator reads the style reference: the other-speaker control changes every prediction, and
    the same reference reproduces it exactly (fixed seed)."""
    settings, _, _ = demo_run
    runs = demo.Path(settings.workdir) / "runs"
    split = suite.load_split(tiny_dataset, "heldout_speakers", "log_mel", 48, with_frames=False, max_clips=4)
    for name in ("dreamtalk", "mimictalk_a2m"):
        own = suite.generator(runs / name, suite.Settings(num_steps=2))(split)
        again = suite.generator(runs / name, suite.Settings(num_steps=2))(split)
        other = suite.generator(runs / name, suite.Settings(num_steps=2), control=True)(split)
        for a, b, c, clip in zip(own, again, other, split.clips):
            assert a.shape == clip.motion.shape and np.all(np.isfinite(a))
            np.testing.assert_array_equal(a, b)
            assert np.abs(a - c).max() > 1e-4, name
