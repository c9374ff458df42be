"""The converter core: declarative rules, complete validation, readers, and converted checkpoints on disk."""

import json
import os
import re

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from mirrortalk_jax.models import abstract
from mirrortalk_jax.convert import hooks, name_map, pipeline, foreign
from mirrortalk_jax.runs import converted
from mirrortalk_jax.convert.name_map import Rule
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC as MOTION_SPEC
from mirrortalk_jax.runs import loader
from mirrortalk_jax.configs import synthtalk_regression


class Toy(nnx.Module):
    def __init__(self, rngs):
        self.proj = nnx.Linear(4, 6, rngs=rngs)
        self.norm = nnx.BatchNorm(6, rngs=rngs)
        self.layers = nnx.List([nnx.Linear(6, 6, rngs=rngs) for _ in range(2)])
        self.attn_q = nnx.Linear(6, 6, rngs=rngs)
        self.attn_k = nnx.Linear(6, 6, rngs=rngs)

    def __call__(self, x):
        h = self.norm(self.proj(x), use_running_average=True)
        for layer in self.layers:
            h = layer(h)
        return self.attn_q(h) + self.attn_k(h)


RULES = (
    Rule(r"proj\.weight", "proj/kernel", hooks.linear),
    Rule(r"proj\.bias", "proj/bias"),
    Rule(r"bn\.weight", "norm/scale"), Rule(r"bn\.bias", "norm/bias"),
    Rule(r"bn\.running_mean", "norm/mean"), Rule(r"bn\.running_var", "norm/var"),
    Rule(r"bn\.num_batches_tracked", None),
    Rule(r"blocks\.(\d+)\.weight", r"layers/\1/kernel", hooks.linear),
    Rule(r"blocks\.(\d+)\.bias", r"layers/\1/bias"),
    Rule(r"in_proj_weight", ("attn_q/kernel", "attn_k/kernel"), hooks.split(2, then=hooks.linear)),
    Rule(r"in_proj_bias", ("attn_q/bias", "attn_k/bias"), hooks.split(2)),
    Rule(r"table", None, hooks.expect(lambda: np.arange(5.0), "table")),
)


def _torch_like(seed=0):
    r = np.random.default_rng(seed)
    t = {"proj.weight": r.normal(size=(6, 4)), "proj.bias": r.normal(size=6),
         "bn.weight": r.normal(size=6), "bn.bias": r.normal(size=6), "bn.running_mean": r.normal(size=6),
         "bn.running_var": r.uniform(0.5, 2, size=6), "bn.num_batches_tracked": np.array(7),
         "in_proj_weight": r.normal(size=(12, 6)), "in_proj_bias": r.normal(size=12), "table": np.arange(5.0)}
    for i in range(2):
        t[f"blocks.{i}.weight"], t[f"blocks.{i}.bias"] = r.normal(size=(6, 6)), r.normal(size=6)
    return {k: np.asarray(v, np.float32) if v.dtype.kind == "f" else v for k, v in t.items()}


def _reference(t, x):
    """The toy's forward written directly on the torch-layout tensors."""
    h = x @ t["proj.weight"].T + t["proj.bias"]
    h = (h - t["bn.running_mean"]) / np.sqrt(t["bn.running_var"] + 1e-5) * t["bn.weight"] + t["bn.bias"]
    for i in range(2):
        h = h @ t[f"blocks.{i}.weight"].T + t[f"blocks.{i}.bias"]
    w, b = t["in_proj_weight"], t["in_proj_bias"]
    return h @ w[:6].T + b[:6] + h @ w[6:].T + b[6:]


def build():
    return Toy(nnx.Rngs(0))


def test_convert_matches_reference_forward():
    t = _torch_like()
    model = abstract.merge(build, name_map.convert(t, RULES, abstract.abstract_variables(build)))
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(model(x), _reference(t, x), rtol=1e-5, atol=1e-5)


def test_every_problem_is_listed_in_one_error():
    t = _torch_like()
    t["stray.weight"] = np.zeros(3, np.float32)
    del t["blocks.1.bias"]
    t["proj.weight"] = np.zeros((4, 6), np.float32)
    with pytest.raises(foreign.ConversionError) as e:
        name_map.convert(t, RULES, abstract.abstract_variables(build), source="toy.safetensors")
    msg = str(e.value)
    assert "toy.safetensors" in msg and "stray.weight" in msg and "layers/1/bias" in msg
    assert "proj.weight -> proj/kernel: (6, 4) vs expected (4, 6)" in msg


def test_buffer_check_refuses_other_settings():
    t = _torch_like()
    t["table"] = np.arange(5.0) * 2
    with pytest.raises(foreign.ConversionError, match="buffer table differs"):
        name_map.convert(t, RULES, abstract.abstract_variables(build))


