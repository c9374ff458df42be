"""mirrortalk_jax.storage against a local folder and a Cloud Storage emulator (tests/gcs_emulator.py)."""

import os

import pytest
from etils import epath

from mirrortalk_jax import storage


def test_local_paths_are_expanded_and_absolute(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert storage.path("~/runs/x") == epath.Path(tmp_path / "runs" / "x")
    assert storage.path("runs/y") == epath.Path(tmp_path / "runs" / "y")
    assert not storage.is_remote("runs/gs://x") and storage.is_remote("gs://b/x")
    assert not storage.is_remote("file:///tmp/x")
    # A URI is never turned into a local folder named "gs:" (the bug this module exists for).
    assert os.fspath(storage.path("gs://bucket/runs/x")) == "gs://bucket/runs/x"
    assert not (tmp_path / "gs:").exists()


def _roundtrip(root: epath.Path, scratch):
    (root / "a").mkdir(parents=True, exist_ok=True)
    (root / "a" / "one.txt").write_text("1")
    (root / "two.bin").write_bytes(b"22")
    assert [f.relative_to(root).as_posix() for f in storage.files_under(root)] == ["a/one.txt", "two.bin"]
    assert storage.size(root / "two.bin") == 2

    storage.copy_folder(root, root.parent / f"{root.name}-copy", last=("two.bin",))
    assert (root.parent / f"{root.name}-copy" / "a" / "one.txt").read_text() == "1"

    (root / "tmp.txt").write_text("new")
    storage.replace(root / "tmp.txt", root / "two.bin")
    assert (root / "two.bin").read_text() == "new" and not (root / "tmp.txt").exists()

    with storage.local_file(root / "a" / "one.txt") as local:
        assert open(local).read() == "1"
    with storage.local_output(root / "out" / "x.txt") as local:
        open(local, "w").write("written locally")
    assert (root / "out" / "x.txt").read_text() == "written locally"

    storage.move_folder(root / "a", root / "moved")
    assert (root / "moved" / "one.txt").read_text() == "1" and not (root / "a").exists()


def test_local_roundtrip(tmp_path):
    _roundtrip(storage.path(tmp_path / "root"), tmp_path)


def test_gcs_roundtrip(gcs, tmp_path):
    root = storage.path(f"{gcs}/storage_roundtrip")
    assert storage.is_remote(root)
    _roundtrip(root, tmp_path)


def test_mirror_pulls_then_pushes_only_changed_files(gcs):
    root = storage.path(f"{gcs}/mirror")
    (root / "log.jsonl").write_text("old\n")
    mirror = storage.Mirror(root, pull=("log.jsonl", "absent.txt"))
    assert mirror.remote and (mirror.local / "log.jsonl").read_text() == "old\n"
    with open(mirror.local / "log.jsonl", "a") as f:  # appending, which a store cannot do
        f.write("new\n")
    (mirror.local / "sub").mkdir()
    (mirror.local / "sub" / "events").write_bytes(b"e")
    mirror.push()
    assert (root / "log.jsonl").read_text() == "old\nnew\n"
    assert (root / "sub" / "events").read_bytes() == b"e"
    (root / "sub" / "events").write_bytes(b"changed remotely")
    mirror.push()  # unchanged locally: not uploaded again
    assert (root / "sub" / "events").read_bytes() == b"changed remotely"
    local = mirror.local
    mirror.close()
    assert not local.exists()


def test_mirror_of_a_local_folder_is_the_folder(tmp_path):
    mirror = storage.Mirror(tmp_path / "w")
    assert not mirror.remote and mirror.local == tmp_path / "w" and mirror.local.is_dir()
    mirror.close()
    assert (tmp_path / "w").is_dir()


def test_missing_gcsfs_is_named(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_gcsfs(name, *args, **kwargs):
        if name == "gcsfs":
            raise ImportError("no gcsfs")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gcsfs)
    with pytest.raises(ImportError, match=r"mirrortalk_jax\[gcs\]"):
        storage.path("gs://bucket/x")
