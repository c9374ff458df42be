"""Shared fixtures: one tiny SynthTalk build per test session (a few seconds on one core)."""

import os

# Tests see 8 CPU devices so sharding code runs on a real multi-device mesh; set before jax is imported.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import pytest  # noqa: E402

from mirrortalk_jax.data.synthtalk import builder, corpus  # noqa: E402

# Smaller than the `tiny` variant where a test only needs a handful of clips.
MICRO = corpus.SynthTalkConfig(name="micro", train_speakers=3, heldout_speakers=1, sentences_per_speaker=2,
                               heldout_sentences=1, image_size=48)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Path of a SynthTalk `tiny` build shared by the session's tests (read-only for them)."""
    return builder.build(tmp_path_factory.mktemp("synthtalk"), "tiny", num_workers=1)


@pytest.fixture(scope="session")
def micro_dataset(tmp_path_factory):
    return builder.build(tmp_path_factory.mktemp("synthtalk_micro"), MICRO, num_workers=1)
