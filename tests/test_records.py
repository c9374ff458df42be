"""The TFDS/ArrayRecord build, the record schema, and the errors bad datasets and records raise."""

import json
import os
import shutil

import numpy as np
import pytest

from mirrortalk_jax.data import schema, sources
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC, MotionSpec
from mirrortalk_jax.data.synthtalk import builder, corpus
from tests.conftest import MICRO


def test_build_layout_and_counts(micro_dataset):
    plans = corpus.plan_clips(MICRO)
    for split in corpus.SPLITS:
        source = sources.ClipSource(micro_dataset, split)
        assert len(source) == len(plans[split])
        assert {e["clip_id"] for e in source.clip_index()} == {p.clip_id for p in plans[split]}
    assert not [p for p in os.listdir(micro_dataset.parent) if p.startswith(".")]  # no staging left behind


def test_records_round_trip_equal_to_generated_clips(micro_dataset):
    """What a reader gets back is exactly what the generator produced (schema round trip, same seed)."""
    source = sources.ClipSource(micro_dataset, "train")
    plans = {p.clip_id: p for p in corpus.plan_clips(MICRO)["train"]}
    for i in range(len(source)):
        record = source[i]
        expected = corpus.make_clip(MICRO, plans[record["clip_id"].decode()])
        for key in ("audio", "motion", "landmarks_3d", "landmarks_2d", "style_params"):
            np.testing.assert_array_equal(record[key], expected[key], err_msg=key)
        assert [bytes(f) for f in record["frames"]] == expected["frames"]
        assert int(record["speaker_index"]) == expected["speaker_index"]
        assert json.loads(record["metadata"])["phonemes"] == json.loads(expected["metadata"])["phonemes"]
    frames = schema.decode_frames(source[0]["frames"])
    assert frames.shape == (source[0]["motion"].shape[0], MICRO.image_size, MICRO.image_size, 3)


def test_parallel_build_is_identical_to_serial(tmp_path, micro_dataset):
    parallel = builder.build(tmp_path, MICRO, num_workers=2)
    for split in corpus.SPLITS:
        for name in os.listdir(micro_dataset):
            if split in name and "array_record" in name:
                assert (parallel / name).read_bytes() == (micro_dataset / name).read_bytes(), name


def test_rebuild_reuses_then_overwrites_atomically(tmp_path):
    path = builder.build(tmp_path, MICRO, num_workers=1)
    stamp = (path / "dataset_info.json").stat().st_mtime_ns
    assert builder.build(tmp_path, MICRO, num_workers=1) == path
    assert (path / "dataset_info.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert builder.build(tmp_path, MICRO, overwrite=True, num_workers=1) == path
    assert len(sources.ClipSource(path, "train")) == len(corpus.plan_clips(MICRO)["train"])
    assert sorted(os.listdir(path.parent)) == [path.name]


def test_interrupted_build_leaves_nothing_readable(tmp_path, monkeypatch):
    def boom(cfg, plan):
        raise KeyboardInterrupt("simulated interruption")
    monkeypatch.setattr(corpus, "make_clip", boom)
    with pytest.raises(KeyboardInterrupt):
        builder.build(tmp_path, MICRO, num_workers=1)
    final = builder.dataset_dir(tmp_path, MICRO.name)
    assert not final.exists()
    assert [p for p in final.parent.iterdir()] == []  # staging directory removed too
    with pytest.raises(sources.DatasetError, match="no dataset"):
        sources.ClipSource(final, "train")


def _copy(dataset, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(dataset, dst)
    return dst


def test_missing_and_corrupt_shards_name_the_file(micro_dataset, tmp_path):
    copy = _copy(micro_dataset, tmp_path)
    shard = next(copy.glob("*-train.array_record-*"))
    shard.write_bytes(b"this is not an array record file" * 10)
    with pytest.raises(sources.DatasetError, match=f"corrupt shard .*{shard.name}"):
        sources.ClipSource(copy, "train")
    shard.unlink()
    with pytest.raises(sources.DatasetError, match=f"missing shard .*{shard.name}"):
        sources.ClipSource(copy, "train")
    with pytest.raises(sources.DatasetError, match="no split 'validation'"):
        sources.ClipSource(copy, "validation")
    (copy / "dataset_info.json").unlink()
    with pytest.raises(sources.DatasetError, match="incomplete build"):
        sources.ClipSource(copy, "heldout_sentences")


def _good_record():
    return {"clip_id": "c0", "speaker": "s", "speaker_index": 0, "fps": 25.0, "sample_rate": 16000,
            "audio": np.zeros(10 * 640, np.float32), "motion": np.zeros((10, SYNTHTALK_SPEC.dim), np.float32),
            "landmarks_2d": np.zeros((10, 68, 2), np.float32), "metadata": "{}"}


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.update(audio=np.zeros(10 * 640 + 2000, np.float32)), "audio/motion length mismatch"),
    (lambda r: r.update(motion=np.zeros((10, 5), np.float32)), r"expected \(T, 18\)"),
    (lambda r: r["motion"].__setitem__((3, 2), np.nan), "motion contains NaN"),
    (lambda r: r.update(landmarks_2d=np.zeros((9, 68, 2), np.float32)), "landmarks_2d has shape"),
    (lambda r: r.pop("speaker"), "missing fields"),
    (lambda r: r.update(frames=[b"x"] * 3), "has 3 frames, expected 10"),
])
def test_schema_validation_errors(mutate, message):
    record = _good_record()
    schema.validate_record(record, SYNTHTALK_SPEC, "shard-x record 4")
    mutate(record)
    with pytest.raises(schema.RecordError, match=message) as info:
        schema.validate_record(record, SYNTHTALK_SPEC, "shard-x record 4")
    assert "shard-x record 4" in str(info.value) and "'c0'" in str(info.value)


def test_bad_record_raises_or_is_skipped(micro_dataset, monkeypatch):
    source = sources.ClipSource(micro_dataset, "train")
    original = source._features.deserialize_example_np
    target = source[1]["clip_id"]
    def corrupt_second(raw):
        record = original(raw)
        if record["clip_id"] == target:
            record["motion"] = record["motion"][:-5]  # audio now longer than the motion
        return record
    monkeypatch.setattr(source._features, "deserialize_example_np", corrupt_second)
    with pytest.raises(schema.RecordError, match=r"array_record-00000-of-00001 record 1 .*length mismatch"):
        source[1]
    skipping = sources.ClipSource(micro_dataset, "train", on_bad_record="skip")
    monkeypatch.setattr(skipping._features, "deserialize_example_np", corrupt_second)
    assert skipping[1] is None and skipping.bad_records == 1
    assert skipping[0] is not None


def test_motion_spec_validation_and_json():
    assert MotionSpec.from_json(SYNTHTALK_SPEC.to_json()) == SYNTHTALK_SPEC
    assert list(SYNTHTALK_SPEC.group_indices("lower")) == list(range(6))
    split = SYNTHTALK_SPEC.split(np.arange(18.0)[None])
    assert split["pose"].tolist() == [[12, 13, 14, 15, 16, 17]]
    with pytest.raises(ValueError, match="missing required groups"):
        MotionSpec("x", ("a",), {"lower": ("a",)})
    with pytest.raises(ValueError, match="belong to no group"):
        MotionSpec("x", ("a", "b", "c", "d", "e"),
                   {"lower": ("a",), "upper": ("b",), "eyes": ("c",), "pose": ("d",)})
