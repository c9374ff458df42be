"""PIRenderer port: the original's outputs on the reference fixture, the released checkpoint layout, conversion
errors, and the torch conventions of the building blocks (checked against direct numpy definitions)."""

import hashlib
import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax
from safetensors.numpy import save_file

from mirrortalk_jax import base_config
from mirrortalk_jax.configs.released import pirenderer as pirenderer_configs
from mirrortalk_jax.models.abstract import abstract_variables, builder
from mirrortalk_jax import fixtures
from mirrortalk_jax.convert import name_map, foreign
from mirrortalk_jax.runs import converted, loader
from mirrortalk_jax.convert import pirenderer as convert_pir
from mirrortalk_jax.models.nn import image_layers
from mirrortalk_jax.models.pirenderer import renderer as pirenderer
from mirrortalk_jax.models.nn import warp

FIXTURE = Path(__file__).parent / "fixtures" / "dreamtalk_renderer"


def _small_config():
    return pirenderer.model_config(json.loads((FIXTURE / "config.json").read_text())["renderer_conf"])


def _inputs(io, case):
    return (np.transpose(io[f"{case}_source_image"], (0, 2, 3, 1)),
            np.transpose(io[f"{case}_driving_source"], (0, 2, 1)))


@pytest.fixture(scope="module")
def io():
    with np.load(FIXTURE / "io.npz") as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def tensors():
    return convert_pir.renderer_tensors(FIXTURE / "weights.safetensors")


@pytest.fixture(scope="module")
def model(tensors):
    return convert_pir.convert_tensors(tensors, _small_config(), source="fixture")


_full = pirenderer.forward  # jitted: op-by-op execution of the renderer would compile hundreds of small programs


def _warp(model, image, motion):
    return pirenderer.forward(model, image, motion, stage="warp")


# ----- The original's numbers -----


def test_check_fixture_tool_passes_every_output(capsys):
    """tools/check_fixture.py on our fixture exits 0 with every output (both cases, both image shapes) in tolerance."""
    spec = importlib.util.spec_from_file_location("check_fixture", Path(__file__).parents[1] / "tools" / "check_fixture.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["check_fixture", str(FIXTURE)]) == 0
    table = capsys.readouterr().out
    assert "dreamtalk_renderer: 11/11 outputs within tolerance" in table
    for case in ("c1", "c2"):
        for name in ("descriptor", "hourglass_out", "flow_field", "warp_image", "fake_image"):
            assert f"{name}[{case}]" in table


def test_outputs_match_reference_tightly():
    """Everything before the warp within 1e-5 of the reference's scale; warp/final images within 5e-5 / 2e-5 (the
    random source image turns 1e-6-pixel coordinate rounding into value differences; see convert/pirenderer.py)."""
    _, results = fixtures.check(FIXTURE)
    assert len(results) == 11
    for r in results:
        limit = {"warp_image": 5e-5, "fake_image": 2e-5, "motion_windows": 0.0}.get(r.output.split("[")[0], 1e-5)
        assert r.max_rel <= limit, (r.output, r.max_rel)


def test_warp_stage_and_batching(model, io):
    """stage='warp' gives the same warp without the editing net; frames of a batch are independent."""
    image, motion = _inputs(io, "c1")
    full = _full(model, image, motion)
    warp_only = _warp(model, image, motion)
    assert "fake_image" not in warp_only
    np.testing.assert_array_equal(warp_only["warp_image"], full["warp_image"])
    single = _full(model, image[1:], motion[1:])
    np.testing.assert_allclose(single["fake_image"][0], full["fake_image"][1], atol=2e-5)
    with pytest.raises(ValueError, match="multiples of 32"):
        _full(model, image[:, :48], motion)


def test_motion_windows_clamp_at_the_ends(io):
    windows = pirenderer.motion_windows(io["win_motion_seq"])
    np.testing.assert_array_equal(windows, np.transpose(io["win_windows"], (0, 2, 1)))
    assert windows.shape == (5, 27, 73)


# ----- The released checkpoint's layout, and refusals -----


def test_released_manifest_fills_the_released_model_exactly():
    manifest = json.loads((FIXTURE / "manifest_full.json").read_text())
    config = pirenderer_configs.get_config("released").model
    abstract = abstract_variables(builder(config, None))
    name_map.check_manifest(manifest["keys"], convert_pir.RULES, abstract, source="manifest_full.json")
    assert sum(np.prod(e["shape"]) for e in manifest["keys"]) == manifest["num_params"] == 22_519_109
    assert sum(x.size for x in jax.tree.leaves(abstract)) == manifest["num_params"]
    assert config.to_dict() == pirenderer.model_config(manifest["config"]).to_dict()
    small = abstract_variables(builder(pirenderer_configs.get_config("small").model, None))
    with pytest.raises(foreign.ConversionError, match="shape mismatches"):
        name_map.check_manifest(manifest["keys"], convert_pir.RULES, small)


def test_released_model_shapes_at_256():
    """The released sizes trace at the original's 256x256: flow at 64x64, hourglass 2 x 128 channels."""
    config = pirenderer_configs.get_config("released").model
    graphdef, state = nnx.split(nnx.eval_shape(builder(config, None)))
    out = jax.eval_shape(lambda s, x, d: nnx.merge(graphdef, s)(x, d), state,
                         jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32), jax.ShapeDtypeStruct((2, 27, 73), jnp.float32))
    assert {k: v.shape for k, v in out.items()} == {
        "descriptor": (2, 256), "hourglass_out": (2, 64, 64, 256), "flow_field": (2, 64, 64, 2),
        "deformation": (2, 64, 64, 2), "warp_image": (2, 256, 256, 3), "fake_image": (2, 256, 256, 3)}


