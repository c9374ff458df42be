"""safe_paths: only plain names of regular files inside the folder, refused before anything is opened."""

import os
import subprocess
import sys

import pytest

from mirrortalk_jax.safe_paths import UnsafePathError, is_plain_name, plain_file_in


@pytest.mark.parametrize("name", ["weights.npz", "model-00001-of-00002.safetensors", ".hidden", "a..b"])
def test_plain_names_are_accepted(name):
    assert is_plain_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", "../outside.bin", "sub/file", "/etc/passwd", "/dev/zero",
                                  "a\0b", None, 3, b"weights.npz"])
def test_names_with_a_folder_part_or_not_strings_are_refused(name, tmp_path):
    assert not is_plain_name(name)
    with pytest.raises(UnsafePathError, match="is not a plain file name"):
        plain_file_in(tmp_path, name)


def test_only_regular_files_inside_the_folder(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"x")
    assert plain_file_in(tmp_path, "w.bin") == tmp_path / "w.bin"
    outside = tmp_path.parent / f"{tmp_path.name}_outside.bin"
    outside.write_bytes(b"secret")
    (tmp_path / "link.bin").symlink_to(outside)
    (tmp_path / "inner_link.bin").symlink_to(tmp_path / "w.bin")  # refused too: lstat does not follow links
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "fifo.bin")
    for name, kind in [("link.bin", "symbolic link"), ("inner_link.bin", "symbolic link"), ("sub", "folder"),
                       ("fifo.bin", "FIFO")]:
        with pytest.raises(UnsafePathError, match=f"{name} is a {kind}, expected a regular file"):
            plain_file_in(tmp_path, name)
    with pytest.raises(UnsafePathError, match="missing.bin: no such file"):
        plain_file_in(tmp_path, "missing.bin")


def test_device_files_are_refused():
    with pytest.raises(UnsafePathError, match="/dev/zero is a character device"):
        plain_file_in("/dev", "zero")


def test_imports_only_the_standard_library():
    code = ("import sys, mirrortalk_jax.safe_paths; "
            "heavy = [m for m in ('numpy', 'jax', 'flax', 'torch') if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
