"""VGG19 features (torchvision `vgg19().features`): converter from torchvision's key layout, the converted folder
through runs.loader, features against a NumPy reference of torchvision's nn.Sequential, layer selection, refusals
and the LPIPS-style `perceptual_distance`.

No real weights: random tensors in torchvision's layout at the `small` widths (the released layout is checked by
shape only, with a manifest).
"""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from numpy.lib.stride_tricks import sliding_window_view
from safetensors.numpy import save_file

from mirrortalk_jax import base_config
from mirrortalk_jax.convert import foreign, name_map
from mirrortalk_jax.convert import vgg as convert_vgg
from mirrortalk_jax.models import abstract, registry
from mirrortalk_jax.models.vgg import vgg19
from mirrortalk_jax.runs import loader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = (8, 8, 16, 16, 16)
RELEASED = (64, 128, 256, 512, 512)
# torchvision's vgg19 ("E"): conv widths per block, "M" = MaxPool2d(2, 2); make_layers appends conv, ReLU per width.
BLOCKS = (2, 2, 4, 4, 4)
TORCH_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _tool():
    spec = importlib.util.spec_from_file_location("convert_vgg", os.path.join(ROOT, "tools", "convert_vgg.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torch_cfg(widths):
    """torchvision's cfg "E" at the given block widths: [64, 64, "M", 128, 128, "M", 256 x4, "M", ...]."""
    cfg = []
    for width, size in zip(widths, BLOCKS):
        cfg += [width] * size + ["M"]
    return cfg


def _torch_shapes(widths, classifier=True):
    """{key: shape} of torchvision's vgg19 state dict (make_layers' indexing) at the given widths."""
    shapes, index, in_ch = {}, 0, 3
    for v in _torch_cfg(widths):
        if v == "M":
            index += 1
            continue
        shapes[f"features.{index}.weight"] = (v, in_ch, 3, 3)
        shapes[f"features.{index}.bias"] = (v,)
        index, in_ch = index + 2, v
    if classifier:  # Linear(512*7*7, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU, Dropout, Linear(4096, 1000)
        hidden = 4096 if widths == RELEASED else 32
        for i, (o, n) in {0: (hidden, widths[-1] * 49), 3: (hidden, hidden), 6: (1000 if widths == RELEASED else 10,
                                                                                 hidden)}.items():
            shapes[f"classifier.{i}.weight"], shapes[f"classifier.{i}.bias"] = (o, n), (o,)
    return shapes


def _random_state_dict(widths, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in _torch_shapes(widths).items():
        if key.endswith("weight") and len(shape) == 4:  # He-normal: activations stay O(1) through 16 convs
            out[key] = (rng.standard_normal(shape) * np.sqrt(2.0 / (shape[1] * 9))).astype(np.float32)
        else:
            out[key] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return out


def _config(variant="small"):
    return base_config.load_config_file(base_config.config_path("vgg19"), variant).model


# ----- NumPy reference: torchvision's nn.Sequential, NCHW, OIHW weights, float64 -----

def _conv3x3(x, weight, bias):
    windows = sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    return np.einsum("nchwij,ocij->nohw", windows, weight.astype(np.float64)) + bias[None, :, None, None]


def _max_pool2(x):
    n, c, h, w = x.shape
    x = x[:, :, :h // 2 * 2, :w // 2 * 2]
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def _reference(state_dict, widths, images):
    """{reluB_K: (N, H, W, C)} for images (N, H, W, 3) in [-1, 1], running `features` module by module."""
    x = ((np.asarray(images, np.float64) + 1) / 2 - MEAN) / STD
    x = x.transpose(0, 3, 1, 2)
    out, index, block, conv = {}, 0, 1, 1
    for v in _torch_cfg(widths):
        if v == "M":
            x, index, block, conv = _max_pool2(x), index + 1, block + 1, 1
            continue
        x = _conv3x3(x, state_dict[f"features.{index}.weight"], state_dict[f"features.{index}.bias"])
        x = np.maximum(x, 0)  # the ReLU at index + 1
        out[f"relu{block}_{conv}"] = x.transpose(0, 2, 3, 1)
        index, conv = index + 2, conv + 1
    return out


def _reference_distance(fa, fb):
    def unit(f):
        return f / (np.sqrt((f ** 2).sum(-1, keepdims=True)) + 1e-10)
    return sum(((unit(a) - unit(b)) ** 2).sum(-1).mean(axis=(1, 2)) for a, b in zip(fa, fb))


# ----- Fixtures -----

@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    state_dict = _random_state_dict(SMALL)
    path = tmp_path_factory.mktemp("vgg") / "vgg19_small.safetensors"
    save_file(state_dict, str(path))
    return state_dict, str(path)


@pytest.fixture(scope="module")
def converted(weights, tmp_path_factory):
    """The small random weights through tools/convert_vgg.py, loaded with runs.loader.load_model."""
    _, path = weights
    out = tmp_path_factory.mktemp("ckpt") / "vgg19"
    status = _tool().main(["--weights", path, "--out", str(out),
                           "--config", base_config.config_path("vgg19") + ":small"])
    assert status == 0
    return loader.load_model(out)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32), rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)


# ----- Layout -----

def test_architecture_is_torchvisions_sequential():
    assert tuple(spec.index for spec in vgg19.ARCHITECTURE) == TORCH_CONV_INDICES
    assert vgg19.LAYER_NAMES[:3] == ("relu1_1", "relu1_2", "relu2_1") and vgg19.LAYER_NAMES[-1] == "relu5_4"
    assert len(vgg19.LAYER_NAMES) == 16
    assert convert_vgg.FEATURE_KEYS == tuple(k for k in _torch_shapes(SMALL, classifier=False))


def test_released_key_list_fills_the_released_model_exactly():
    """torchvision's full vgg19 state dict (16 convs = 32 feature tensors + the classifier) fills every parameter of
    the released config, shapes included; nothing is left over."""
    shapes = _torch_shapes(RELEASED)
    features = [k for k in shapes if k.startswith("features.")]
    assert len(features) == 32 and len({k.rsplit(".", 1)[0] for k in features}) == 16
    assert shapes["features.34.weight"] == (512, 512, 3, 3) and shapes["classifier.0.weight"] == (4096, 25088)
    manifest = [{"key": k, "shape": s, "dtype": "float32"} for k, s in shapes.items()]
    shapes_tree = abstract.abstract_variables(abstract.builder(_config("released"), None))
    name_map.check_manifest(manifest, convert_vgg.RULES, shapes_tree, source="vgg19-dcbb9e9d.pth")
    n_params = sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(shapes_tree))
    assert n_params == 20_024_384  # torchvision's vgg19().features
    with pytest.raises(foreign.ConversionError, match=r"shape mismatches \(32\): features\.0\.bias"):  # vs small
        name_map.check_manifest(manifest, convert_vgg.RULES,
                                abstract.abstract_variables(abstract.builder(_config("small"), None)))


def test_every_parameter_has_logical_axes():
    model = nnx.eval_shape(lambda: registry.create_model(_config("small"), None, nnx.Rngs(0)))
    axes = {"/".join(map(str, p)): v.get_metadata().get("out_sharding")
            for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert len(axes) == 32
    assert axes["convs/0/kernel"] == ("conv", "conv", None, "mlp") and axes["convs/0/bias"] == ("mlp",)
    assert axes["convs/15/kernel"] == ("conv", "conv", "embed", "mlp")


# ----- Converted model against the reference -----

def test_converted_folder_loads_and_matches_the_numpy_reference(weights, converted, images):
    state_dict, _ = weights
    model = converted.model
    assert isinstance(model, vgg19.VGG19Features)
    assert converted.model_config.name == "vgg19" and tuple(converted.model_config.layers) == vgg19.DEFAULT_LAYERS
    x, _ = images
    ref = _reference(state_dict, SMALL, x)
    every = model(jnp.asarray(x), vgg19.LAYER_NAMES)
    for name, got in zip(vgg19.LAYER_NAMES, every):
        assert got.shape == ref[name].shape, name
        np.testing.assert_allclose(np.asarray(got), ref[name], rtol=1e-4, atol=1e-4, err_msg=name)
    default = model(jnp.asarray(x))  # the config's layers: relu1_1 .. relu5_1, in order
    assert [f.shape for f in default] == [(2, 32, 32, 8), (2, 16, 16, 8), (2, 8, 8, 16), (2, 4, 4, 16),
                                          (2, 2, 2, 16)]
    for name, got in zip(vgg19.DEFAULT_LAYERS, default):
        np.testing.assert_allclose(np.asarray(got), ref[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_layers_choose_the_features_and_the_depth(weights, converted, images, tmp_path):
    state_dict, path = weights
    x, _ = images
    out = tmp_path / "two_layers"
    assert _tool().main(["--weights", path, "--out", str(out), "--layers", "relu3_1,relu1_1",
                         "--config", base_config.config_path("vgg19") + ":small"]) == 0
    loaded = loader.load_model(out)
    assert tuple(loaded.model_config.layers) == ("relu3_1", "relu1_1")
    feats = loaded.model(jnp.asarray(x))
    assert [f.shape for f in feats] == [(2, 8, 8, 16), (2, 32, 32, 8)]  # in the order asked
    ref = _reference(state_dict, SMALL, x)
    np.testing.assert_allclose(np.asarray(feats[0]), ref["relu3_1"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(feats[1]), ref["relu1_1"], rtol=1e-4, atol=1e-4)

    def convs(layers):  # convolutions traced: only up to the deepest layer asked
        return str(jax.make_jaxpr(lambda a: converted.model(a, layers))(x)).count("conv_general_dilated")
    assert convs(("relu1_1",)) == 1 and convs(("relu3_1", "relu1_1")) == 5 and convs(vgg19.DEFAULT_LAYERS) == 13
    with pytest.raises(ValueError, match="relu6_1"):
        converted.model(jnp.asarray(x), ("relu6_1",))
    assert _tool().main(["--weights", path, "--out", str(tmp_path / "bad"), "--layers", "relu2_3",
                         "--config", base_config.config_path("vgg19") + ":small"]) == 2
    assert not (tmp_path / "bad").exists()


# ----- Refusals -----

def test_converter_names_a_missing_key(weights, tmp_path, capsys):
    state_dict, _ = weights
    partial = {k: v for k, v in state_dict.items() if k != "features.7.bias"}
    path = tmp_path / "missing.safetensors"
    save_file(partial, str(path))
    with pytest.raises(foreign.ConversionError, match=r"torchvision vgg19 keys missing \(1\): features\.7\.bias"):
        convert_vgg.convert_checkpoint(path, tmp_path / "out", _config())
    assert not (tmp_path / "out").exists()
    assert _tool().main(["--weights", str(path), "--out", str(tmp_path / "out"),
                         "--config", base_config.config_path("vgg19") + ":small"]) == 2
    assert "features.7.bias" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_converter_names_a_wrong_shape(weights, tmp_path):
    state_dict, _ = weights
    wrong = dict(state_dict, **{"features.10.weight": np.zeros((16, 8, 5, 5), np.float32)})
    path = tmp_path / "wrong.safetensors"
    save_file(wrong, str(path))
    with pytest.raises(foreign.ConversionError, match=r"shape mismatches \(1\): features\.10\.weight -> "
                                                       r"convs/4/kernel"):
        convert_vgg.convert_checkpoint(path, tmp_path / "out", _config())
    assert not (tmp_path / "out").exists()


def test_converter_names_an_unknown_key(weights):
    state_dict, _ = weights
    with pytest.raises(foreign.ConversionError, match=r"source keys no rule uses \(1\): features\.36\.weight"):
        convert_vgg.convert_model(dict(state_dict, **{"features.36.weight": np.zeros((1,), np.float32)}), _config())


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_a_torch_file_without_torch_says_how_to_read_it(tmp_path):
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    path.write_bytes(b"not read")
    with pytest.raises(foreign.ConversionError, match="install torch"):
        convert_vgg.read_checkpoint(path)


# ----- Perceptual distance -----

def test_perceptual_distance(weights, converted, images):
    state_dict, _ = weights
    model = converted.model
    x, y = (jnp.asarray(a) for a in images)
    same = vgg19.perceptual_distance(model, x, x)
    assert same.shape == (2,)
    np.testing.assert_allclose(np.asarray(same), 0.0, atol=1e-9)
    d = np.asarray(vgg19.perceptual_distance(model, x, y))
    assert d.shape == (2,) and np.all(d > 0)
    rx, ry = _reference(state_dict, SMALL, images[0]), _reference(state_dict, SMALL, images[1])
    want = _reference_distance([rx[n] for n in vgg19.DEFAULT_LAYERS], [ry[n] for n in vgg19.DEFAULT_LAYERS])
    np.testing.assert_allclose(d, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(vgg19.perceptual_distance(model, x, y, ("relu1_1",))),
                               _reference_distance([rx["relu1_1"]], [ry["relu1_1"]]), rtol=1e-4, atol=1e-5)
    # A loss: finite gradients, also where features are all zero (a black image switches off many ReLUs).
    black = -jnp.ones_like(x)
    grad = jax.jit(jax.grad(lambda a: vgg19.perceptual_distance(model, a, black).sum()))(x)
    assert grad.shape == x.shape and bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0
    # An all-zero feature vector (sqrt's gradient is infinite at 0): the normalisation's gradient stays finite.
    zero_at_one_pixel = jnp.ones((1, 2, 2, 4)).at[0, 1, 1].set(0.0)
    g = jax.grad(lambda f: jnp.sum(vgg19._unit_normalize(f) * jnp.arange(4.0)))(zero_at_one_pixel)
    assert bool(jnp.all(jnp.isfinite(g)))
    with pytest.raises(ValueError, match="differ in shape"):
        vgg19.perceptual_distance(model, x, y[:1])
