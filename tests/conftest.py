"""Shared fixtures: one tiny SynthTalk build per test session (a few seconds on one core), the converted tiny
SyncNet fixture."""

import importlib.util
import os
from pathlib import Path

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


@pytest.fixture(scope="session")
def syncnet_dir(tmp_path_factory):
    """The tiny SyncNet fixture (the original's random weights), converted as a user converts syncnet_v2.model."""
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("convert_syncnet", root / "tools" / "convert_syncnet.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path_factory.mktemp("syncnet") / "syncnet"
    assert tool.main(["--checkpoint", str(root / "tests" / "fixtures" / "syncnet" / "weights.safetensors"),
                      "--out", str(out), "--config", "mirrortalk_jax/configs/released/syncnet.py:tiny"]) == 0
    return out


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """gs://BUCKET/<unique folder> on a Cloud Storage emulator on loopback (tests/gcs_emulator.py), with the
    process's environment pointing gcsfs and tensorstore at it. Yields the folder's URI."""
    from tests import gcs_emulator

    log = tmp_path_factory.mktemp("gcs") / "emulator.log"
    with gcs_emulator.running(str(log)) as endpoint:
        saved = {k: os.environ.get(k) for k in gcs_emulator.variables(endpoint)}
        os.environ.update(gcs_emulator.variables(endpoint))
        try:
            yield f"gs://{gcs_emulator.BUCKET}/{os.getpid()}"
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
