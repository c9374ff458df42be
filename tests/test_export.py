"""Renderer artifacts: a converted fixture renderer exported with jax.export, then run by runtime.py alone in a fresh
process that never imports mirrortalk_jax, at two batch sizes, against the in-process model; loaders refuse
manifests that name files outside the artifact, devices, or damaged files, with an ArtifactError."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mirrortalk_jax import cli, safe_paths
from mirrortalk_jax.convert import pirenderer as convert_pir
from mirrortalk_jax.runs import loader
from mirrortalk_jax.export import renderers, runtime
from mirrortalk_jax.models.pirenderer import renderer as pirenderer

FIXTURE = Path(__file__).parent / "fixtures" / "dreamtalk_renderer"
RUNTIME_FILES = (Path(runtime.__file__), Path(safe_paths.__file__))  # what a user copies next to their code

# Imports a copy of runtime.py from the folder it was copied to, as a user serving a model does, so not even the
# mirrortalk_jax package __init__ runs.
STANDALONE = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import runtime
    renderer = runtime.load(sys.argv[2])
    inputs = np.load(sys.argv[3])
    out = {}
    for b in (1, 3):
        out[f"b{b}"] = renderer(source_image=inputs["image"][:b], driving_source=inputs["motion"][:b])["fake_image"]
    renderer.weights["editing_net/final/bias"] = renderer.weights["editing_net/final/bias"] + 1.0
    out["b1_new_weights"] = renderer(inputs["image"][:1], inputs["motion"][:1])["fake_image"]
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("mirrortalk_jax", "torch", "flax"))
    assert not loaded, loaded
    np.savez(sys.argv[4], **out)
""")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = pirenderer.model_config(json.loads((FIXTURE / "config.json").read_text())["renderer_conf"],
                                     image_size=(64, 64))
    return convert_pir.convert_renderer(FIXTURE / "weights.safetensors", tmp_path_factory.mktemp("ckpt") / "pir",
                                        config)


@pytest.fixture(scope="module")
def artifact(checkpoint, tmp_path_factory):
    return renderers.export_renderer(checkpoint, tmp_path_factory.mktemp("export") / "pirenderer")


def _inputs(batch=3):
    r = np.random.default_rng(0)
    with np.load(FIXTURE / "io.npz") as io:
        motion = np.transpose(io["c1_driving_source"], (0, 2, 1))
    motion = np.concatenate([motion, motion[:1] + r.normal(0, 0.3, motion[:1].shape).astype(np.float32)])
    return r.uniform(-1, 1, (batch, 64, 64, 3)).astype(np.float32), motion[:batch]


def test_artifact_runs_standalone_at_two_batch_sizes(artifact, checkpoint, tmp_path):
    image, motion = _inputs()
    np.savez(tmp_path / "inputs.npz", image=image, motion=motion)
    (tmp_path / "run.py").write_text(STANDALONE)
    (tmp_path / "served").mkdir()
    for file in RUNTIME_FILES:
        shutil.copy(file, tmp_path / "served")
    subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "served"), str(artifact),
                    str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")], check=True, cwd=tmp_path, timeout=600)
    loaded = loader.load_model(checkpoint)
    model = loaded.model
    with np.load(tmp_path / "out.npz") as out:
        for b in (1, 3):
            ours = np.asarray(pirenderer.forward(model, image[:b], motion[:b])["fake_image"])
            assert out[f"b{b}"].shape == (b, 64, 64, 3)
            np.testing.assert_allclose(out[f"b{b}"], ours, atol=1e-5)
        # The weights are an argument of the computation, not constants in it.
        assert np.abs(out["b1_new_weights"] - out["b1"]).mean() > 0.05


def test_manifest_describes_inputs_outputs_and_origin(artifact, checkpoint):
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["format"] == runtime.FORMAT and manifest["model"] == "pirenderer"
    assert [(t["name"], t["shape"], t["dtype"]) for t in manifest["inputs"]] == [
        ("source_image", ["batch", 64, 64, 3], "float32"), ("driving_source", ["batch", 27, 73], "float32")]
    assert [(t["name"], t["shape"]) for t in manifest["outputs"]] == [("fake_image", ["batch", 64, 64, 3])]
    assert manifest["computation"]["platforms"] == ["cpu", "cuda", "tpu"]
    assert manifest["weights"]["count"] == 304 and manifest["weights"]["num_params"] == 372_237
    assert manifest["source"]["sha256"] == runtime.file_sha256(FIXTURE / "weights.safetensors")
    assert manifest["source"]["checkpoint"] == "weights.safetensors"
    assert "[-1, 1]" in manifest["conventions"]["value_range"] and manifest["conventions"]["layout"].startswith("NHWC")
    assert manifest["model_config"]["descriptor_nc"] == 24
    for part in ("computation", "weights"):
        assert runtime.file_sha256(artifact / manifest[part]["file"]) == manifest[part]["sha256"]