def test_truncated_checkpoint_is_refused(tmp_path):
    data = (FIXTURE / "weights.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(foreign.ConversionError, match="cut.safetensors: not a readable safetensors"):
        convert_pir.convert_renderer(tmp_path / "cut.safetensors", tmp_path / "out", _small_config())
    assert not (tmp_path / "out").exists()


def test_mismatched_checkpoints_name_the_problem(tensors):
    released = pirenderer_configs.get_config("released").model
    with pytest.raises(foreign.ConversionError) as e:  # the small checkpoint against the released sizes
        convert_pir.convert_tensors(tensors, released, source="small.safetensors")
    assert "small.safetensors does not match the model" in str(e.value)
    assert ("editing_net.decoder.final.model.0.weight -> editing_net/final/kernel: (7, 7, 8, 3) vs expected "
            "(7, 7, 64, 3)") in str(e.value)
    broken = dict(tensors)
    del broken["warpping_net.hourglass.decoder.decoder3.conv_s.weight"]
    broken["editing_net.decoder.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(foreign.ConversionError) as e:
        convert_pir.convert_tensors(broken, _small_config())
    message = str(e.value)
    assert "parameters left empty (1): warping_net/decoder/3/conv_s/kernel" in message
    assert "source keys no rule uses (1): editing_net.decoder.extra.weight" in message


def test_other_models_checkpoint_is_refused(tmp_path, tensors):
    save_file({k.replace("mapping_net", "mapper"): v for k, v in tensors.items()}, str(tmp_path / "other.safetensors"))
    with pytest.raises(foreign.ConversionError, match="other.safetensors: no mapping_net"):
        convert_pir.renderer_tensors(tmp_path / "other.safetensors")


def test_converted_checkpoint_round_trip(tmp_path, model, io):
    out = convert_pir.convert_renderer(FIXTURE / "weights.safetensors", tmp_path / "ckpt", _small_config())
    meta = converted.load_meta(out)
    assert meta["source_sha256"] == hashlib.sha256((FIXTURE / "weights.safetensors").read_bytes()).hexdigest()
    loaded = loader.load_model(out)
    loaded, config, spec = loaded.model, loaded.model_config, loaded.spec
    assert config.name == "pirenderer" and spec is None
    image, motion = _inputs(io, "c2")
    np.testing.assert_array_equal(_full(loaded, image, motion)["fake_image"], _full(model, image, motion)["fake_image"])


def test_failed_save_leaves_no_folder(tmp_path, monkeypatch):
    """converted.save writes into a temporary folder renamed at the end: a write that fails half-way (here after
    Orbax wrote the variables) leaves neither the output folder nor the temporary one."""
    real = converted.ocp.StandardCheckpointer

    class FailingCheckpointer(real):
        def save(self, directory, *args, **kwargs):
            super().save(directory, *args, **kwargs)
            self.wait_until_finished()
            assert any(Path(directory).parent.iterdir())  # something was written before the failure
            raise OSError("disk full")

    monkeypatch.setattr(converted.ocp, "StandardCheckpointer", FailingCheckpointer)
    with pytest.raises(OSError, match="disk full"):
        convert_pir.convert_renderer(FIXTURE / "weights.safetensors", tmp_path / "ckpt", _small_config())
    assert list(tmp_path.iterdir()) == []


def _convert_tool():
    path = Path(__file__).parents[1] / "tools" / "convert_dreamtalk.py"
    spec = importlib.util.spec_from_file_location("convert_dreamtalk", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convert_tool_takes_the_renderer_config(tmp_path, model, io, capsys):
    """tools/convert_dreamtalk.py --renderer_config sizes the renderer (--config is the denoiser's): the original's
    renderer_conf as YAML, a JSON holding it (the fixture's config.json) or a config file:variant all give the
    small renderer; without it (released sizes) the small checkpoint is refused and nothing is written."""
    import yaml

    tool = _convert_tool()
    weights = str(FIXTURE / "weights.safetensors")
    conf = json.loads((FIXTURE / "config.json").read_text())["renderer_conf"]
    (tmp_path / "renderer_conf.yaml").write_text(yaml.safe_dump(conf))
    specs = [str(tmp_path / "renderer_conf.yaml"), str(FIXTURE / "config.json"),
             base_config.config_path("pirenderer") + ":small"]
    sizes = lambda c: {k: v for k, v in c.to_dict().items() if k != "image_size"}  # noqa: E731
    for i, spec in enumerate(specs):
        out = tmp_path / f"ckpt{i}"
        assert tool.main(["--renderer", weights, "--renderer_config", spec, "--out", str(out)]) == 0, spec
        assert "PIRenderer, descriptor 24, max 16 channels" in capsys.readouterr().out
        assert sizes(converted.model_config(out / "renderer")) == sizes(_small_config()), spec
    loaded = loader.load_model(tmp_path / "ckpt0" / "renderer")
    loaded = loaded.model
    image, motion = _inputs(io, "c2")
    np.testing.assert_array_equal(_full(loaded, image, motion)["fake_image"], _full(model, image, motion)["fake_image"])

    assert tool.main(["--renderer", weights, "--out", str(tmp_path / "released")]) == 2
    err = capsys.readouterr().err
    assert "shape mismatches (271)" in err and "nothing written" in err
    assert not (tmp_path / "released").exists()
    (tmp_path / "not_a_conf.yaml").write_text("common: {descriptor_nc: 24}\n")
    assert tool.main(["--renderer", weights, "--renderer_config", str(tmp_path / "not_a_conf.yaml"),
                      "--out", str(tmp_path / "bad")]) == 2
    assert "not a PIRenderer renderer_conf" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt0", "ckpt1", "ckpt2", "not_a_conf.yaml",
                                                          "renderer_conf.yaml"]


def test_every_parameter_has_logical_axes():
    abstract = abstract_variables(builder(pirenderer_configs.get_config("small").model, None))
    for path, var in nnx.to_flat_state(abstract):
        axes = var.get_metadata().get("out_sharding")
        assert axes is not None and len(axes) == len(var.shape), name_map.path_str(path)


# ----- Building blocks against their torch definitions, written out in numpy -----


def _grid_sample_reference(image, grid):
    """torch grid_sample(bilinear, zeros, align_corners=False), one sample at a time."""
    b, h, w, c = image.shape
    out = np.zeros((b, *grid.shape[1:3], c), np.float64)
    for n in range(b):
        for i in range(grid.shape[1]):
            for j in range(grid.shape[2]):
                x = ((grid[n, i, j, 0] + 1) * w - 1) / 2
                y = ((grid[n, i, j, 1] + 1) * h - 1) / 2
                x0, y0 = int(np.floor(x)), int(np.floor(y))
                for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                    if 0 <= yy < h and 0 <= xx < w:
                        out[n, i, j] += image[n, yy, xx] * (1 - abs(x - xx)) * (1 - abs(y - yy))
    return out


def test_grid_sample_matches_torch_definition():
    r = np.random.default_rng(0)
    image = r.normal(size=(2, 5, 7, 3)).astype(np.float32)
    grid = r.uniform(-1.3, 1.3, size=(2, 4, 6, 2)).astype(np.float32)  # includes points outside the image
    grid[0, 0, 0] = (-1.0, -1.0)  # the outer corner: a quarter of pixel (0, 0)
    ours = np.asarray(warp.grid_sample(image, grid))
    np.testing.assert_allclose(ours, _grid_sample_reference(image, grid), atol=1e-5)
    np.testing.assert_allclose(ours[0, 0, 0], image[0, 0, 0] / 4, atol=1e-6)
    # align_corners=False: the centre of pixel (i, j) is at (2j + 1) / w - 1, sampled exactly there.
    centres = np.stack(np.meshgrid((2 * np.arange(7) + 1) / 7 - 1, (2 * np.arange(5) + 1) / 5 - 1), -1)
    np.testing.assert_allclose(warp.grid_sample(image, np.broadcast_to(centres, (2, 5, 7, 2)).astype(np.float32)),
                               image, atol=1e-5)


def test_resize_and_zero_flow_conventions():
    r = np.random.default_rng(1)
    x = r.normal(size=(1, 3, 5, 2)).astype(np.float32)
    ours = np.asarray(warp.resize_bilinear(x, (7, 9)))
    ref = np.zeros((1, 7, 9, 2))
    for i in range(7):  # torch: src = max((dst + 0.5) * in / out - 0.5, 0), neighbours clamped at the end
        sy = max((i + 0.5) * 3 / 7 - 0.5, 0)
        y0, ly = int(sy), sy - int(sy)
        for j in range(9):
            sx = max((j + 0.5) * 5 / 9 - 0.5, 0)
            x0, lx = int(sx), sx - int(sx)
            y1, x1 = min(y0 + 1, 2), min(x0 + 1, 4)
            ref[0, i, j] = ((1 - ly) * ((1 - lx) * x[0, y0, x0] + lx * x[0, y0, x1])
                            + ly * ((1 - lx) * x[0, y1, x0] + lx * x[0, y1, x1]))
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    # A zero flow is not an identity warp: the grid is corner-aligned, grid_sample is not (as in the original).
    grid = np.asarray(warp.flow_to_deformation(jnp.zeros((1, 4, 6, 2))))
    np.testing.assert_allclose(grid[0, 0, 0], [-1, -1]) and np.testing.assert_allclose(grid[0, -1, -1], [1, 1])
    image = r.normal(size=(1, 16, 24, 3)).astype(np.float32)
    assert np.abs(np.asarray(warp.warp_image(image, grid)) - image).max() > 0.1


def test_upsample_conv_equals_nearest_upsample_then_conv():
    r = np.random.default_rng(2)
    layer = image_layers.UpsampleConv(4, 5, nnx.Rngs(0))
    layer.bias[...] = r.normal(size=5).astype(np.float32)
    x = r.normal(size=(2, 3, 4, 4)).astype(np.float32)
    up = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    ref = lax.conv_general_dilated(up, layer.kernel[...], (1, 1), ((1, 1), (1, 1)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC")) + layer.bias[...]
    np.testing.assert_allclose(layer(x), ref, rtol=1e-5, atol=1e-5)


def test_conv_transpose_matches_torch_definition():
    """torch ConvTranspose2d(k3, s2, p1, output_padding=1): out[2i - 1 + ky, 2j - 1 + kx] += x[i, j] W[:, :, ky, kx]."""
    r = np.random.default_rng(3)
    torch_weight = r.normal(size=(4, 5, 3, 3)).astype(np.float32)  # (in, out, kh, kw)
    layer = image_layers.ConvTranspose2x(4, 5, nnx.Rngs(0))
    layer.kernel[...] = convert_pir._taps(torch_weight)
    x = r.normal(size=(1, 3, 4, 4)).astype(np.float32)
    ref = np.zeros((1, 6 + 2, 8 + 2, 5))  # one extra row/column each side, cropped below
    for i in range(3):
        for j in range(4):
            for ky in range(3):
                for kx in range(3):
                    ref[0, 2 * i + ky, 2 * j + kx] += x[0, i, j] @ torch_weight[:, :, ky, kx]
    np.testing.assert_allclose(layer(x), ref[:, 1:7, 1:9], rtol=1e-5, atol=1e-5)


def test_norms_use_biased_statistics():
    x = np.random.default_rng(4).normal(3.0, 2.0, size=(2, 4, 5, 3)).astype(np.float32)
    mean, var = x.mean((1, 2), keepdims=True), x.var((1, 2), keepdims=True)
    np.testing.assert_allclose(image_layers.instance_norm(x), (x - mean) / np.sqrt(var + 1e-5), atol=1e-5)
    norm = image_layers.LayerNorm2d(3, nnx.Rngs(0))
    norm.scale[...] = np.array([1.0, 2.0, 0.5], np.float32)
    mean, var = x.mean((1, 2, 3), keepdims=True), x.var((1, 2, 3), keepdims=True)
    np.testing.assert_allclose(norm(x), (x - mean) / np.sqrt(var + 1e-5) * norm.scale[...], atol=1e-5)
