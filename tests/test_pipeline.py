"""Grain pipeline: window contents, resumable iterator state, per-process shards, global arrays."""

import itertools

import grain
import jax
import numpy as np
import pytest

from mirrortalk_jax.data import audio_features, pipeline, sources

WINDOW = pipeline.WindowConfig(window_frames=16, reference_frames=24, audio_feature="log_mel", waveform=True,
                               landmarks=True, frames="window")


@pytest.fixture(scope="module")
def source(tiny_dataset):
    return sources.ClipSource(tiny_dataset, "train")


def _batches(source, n, **kwargs):
    ds = pipeline.training_dataset(source, WINDOW, batch_size=kwargs.pop("batch_size", 4), seed=3, **kwargs)
    return list(itertools.islice(iter(ds), n))


def test_window_contents_are_aligned(source):
    batch = _batches(source, 1)[0]
    b, length = 4, WINDOW.window_frames
    assert batch["motion"].shape == (b, length, 18) and batch["motion_mask"].shape == (b, length)
    assert batch["audio_features"].shape == (b, length, 4 * 80)
    assert batch["waveform"].shape == (b, length * 640)
    assert batch["frames"].shape == (b, length, 64, 64, 3) and batch["frames"].dtype == np.uint8
    assert batch["reference_motion"].shape == (b, 24, 18) and batch["reference_mask"].dtype == bool
    for i in range(b):
        record = source[int(batch["clip_index"][i])]
        start = int(batch["start_frame"][i])
        np.testing.assert_array_equal(batch["motion"][i], record["motion"][start:start + length])
        np.testing.assert_array_equal(batch["waveform"][i], record["audio"][start * 640:(start + length) * 640])
        feats = audio_features.audio_frame_features(record["audio"], record["motion"].shape[0])
        np.testing.assert_allclose(batch["audio_features"][i], feats[start:start + length], rtol=1e-5, atol=1e-5)
        assert int(batch["speaker_index"][i]) == int(record["speaker_index"])
        np.testing.assert_array_equal(batch["style_params"][i], record["style_params"])


def test_reference_is_another_clip_of_the_same_speaker(source):
    index = source.clip_index()
    for batch in _batches(source, 3):
        for i in range(len(batch["motion"])):
            own = int(batch["clip_index"][i])
            ref = batch["reference_motion"][i][batch["reference_mask"][i]]
            speaker = index[own]["speaker_index"]
            matches = []
            for j, entry in enumerate(index):
                if entry["speaker_index"] != speaker or j == own:
                    continue
                motion = source[j]["motion"]
                for s in range(motion.shape[0] - len(ref) + 1):
                    if np.array_equal(motion[s:s + len(ref)], ref):
                        matches.append(j)
                        break
            assert matches, f"reference of clip {own} is not a window of another clip of speaker {speaker}"


def test_iterator_state_resumes_exactly(source):
    ds = pipeline.training_dataset(source, WINDOW, batch_size=4, seed=5)
    it = iter(ds)
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    resumed = iter(pipeline.training_dataset(source, WINDOW, batch_size=4, seed=5))
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_process_shards_are_disjoint_and_cover_each_epoch(source):
    n = len(source)
    per_process = n // 2
    seen = []
    for p in range(2):
        it = iter(pipeline.training_dataset(source, WINDOW, batch_size=2, seed=9, process_index=p,
                                            process_count=2, num_epochs=1))
        clips = [int(c) for batch in it for c in batch["clip_index"]]
        assert len(clips) == per_process
        seen.append(set(clips))
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == set(range(n))
    # The single-process stream covers the same clips.
    single = [int(c) for b in pipeline.training_dataset(source, WINDOW, batch_size=2, seed=9, process_index=0,
                                                         process_count=1, num_epochs=1) for c in b["clip_index"]]
    assert sorted(single) == list(range(n))


def test_global_batches_do_not_depend_on_the_process_count(source):
    """Global batch j holds the same windows (clip and start frame) with 1 process as with 2."""
    def windows(batch):
        return {(int(c), int(s)) for c, s in zip(batch["clip_index"], batch["start_frame"])}
    single = _batches(source, 5, batch_size=4, process_index=0, process_count=1)
    halves = [_batches(source, 5, batch_size=4, process_index=p, process_count=2) for p in range(2)]
    for j in range(5):
        assert windows(halves[0][j]) | windows(halves[1][j]) == windows(single[j])


def test_same_seed_same_stream_other_seed_differs(source):
    a, b = _batches(source, 2), _batches(source, 2)
    np.testing.assert_array_equal(a[1]["motion"], b[1]["motion"])
    c = list(itertools.islice(iter(pipeline.training_dataset(source, WINDOW, batch_size=4, seed=4)), 2))
    assert not np.array_equal(a[1]["motion"], c[1]["motion"])


def test_worker_processes_are_deterministic_and_read_the_same_windows(source):
    from absl import flags
    flags.FLAGS.mark_as_parsed()  # Grain workers read absl flags; outside absl.app.run they must be parsed
    window = pipeline.WindowConfig(window_frames=16, reference_frames=24)
    def take(workers, n=2):
        ds = pipeline.training_dataset(source, window, batch_size=4, seed=1, worker_count=workers)
        return list(itertools.islice(iter(ds), n))
    first, second, inline = take(2), take(2), take(0)
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x["motion"], y["motion"])
    # Workers interleave elements across batches (worker k batches elements k, k+2, ...), so compare sets.
    windows = lambda batches: sorted((int(c), int(s)) for b in batches  # noqa: E731
                                     for c, s in zip(b["clip_index"], b["start_frame"]))
    assert windows(first) == windows(inline)


def test_global_batch_on_a_mesh(source):
    mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    local = _batches(source, 1, batch_size=8)[0]
    batch = pipeline.to_global_batch(local, mesh)
    assert batch["motion"].shape == (8, 16, 18)
    assert batch["motion"].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
    assert len(batch["motion"].addressable_shards) == 8
    np.testing.assert_array_equal(np.asarray(batch["motion"]), local["motion"])


def test_bad_arguments(source):
    with pytest.raises(ValueError, match="does not divide"):
        pipeline.training_dataset(source, WINDOW, batch_size=3, seed=0, process_index=0, process_count=2)
    with pytest.raises(ValueError, match="audio_feature"):
        pipeline.WindowConfig(audio_feature="wav2vec9")
    assert isinstance(pipeline.training_dataset(source, WINDOW, batch_size=2, seed=0), grain.IterDataset)
