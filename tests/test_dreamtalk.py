"""DreamTalk denoiser port: the original's forwards and DDIM runs, windowing, converter, fixture and convert tools.

(The cached sampler at other sizes, DDPM and training on SynthTalk: tests/test_dreamtalk_train.py.)
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mirrortalk_jax.models.abstract import abstract_variables, builder
from mirrortalk_jax.convert import dreamtalk as convert_dt
from mirrortalk_jax import fixtures
from mirrortalk_jax.fixtures import dreamtalk as fixture_dreamtalk
from mirrortalk_jax.sample import compiled
from mirrortalk_jax.convert import name_map
from mirrortalk_jax.runs import loader
from mirrortalk_jax.convert.foreign import ConversionError
from mirrortalk_jax.data.windows import centred_windows
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from tests.test_trainer import ROOT, _load_config

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "dreamtalk_denoiser")


def _io():
    with np.load(os.path.join(FIXTURE, "io.npz")) as npz:
        return {k: npz[k] for k in npz.files}


def _fixture_config():
    with open(os.path.join(FIXTURE, "config.json")) as f:
        return json.load(f)


def _fixture_model():
    config = convert_dt.model_config_from_original(_fixture_config())
    return convert_dt.convert_model(convert_dt.read_denoiser(os.path.join(FIXTURE, "weights.safetensors")), config)


# ----- The original's numbers -----


def test_fixture_forwards_and_ddim_runs_match_the_original():
    kind, results = fixtures.check(FIXTURE)
    by_name = {r.output: r for r in results}
    print("\n" + fixtures.table(kind, results))
    assert kind.name == "dreamtalk_denoiser" and all(r.passed for r in results), fixtures.table(kind, results)
    for case in ("f1", "f2"):  # outputs and intermediates, plain / ready-code / cached paths
        for out in ("content", "decoder_input_wo_time", "time_embedding", "decoder_input", "style_code", "x0_pred",
                    "x0_pred_ready_code", "x0_pred_cached"):
            assert by_name[f"{case}_{out}"].max_rel < 2e-6, (case, out)
    for run_name in ("s0", "s1", "s2"):  # complete DDIM-10 runs: the fast sampler, and the literal loop's traces
        for out in ("output", "output_reference_loop", "step_x_t", "step_net_out"):
            assert by_name[f"{run_name}_{out}"].max_rel < 2e-6, (run_name, out)
    assert by_name["s2_output_chunked_from_features"].max_rel < 2e-6
    for exact in ("win_audio_windows", "s_audio", "s_ddim_timesteps", "s0_step_t"):
        assert by_name[exact].max_abs == 0.0
    assert by_name["var_sched_alpha_bars"].max_rel <= 1.2e-7  # rebuilt schedule: at most 1 ulp off


def test_windowing_matches_the_original():
    io = _io()
    np.testing.assert_array_equal(centred_windows(io["win_w2v_feat"], 5, stride=2), io["win_audio_windows"])


def _manifest():
    with open(os.path.join(FIXTURE, "manifest_full.json")) as f:
        manifest = json.load(f)
    return manifest, [dict(e, key=e["key"][len(convert_dt.PREFIX):]) for e in manifest["keys"]]


def test_released_manifest_fills_the_released_config_exactly():
    config = _load_config("mirrortalk_jax/configs/dreamtalk.py", "released").model
    abstract = abstract_variables(builder(config, None))
    manifest, entries = _manifest()
    assert sum(int(np.prod(v.shape)) for v in jax.tree.leaves(abstract)) == manifest["num_params"] == 11_857_729
    assert len(entries) == manifest["num_tensors"] == 224
    name_map.check_manifest(entries, convert_dt.rules(config), abstract)  # every key used, every param filled
    original = _fixture_config()["DECODER"]  # the released BFM split (the fixture keeps it)
    assert list(config.decoder.upper_indices) == original["upper_face3d_indices"]
    assert list(config.decoder.lower_indices) == original["lower_face3d_indices"]
    broken = [dict(e, shape=[e["shape"][0] + 1] + e["shape"][1:]) if e["key"].endswith("linear1.weight") else e
              for e in entries]
    with pytest.raises(ConversionError, match="linear1.weight.*vs expected"):
        name_map.check_manifest(broken, convert_dt.rules(config), abstract)
    tiny = _load_config("mirrortalk_jax/configs/dreamtalk.py", "tiny").model
    with pytest.raises((ConversionError, ValueError)):
        name_map.check_manifest(entries, convert_dt.rules(config), abstract_variables(
            builder(tiny, SYNTHTALK_SPEC)))


def test_corrupted_and_mismatched_checkpoints_raise(tmp_path):
    path = os.path.join(FIXTURE, "weights.safetensors")
    config = convert_dt.model_config_from_original(_fixture_config())
    with open(path, "rb") as f:
        data = f.read()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="truncated.safetensors: not a readable safetensors"):
        convert_dt.read_denoiser(tmp_path / "truncated.safetensors")
    tensors = load_file(path)

    def convert(t):
        save_file(t, tmp_path / "w.safetensors")
        return convert_dt.convert_model(convert_dt.read_denoiser(tmp_path / "w.safetensors"), config)

    missing = {k: v for k, v in tensors.items() if not k.endswith("decoder.lower_decoder.norm.weight")}
    with pytest.raises(ConversionError, match=r"parameters left empty.*net/decoder/lower_decoder/norm/scale"):
        convert(missing)
    wrong = dict(tensors)
    key = "diff_net.net.style_encoder.increase_embed_dim.weight"
    wrong[key] = np.zeros((32, 63), np.float32)
    with pytest.raises(ConversionError, match=r"increase_embed_dim.weight.*\(63, 32\) vs expected \(64, 32\)"):
        convert(wrong)
    schedule = dict(tensors)
    schedule["diff_net.var_sched.alpha_bars"] = tensors["diff_net.var_sched.alpha_bars"] * 0.99
    with pytest.raises(ConversionError, match="buffer var_sched.alpha_bars differs"):
        convert(schedule)
    with pytest.raises(ConversionError, match="no key starts with 'diff_net.'"):
        convert({k[len("diff_net."):]: v for k, v in tensors.items()})


def _fixture_copy(tmp_path, name, keep=None, config_edit=None, perturb=None):
    folder = tmp_path / name
    folder.mkdir()
    for f in ("weights.safetensors", "config.json"):
        shutil.copy(os.path.join(FIXTURE, f), folder / f)
    io = _io()
    if keep is not None:
        io = {k: v for k, v in io.items() if k.startswith(keep)}
    if perturb:
        io[perturb] = io[perturb] + 0.01 * np.abs(io[perturb]).max()
    np.savez(folder / "io.npz", **io)
    if config_edit:
        config = _fixture_config()
        config_edit(config)
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_fixture_tool_exit_codes(tmp_path, capsys):
    """The tool's exit status (its main, in this process: no second jax start-up) on a passing and a perturbed copy
    (the f2 case only, to keep it short; the full folder runs above and, as a subprocess, in the slow test)."""
    tool = _tool("check_fixture")
    assert tool.main(["check_fixture", str(_fixture_copy(tmp_path, "ok", keep="f2_"))]) == 0
    assert "f2_x0_pred " in capsys.readouterr().out
    assert tool.main(["check_fixture", str(_fixture_copy(tmp_path, "bad", keep="f2_", perturb="f2_x0_pred"))]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("f2_x0_pred ") and line.rstrip().endswith("NO") for line in lines), lines
    assert tool.main(["check_fixture", str(tmp_path / "missing")]) == 2


@pytest.mark.slow
def test_check_fixture_tool_on_the_shipped_fixture():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "check_fixture.py"), FIXTURE],
                         capture_output=True, text=True, cwd=ROOT, timeout=1200, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_fixture_model_is_built_from_config_json(tmp_path):
    """Sizes come from config.json: other sizes than the weights' give a shape error, not a crash; the head count
    (which no tensor shape shows) changes the outputs."""
    def wider(c):
        over = c["yacs_overrides_vs_configs/default.py"]
        over["D_MODEL"] = over["CONTENT_ENCODER"]["d_model"] = over["STYLE_ENCODER"]["d_model"] = 48
        c["DECODER"]["d_model"] = 48
    with pytest.raises(ConversionError, match=r"shape \(1, 11, 32\) vs \(1, 11, 48\)|shape mismatches"):
        fixtures.check(_fixture_copy(tmp_path, "wider", keep="f2_", config_edit=wider))

    def deeper(c):
        c["DECODER"]["num_decoder_layers"] = 3
    with pytest.raises(ConversionError, match=r"parameters left empty.*upper_decoder/layers/2"):
        fixtures.check(_fixture_copy(tmp_path, "deeper", keep="f2_", config_edit=deeper))

    config = _fixture_config()
    config["DECODER"]["nhead"] = 8
    config["yacs_overrides_vs_configs/default.py"]["STYLE_ENCODER"]["num_encoder_layers"] = 3
    ours = convert_dt.model_config_from_original(config)
    assert (ours.decoder.num_heads, ours.content_encoder.num_heads, ours.style_encoder.num_layers) == (8, 4, 3)
    assert ours.decoder.upper_indices == tuple(config["DECODER"]["upper_face3d_indices"])
    assert ours.style_max_len == 256 and ours.audio_dim == 1024 and ours.decoder.tail_hidden == 16

    def eps_prediction(c):
        c["DIFFUSION"]["PREDICT_WHAT"] = "noise"
    with pytest.raises(ConversionError, match="PREDICT_WHAT='noise'"):
        fixtures.check(_fixture_copy(tmp_path, "eps", keep="f2_", config_edit=eps_prediction))


def test_convert_tool_writes_all_or_nothing(tmp_path, capsys):
    """OUT is staged in a temporary folder beside it and renamed only when every part converted: a renderer that
    does not fit (released sizes vs the small fixture) leaves nothing, although the denoiser converted; an
    existing OUT is refused and kept as it was; an existing empty OUT is filled."""
    tool = _tool("convert_dreamtalk")
    renderer = os.path.join(ROOT, "tests", "fixtures", "dreamtalk_renderer")
    args = ["--denoiser", os.path.join(FIXTURE, "weights.safetensors"), "--config", os.path.join(FIXTURE, "config.json"),
            "--renderer", os.path.join(renderer, "weights.safetensors")]
    small_renderer = ["--renderer_config", os.path.join(renderer, "config.json")]
    out = tmp_path / "out"
    assert tool.main([*args, "--out", str(out)]) == 2
    assert "shape mismatches (271)" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # no OUT, no half-written denoiser, no temporary folder

    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert tool.main([*args, *small_renderer, "--out", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert os.listdir(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"

    (tmp_path / "empty").mkdir()
    assert tool.main([*args, *small_renderer, "--out", str(tmp_path / "empty")]) == 0
    assert capsys.readouterr().out.count("wrote ") == 2
    assert sorted(os.listdir(tmp_path)) == ["empty", "out"]
    assert sorted(os.listdir(tmp_path / "empty")) == ["denoiser", "renderer"]
    for part, name in (("denoiser", "dreamtalk"), ("renderer", "pirenderer")):
        loaded = loader.load_model(tmp_path / "empty" / part)
        config = loaded.model_config
        assert config.name == name


def test_convert_tool_writes_a_loadable_checkpoint(tmp_path, capsys):
    tool = _tool("convert_dreamtalk")
    assert tool.main(["--denoiser", os.path.join(FIXTURE, "weights.safetensors"), "--out", str(tmp_path / "ckpt"),
                      "--config", os.path.join(FIXTURE, "config.json")]) == 0
    loaded = loader.load_model(tmp_path / "ckpt" / "denoiser")
    model, config = loaded.model, loaded.model_config
    assert config.d_model == 32 and config.decoder.num_layers == 2 and config.name == "dreamtalk"
    io = _io()
    inputs = [jnp.asarray(io[f"f2_{k}"]) for k in ("x_t", "t", "audio", "style_clip", "style_pad_mask")]
    net = model.net
    out, _, _ = compiled.bind(fixture_dreamtalk.forwards, net)(*inputs)
    np.testing.assert_allclose(out["x0_pred"], io["f2_x0_pred"], rtol=1e-5, atol=1e-6)
    # the same folder again: refused, not overwritten
    assert tool.main(["--denoiser", os.path.join(FIXTURE, "weights.safetensors"), "--out", str(tmp_path / "ckpt"),
                      "--config", os.path.join(FIXTURE, "config.json")]) == 2
    assert "exists" in capsys.readouterr().err
    # the released config does not fit the reduced fixture: every problem named
    assert tool.main(["--denoiser", os.path.join(FIXTURE, "weights.safetensors"), "--out", str(tmp_path / "r0")]) == 2
    assert "differs from what the config implies" in capsys.readouterr().err
    code = tool.main(["--renderer", "renderer.pt", "--out", str(tmp_path / "r")])
    if importlib.util.find_spec("mirrortalk_jax.convert.pirenderer") is None:
        assert code == 2 and "mirrortalk_jax.convert.pirenderer" in capsys.readouterr().err
