"""Checkpoint integrity on real Orbax checkpoints of a tiny run: corrupt array data, an emptied iterator state
or a truncated _METADATA is named (step + file + what is wrong) instead of restoring silently or being blamed
on the model; an opt-in fallback resumes from the previous step; metrics.jsonl keeps one row per step."""

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from mirrortalk_jax.runs import checkpointing
from mirrortalk_jax.train import metrics, trainer
from mirrortalk_jax.train.metrics import read_metrics
from tests.test_trainer import _config


@pytest.fixture(scope="module")
def saved_run(micro_dataset, tmp_path_factory):
    """A finished 20-step run with checkpoints at steps 10 and 20. Read-only: tests corrupt copies of it."""
    workdir = tmp_path_factory.mktemp("integrity") / "run"
    trainer.train_and_evaluate(_config(micro_dataset, num_steps=20, checkpoint_every=10), workdir)
    return workdir


@pytest.fixture
def run_copy(saved_run, tmp_path):
    return Path(shutil.copytree(saved_run, tmp_path / "run"))


def _largest_array_file(step_dir: Path) -> Path:
    """The biggest data file of the state's OCDBT store (where Orbax puts the parameter bytes)."""
    files = [p for p in step_dir.glob("state/ocdbt.process_*/d/*") if p.is_file()]
    assert files, f"no OCDBT data files under {step_dir}/state"
    return max(files, key=lambda p: p.stat().st_size)


def _invert_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


def _flip_bits(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(64, len(data) - 64, 997):  # one bit in every ~1 KB, size unchanged
        data[i] ^= 1 << (i % 8)
    path.write_bytes(bytes(data))


def _steps(workdir: Path) -> list[int]:
    return [m["step"] for m in read_metrics(workdir) if "train/loss" in m]


@pytest.mark.parametrize("damage", [_invert_bytes, _flip_bits], ids=["inverted_bytes", "flipped_bits"])
def test_corrupt_array_data_is_named_not_restored(micro_dataset, run_copy, damage):
    corrupt = _largest_array_file(run_copy / "checkpoints" / "20")
    size = corrupt.stat().st_size
    damage(corrupt)
    assert corrupt.stat().st_size == size
    with pytest.raises(checkpointing.CorruptCheckpointError, match=re.escape(f"checkpoint step 20 is corrupt: {corrupt} "
                                                                           "differs from what was saved")) as e:
        trainer.train_and_evaluate(_config(micro_dataset, num_steps=25, checkpoint_every=10), run_copy)
    assert (e.value.step, e.value.path) == (20, str(corrupt))
    assert "steps [10] remain: set config.train.fallback_to_previous_checkpoint=True" in str(e.value)


def test_fallback_resumes_from_the_previous_step_that_verifies(micro_dataset, saved_run, run_copy, caplog):
    _invert_bytes(_largest_array_file(run_copy / "checkpoints" / "20"))
    config = _config(micro_dataset, num_steps=25, checkpoint_every=10)
    config.train.fallback_to_previous_checkpoint = True
    with caplog.at_level(logging.WARNING):
        state = trainer.train_and_evaluate(config, run_copy)
    assert "checkpoint step 20 is corrupt" in caplog.text and "falling back to step 10" in caplog.text
    assert int(state.step) == 25
    assert (run_copy / "checkpoints-corrupt" / "20" / "checksums.json").exists()  # kept aside for inspection
    assert sorted(int(p.name) for p in (run_copy / "checkpoints").iterdir() if p.name.isdigit()) == [10, 20, 25]
    assert _steps(run_copy) == list(range(1, 26))  # steps 11..20 redone: one row each
    # Resumed exactly at step 10 (state and data iterator): steps 11..20 repeat the first run's losses.
    want = {m["step"]: m["train/loss"] for m in read_metrics(saved_run)}
    got = {m["step"]: m["train/loss"] for m in read_metrics(run_copy)}
    assert [got[s] for s in range(1, 21)] == [want[s] for s in range(1, 21)]


@pytest.mark.parametrize("checksums", [True, False], ids=["sealed", "unsealed"])
@pytest.mark.parametrize("name, keep, cause", [("data_iter/process_0-of-1.json", 0, "is empty"),
                                               ("state/_METADATA", 500, "is truncated")])
def test_damaged_metadata_names_the_real_cause(micro_dataset, run_copy, checksums, name, keep, cause):
    """With the checksum file, its size check names the damage; without it (a checkpoint of an older version,
    or one the run could not seal before it stopped), the JSON the file must hold does."""
    step_dir = run_copy / "checkpoints" / "20"
    if not checksums:
        (step_dir / checkpointing.CHECKSUM_FILE).unlink()
    path = step_dir / name
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(checkpointing.CorruptCheckpointError,
                       match=re.escape(f"checkpoint step 20 is corrupt: {path} {cause}")):
        trainer.train_and_evaluate(_config(micro_dataset, num_steps=25, checkpoint_every=10), run_copy)


def test_every_checkpoint_is_sealed_and_verifies(saved_run, run_copy, caplog):
    ckpt = checkpointing.Checkpointer(run_copy / "checkpoints", async_save=False)
    try:
        for step in (10, 20):
            recorded = (run_copy / "checkpoints" / str(step) / checkpointing.CHECKSUM_FILE).read_text()
            assert "state/ocdbt.process_0/d/" in recorded and "data_iter/process_0-of-1.json" in recorded
            ckpt.verify(step)
        (run_copy / "checkpoints" / "20" / checkpointing.CHECKSUM_FILE).unlink()
        with caplog.at_level(logging.WARNING):
            ckpt.verify(20)  # a checkpoint without checksums still restores, with a warning
        assert "checkpoint step 20 has no checksums.json" in caplog.text
    finally:
        ckpt.close()


class _Interrupt(trainer.Preemption):
    """Stops the run with KeyboardInterrupt after step 15: no final checkpoint, the last one is step 10."""

    def should_stop(self, step):
        if step == 15:
            raise KeyboardInterrupt
        return super().should_stop(step)


def test_resumed_run_keeps_one_metrics_row_per_step(micro_dataset, saved_run, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    config = _config(micro_dataset, num_steps=20, checkpoint_every=10)
    monkeypatch.setattr(trainer, "Preemption", _Interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_and_evaluate(config, workdir)
    monkeypatch.undo()
    assert _steps(workdir) == list(range(1, 16))
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [10]
    trainer.train_and_evaluate(config, workdir)
    assert _steps(workdir) == list(range(1, 21))  # 11..15 were redone, and appear once
    want = [m["train/loss"] for m in read_metrics(saved_run)]
    np.testing.assert_array_equal([m["train/loss"] for m in read_metrics(workdir)], want)


def test_drop_rows_after_keeps_earlier_rows_and_drops_a_cut_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "train/loss": 2.0}\n{"step": 2, "eval/loss": 1.5}\n{"step": 2, "train/loss": 1.0}\n'
                    '{"step": 3, "train/loss": 0.5}\n{"step": 4, "tr')  # a kill in the middle of a write
    metrics.drop_rows_after(path, 2)
    assert path.read_text() == '{"step": 1, "train/loss": 2.0}\n{"step": 2, "eval/loss": 1.5}\n' \
                               '{"step": 2, "train/loss": 1.0}\n'
    assert not list(tmp_path.glob("*.tmp"))
