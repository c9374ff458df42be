"""The `mirrortalk data` commands and the dataset QC tool, run as a user would."""

import shutil
import subprocess
import sys

import numpy as np

from mirrortalk_jax import cli
from mirrortalk_jax.data import sources, video
from tests.test_trainer import ROOT


def test_build_then_inspect(tmp_path, capsys):
    assert cli.main(["data", "build", "--variant", "tiny", "--data_dir", str(tmp_path), "--workers", "1"]) == 0
    path = tmp_path / "synth_talk" / "tiny" / "1.0.0"
    assert f"ready at {path}" in capsys.readouterr().out
    assert cli.main(["data", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "split train: 16 clips, 4 speakers" in out
    assert "split heldout_speakers: 12 clips, 2 speakers" in out
    assert "motion: Tensor (None, 18) float32" in out and "lower: jaw_open" in out


def test_preview_mp4_has_the_records_frames_and_audio(tiny_dataset, tmp_path):
    out = tmp_path / "clip.mp4"
    assert cli.main(["data", "preview", str(tiny_dataset), "--split", "heldout_speakers", "--index", "2",
                     "--out", str(out)]) == 0
    record = sources.ClipSource(tiny_dataset, "heldout_speakers")[2]
    clip = video.read_mp4(out)
    assert clip.num_frames == record["motion"].shape[0]
    assert clip.fps == 25
    assert abs(clip.audio.shape[0] / clip.sample_rate - record["audio"].shape[0] / 16000) < 0.07
    assert clip.frames.shape[1:] == (64, 64, 3)
    assert np.abs(clip.audio).max() > 0.05  # speech, not silence


def test_bad_input_gives_a_message_and_exit_code(tmp_path, capsys):
    assert cli.main(["data", "inspect", str(tmp_path / "nothing")]) == 2
    assert "no dataset at" in capsys.readouterr().err
    assert cli.main(["data", "build", "--variant", "huge", "--data_dir", str(tmp_path)]) == 2
    assert "unknown SynthTalk variant 'huge'" in capsys.readouterr().err


def test_check_dataset_tool(micro_dataset, tmp_path):
    tool = [sys.executable, f"{ROOT}/tools/check_dataset.py"]
    good = subprocess.run(tool + [str(micro_dataset)], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert "train: 6 records, 0 bad" in good.stdout
    broken = tmp_path / "broken"
    shutil.copytree(micro_dataset, broken)
    next(broken.glob("*-train.array_record-*")).write_bytes(b"garbage" * 100)
    bad = subprocess.run(tool + [str(broken)], capture_output=True, text=True)
    assert bad.returncode == 2 and "corrupt shard" in bad.stderr