def test_runtime_refuses_bad_inputs_and_damaged_artifacts(artifact, tmp_path):
    renderer = runtime.load(artifact)
    image, motion = _inputs()
    with pytest.raises(ValueError, match=r"input source_image: shape \(3, 32, 64, 3\), expected"):
        renderer(image[:, :32], motion)
    with pytest.raises(ValueError, match="input driving_source: batch size 2, other inputs have 3"):
        renderer(image, motion[:2])
    with pytest.raises(TypeError, match="missing inputs"):
        renderer(source_image=image)
    damaged = tmp_path / "damaged"
    shutil.copytree(artifact, damaged)
    data = bytearray((damaged / "weights.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / "weights.npz").write_bytes(bytes(data))
    with pytest.raises(runtime.ArtifactError, match="weights.npz: sha256 differs"):
        runtime.load(damaged)
    manifest = json.loads((artifact / "manifest.json").read_text())
    (damaged / "manifest.json").write_text(json.dumps({**manifest, "format": "mirrortalk_jax.export/999"}))
    with pytest.raises(runtime.ArtifactError, match="export/999"):
        runtime.load(damaged)


def _edited(artifact, tmp_path, name, edit):
    """A copy of the artifact whose manifest was changed by `edit(manifest)` (in place)."""
    copy = tmp_path / name
    shutil.copytree(artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize("name, problem", [
    ("../weights.npz", "not a plain file name"),
    ("/etc/hostname", "not a plain file name"),
    ("/dev/zero", "not a plain file name"),
    ("zero", "zero is a symbolic link, expected a regular file"),
    ("linked.npz", "linked.npz is a symbolic link, expected a regular file"),
    ("missing.npz", "missing.npz: no such file"),
])
def test_manifest_file_names_stay_inside_the_artifact(artifact, tmp_path, name, problem):
    """Refused before anything is opened: a device would hang the loader, a link could point anywhere."""
    def edit(manifest):
        manifest["weights"]["file"] = name
    copy = _edited(artifact, tmp_path, "edited", edit)
    os.symlink("/dev/zero", copy / "zero")
    os.symlink(copy / "weights.npz", copy / "linked.npz")
    with pytest.raises(runtime.ArtifactError, match=re.escape(problem)):
        runtime.load(copy)


def test_incomplete_or_damaged_manifests_are_artifact_errors(artifact, tmp_path):
    def drop_outputs(manifest):
        del manifest["outputs"]
    with pytest.raises(runtime.ArtifactError, match="missing key 'outputs'"):
        runtime.load(_edited(artifact, tmp_path, "no_outputs", drop_outputs))

    def bad_shape(manifest):
        manifest["inputs"][0]["shape"] = "64x64"
    with pytest.raises(runtime.ArtifactError, match=r"'inputs\.0\.shape' is '64x64', expected a list"):
        runtime.load(_edited(artifact, tmp_path, "bad_shape", bad_shape))

    def other_size(manifest):
        manifest["computation"]["size"] += 1
    with pytest.raises(runtime.ArtifactError, match="computation.jaxexport: .* bytes, the manifest records"):
        runtime.load(_edited(artifact, tmp_path, "other_size", other_size))

    not_json = tmp_path / "not_json"
    shutil.copytree(artifact, not_json)
    (not_json / "manifest.json").write_text('{"format": "mirrortalk_jax.export/1", "weights": ')
    with pytest.raises(runtime.ArtifactError, match="manifest.json: not valid JSON"):
        runtime.load(not_json)
    # Without verification a truncated weights file is still refused, by its recorded size, before reading.
    cut = tmp_path / "cut"
    shutil.copytree(artifact, cut)
    data = (cut / "weights.npz").read_bytes()
    (cut / "weights.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(runtime.ArtifactError, match="weights.npz: .* bytes, the manifest records"):
        runtime.load(cut, verify=False)


def test_cli_export_and_refusals(checkpoint, tmp_path, capsys):
    out = tmp_path / "cli_export"
    assert cli.main(["export", "renderer", "--checkpoint", str(checkpoint), "--out", str(out),
                     "--image_size", "96", "64", "--platforms", "cpu"]) == 0
    assert "wrote" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"][0]["shape"] == ["batch", 96, 64, 3] and manifest["computation"]["platforms"] == ["cpu"]
    with pytest.raises(FileExistsError):
        renderers.export_renderer(checkpoint, out)
    loaded = loader.load_model(checkpoint)
    model, config = loaded.model, loaded.model_config
    with pytest.raises(ValueError, match="pass config="):
        renderers.export_renderer(model, tmp_path / "x")
    with pytest.raises(ValueError, match="multiples of 32"):
        renderers.export_renderer(model, tmp_path / "y", config=config, image_size=(48, 64), platforms=("cpu",))