def test_manifest_check_uses_shapes_only():
    manifest = [{"key": k, "shape": list(v.shape), "dtype": str(v.dtype)} for k, v in _torch_like().items()]
    name_map.check_manifest(manifest, RULES, abstract.abstract_variables(build))
    manifest[0]["shape"] = [7, 4]
    with pytest.raises(foreign.ConversionError, match="shape mismatches"):
        name_map.check_manifest(manifest, RULES, abstract.abstract_variables(build))


def test_readers(tmp_path):
    t = _torch_like()
    save_file(t, tmp_path / "w.safetensors")
    loaded = foreign.read_tensors(tmp_path / "w.safetensors")
    assert loaded.keys() == t.keys() and all(np.array_equal(loaded[k], t[k]) for k in t)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(foreign.ConversionError, match="bad.safetensors: not a readable safetensors"):
        foreign.read_tensors(tmp_path / "bad.safetensors")
    with pytest.raises(foreign.ConversionError, match="unknown checkpoint format '.npz'"):
        (tmp_path / "w.npz").write_bytes(b"x")
        foreign.read_tensors(tmp_path / "w.npz")
    with pytest.raises(foreign.ConversionError, match="no such file"):
        foreign.read_tensors(tmp_path / "missing.pth")
    with pytest.raises(foreign.ConversionError, match="lack the prefix 'diff_net.'"):
        foreign.strip_prefix(t, "diff_net.")


@pytest.mark.parametrize("shard, problem", [
    ("../outside.safetensors", "not a plain file name"),
    ("/etc/hostname", "not a plain file name"),
    ("link.safetensors", "is a symbolic link, expected a regular file"),
    ("gone.safetensors", "no such file"),
])
def test_sharded_index_names_stay_inside_the_folder(tmp_path, shard, problem):
    folder = tmp_path / "model"
    folder.mkdir()
    t = _torch_like()
    save_file(t, tmp_path / "outside.safetensors")
    os.symlink(tmp_path / "outside.safetensors", folder / "link.safetensors")
    index = {"weight_map": {k: shard for k in t}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(foreign.ConversionError, match=f"model.safetensors.index.json: shard .*{re.escape(problem)}"):
        foreign.read_tensors(folder)
    # Plain shard names of real files in the folder are read.
    save_file(dict(list(t.items())[:1]), folder / "a.safetensors")
    save_file(dict(list(t.items())[1:]), folder / "b.safetensors")
    names = list(t)
    index = {"weight_map": {k: "a.safetensors" if k == names[0] else "b.safetensors" for k in names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert sorted(foreign.read_tensors(folder)) == sorted(t)
    (folder / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(foreign.ConversionError, match='no non-empty "weight_map"'):
        foreign.read_tensors(folder)


def test_torch_file_without_torch_names_the_extra(tmp_path):
    """Without torch: an install hint. With torch: its weights_only loader refuses the garbage."""
    try:
        import torch  # noqa: F401
    except ImportError:
        (tmp_path / "w.pth").write_bytes(b"not really")
        with pytest.raises(foreign.ConversionError, match=r"install torch.*mirrortalk_jax\[torch\]"):
            foreign.read_tensors(tmp_path / "w.pth")
    else:
        (tmp_path / "w.pth").write_bytes(b"not really")
        with pytest.raises(foreign.ConversionError, match="weights_only=True"):
            foreign.read_tensors(tmp_path / "w.pth")


def test_converted_checkpoint_loads_like_a_run(tmp_path):
    """A registry model converted from 'foreign' tensors loads through runs.loader.load_model."""
    config = synthtalk_regression.get_config("tiny").model
    model = abstract.builder(config, MOTION_SPEC)()
    variables = nnx.state(model, nnx.Not(nnx.RngState))
    flat = {name_map.path_str(p).replace("/", "."): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(variables)}
    rules = tuple(Rule(k.replace(".", r"\."), k.replace(".", "/")) for k in flat)
    out = pipeline.convert_to_checkpoint(flat, rules, config, tmp_path / "conv", MOTION_SPEC, source="foreign")
    loaded = loader.load_model(out)
    assert loaded.step == 0 and loaded.config.model.name == "audio_regression" and loaded.spec == MOTION_SPEC
    for path, var in nnx.to_flat_state(nnx.state(loaded.model, nnx.Not(nnx.RngState))):
        np.testing.assert_array_equal(var.get_value(), flat[name_map.path_str(path).replace("/", ".")])
    with pytest.raises(FileExistsError):
        converted.save(out, variables, model_config=config)
    bigger = synthtalk_regression.get_config("default").model
    with pytest.raises(converted.CheckpointError, match="does not fit the model"):
        converted.restore(out, abstract.abstract_variables(abstract.builder(bigger, MOTION_SPEC)))
