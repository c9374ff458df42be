"""SyncNet port (syncnet_python SyncNetModel.S), its converter, and LSE-C / LSE-D against the original's outputs.

Reference numbers: tests/fixtures/syncnet (a width/8 SyncNet with random weights run by syncnet_python; see
tests/fixtures/README.md).
"""

import contextlib
import importlib.util
import io
import json
import os

import jax
import numpy as np
import pytest
import scipy.signal
from flax import nnx

from mirrortalk_jax.models.abstract import abstract_variables, builder
from mirrortalk_jax import base_config
from mirrortalk_jax.convert import name_map, foreign
from mirrortalk_jax.convert import syncnet as convert_syncnet
from mirrortalk_jax.evaluate import lse, sync
from mirrortalk_jax.models import registry
from mirrortalk_jax.models.syncnet import model as syncnet
from mirrortalk_jax.train import mesh as mesh_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "syncnet")
WEIGHTS = os.path.join(FIXTURE, "weights.safetensors")


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(variant):
    return base_config.load_config_file(base_config.config_path("syncnet"), variant).model


@pytest.fixture(scope="module")
def io_npz():
    with np.load(os.path.join(FIXTURE, "io.npz")) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def tiny_model():
    return convert_syncnet.convert_model(convert_syncnet.read_checkpoint(WEIGHTS), _config("tiny"))


def test_check_fixture_passes_every_output():
    """tools/check_fixture.py on the fixture: exit 0, every io.npz output compared and within tolerance."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = _tool("check_fixture").main(["check_fixture", FIXTURE])
    table = out.getvalue()
    print(table)  # max abs / rel error per output (pytest -s)
    assert status == 0, table
    rows = {line.split()[0]: line.split() for line in table.splitlines()[2:]}
    expected = [f"{c}_{o}" for c in ("f1", "f2") for o in ("lip_emb", "aud_emb", "lipfeat")]
    expected += ["e_mfcc", "e_num_windows"]
    expected += [f"{r}_{o}" for r in ("e15", "e5") for o in ("im_feat", "cc_feat")]
    expected += [f"{r}_{o}" for r in ("e15", "e5", "l") for o in (
        "dists", "mean_dists", "argmin", "offset", "min_dist", "conf", "framewise_conf_medfilt")]
    assert sorted(rows) == sorted(expected)
    assert all(row[-1] == "yes" for row in rows.values())
    for name in ("f1_lip_emb", "f2_aud_emb", "e15_im_feat", "e15_cc_feat", "e15_dists"):
        assert float(rows[name][2]) < 1e-5, (name, rows[name])  # relative error of the embeddings / distances


def test_lip_sequence_equals_every_window(tiny_model, io_npz):
    frames = io_npz["e_frames_bgr_uint8"][:8].astype(np.float32)  # 4 windows
    seq = tiny_model.lip_sequence(frames[None])[0]
    windows = np.stack([frames[i:i + 5] for i in range(4)])
    np.testing.assert_allclose(seq, tiny_model.forward_lip(windows), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(seq, io_npz["e15_im_feat"][:4], rtol=1e-4, atol=5e-5)
    # The tower really sees BGR: the same frames as RGB give other embeddings.
    assert np.abs(tiny_model.lip_sequence(frames[None, ..., ::-1])[0] - seq).max() > 1e-2
    with pytest.raises(ValueError, match=r"\(N, 5, 224, 224, 3\)"):
        tiny_model.forward_lip(frames[None, :6])
    with pytest.raises(ValueError, match="MFCC"):
        tiny_model.forward_aud(np.zeros((1, 20, 13), np.float32))


def test_mfcc_matches_python_speech_features(io_npz):
    ours = lse.speech_features_mfcc(io_npz["e_audio_int16"], 16000)
    assert ours.shape == (95, 13)  # 1 + ceil((15360 - 400) / 160) frames
    np.testing.assert_allclose(ours.T, io_npz["e_mfcc"], rtol=1e-6, atol=2e-5)
    # Raw int16 values, not [-1, 1] floats: float input is scaled back as ffmpeg writes s16.
    as_float = io_npz["e_audio_int16"].astype(np.float32) / 32768.0
    np.testing.assert_array_equal(lse.to_int16(as_float), io_npz["e_audio_int16"])
    scaled = lse.speech_features_mfcc(as_float, 16000)
    assert np.abs(scaled[:, 0] - ours[:, 0]).min() > 10  # c0 (log energy) depends on the scale...
    np.testing.assert_allclose(scaled[:, 1:], ours[:, 1:], atol=1e-6)  # ...the other cepstra do not
    assert lse.speech_features_mfcc(np.ones(300), 16000).shape == (1, 13)  # shorter than a frame: one frame
    np.testing.assert_allclose(lse.speech_filterbank().sum(), 26 * 8.0, rtol=0.2)  # 26 triangles, unit peaks


def test_offset_procedure_on_a_real_shift(io_npz):
    """The fixture's synthetic case: audio embeddings = video embeddings shifted by 3 -> offset 3 (sign check)."""
    result = sync.sync_offset_confidence(io_npz["l_im_feat"], io_npz["l_cc_feat"], int(io_npz["l_vshift"]))
    assert result.offset == 3 == int(io_npz["l_offset"])
    np.testing.assert_allclose(result.dists, io_npz["l_dists"], rtol=1e-6)
    np.testing.assert_allclose(result.mean_dists, io_npz["l_mean_dists"], rtol=1e-6)
    np.testing.assert_allclose([result.min_dist, result.confidence], [io_npz["l_min_dist"], io_npz["l_conf"]],
                               rtol=1e-6)
    np.testing.assert_allclose(result.framewise_confidence, io_npz["l_framewise_conf_medfilt"], rtol=1e-6,
                               atol=1e-6)


def test_median_filter_is_scipy_medfilt():
    x = np.random.default_rng(0).normal(size=23)
    for kernel in (1, 3, 9):
        np.testing.assert_allclose(sync.median_filter(x, kernel), scipy.signal.medfilt(x, kernel))
    with pytest.raises(ValueError, match="odd"):
        sync.median_filter(x, 4)


def test_embedder_windows_like_syncnet_python(tiny_model, io_npz):
    """RGB input is flipped, chunking does not change anything, windows are syncnet_python's (n = min_len - 5)."""
    bgr, audio = io_npz["e_frames_bgr_uint8"][:11], io_npz["e_audio_int16"][:11 * 640]
    ref = io_npz["e15_im_feat"][:6], io_npz["e15_cc_feat"][:6]
    a_video, a_audio = lse.SyncNetEmbedder(tiny_model, chunk=4)(bgr[..., ::-1], audio)  # RGB in
    b_video, b_audio = lse.SyncNetEmbedder(tiny_model, chunk=16)(bgr, audio / 32768.0, rgb=False)  # float audio
    assert a_video.shape == (6, 128) and a_audio.shape == (6, 128)
    for ours in (a_video, b_video):
        np.testing.assert_allclose(ours, ref[0], rtol=1e-4, atol=5e-5)
    for ours in (a_audio, b_audio):
        np.testing.assert_allclose(ours, ref[1], rtol=1e-4, atol=5e-5)
    assert lse.num_windows(24, 15360) == 19 and lse.num_windows(30, 15360) == 19 and lse.num_windows(10, 99999) == 5
    windows = lse.mfcc_windows(np.arange(13 * 40).reshape(13, 40), 3)
    np.testing.assert_array_equal(windows[2, 0], np.arange(8, 28))  # window i starts at MFCC column 4i
    with pytest.raises(ValueError, match="no SyncNet window"):
        lse.SyncNetEmbedder(tiny_model)(bgr[:5], audio)
    with pytest.raises(ValueError, match="16000 Hz"):
        lse.SyncNetEmbedder(tiny_model)(bgr, audio, sample_rate=22050)


def test_clip_sync_with_the_syncnet_embedder(tiny_model, io_npz):
    embedder = lse.SyncNetEmbedder(tiny_model, chunk=8)
    result = sync.clip_sync(lambda v, a: embedder(v, a, rgb=False), io_npz["e_frames_bgr_uint8"],
                            io_npz["e_audio_int16"], vshift=5)
    assert result.offset == int(io_npz["e5_offset"]) == 5
    np.testing.assert_allclose([result.min_dist, result.confidence], [io_npz["e5_min_dist"], io_npz["e5_conf"]],
                               rtol=1e-5, atol=1e-4)


def test_prepare_frames_resizes_like_cv2_linear():
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 112, 112, 3), dtype=np.uint8)
    out = lse.prepare_frames(frames, rgb=False)
    assert out.shape == (2, 224, 224, 3) and out.dtype == np.float32
    # 2x upsampling with half-pixel centres: output pixel 2i+1 sits at source i + 0.25 (on both axes).
    src = frames[0].astype(np.float64)
    w = np.array([0.75, 0.25])
    want = np.round(np.einsum("i,j,ijc->c", w, w, src[10:12, 10:12]))
    np.testing.assert_allclose(out[0, 21, 21], want, atol=1)
    np.testing.assert_array_equal(lse.prepare_frames(frames[:, :1, :1].repeat(224, 1).repeat(224, 2))[..., ::-1],
                                  frames[:, :1, :1].repeat(224, 1).repeat(224, 2))


def test_full_size_manifest_fills_the_released_model():
    with open(os.path.join(FIXTURE, "manifest_full.json")) as f:
        manifest = json.load(f)
    build = builder(_config("released"), None)
    abstract = abstract_variables(build)
    name_map.check_manifest(manifest["keys"], convert_syncnet.RULES, abstract)
    params = nnx.state(nnx.eval_shape(build), nnx.Param)
    assert sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params)) == manifest["num_params"] == 13_631_616
    # Old files without BatchNorm counters convert too (the original's loader tolerates them).
    without = [e for e in manifest["keys"] if not e["key"].endswith("num_batches_tracked")]
    name_map.check_manifest(without, convert_syncnet.RULES, abstract)
    with pytest.raises(foreign.ConversionError, match="shape mismatches"):
        name_map.check_manifest(manifest["keys"], convert_syncnet.RULES,
                                abstract_variables(builder(_config("tiny"), None)))


def test_corrupted_and_mismatched_checkpoints_raise(tmp_path):
    tensors = convert_syncnet.read_checkpoint(WEIGHTS)
    truncated = tmp_path / "truncated.safetensors"
    with open(WEIGHTS, "rb") as f:
        truncated.write_bytes(f.read()[:100_000])
    with pytest.raises(foreign.ConversionError, match="truncated.safetensors: not a readable safetensors"):
        convert_syncnet.read_checkpoint(truncated)
    with pytest.raises(foreign.ConversionError, match=r"shape mismatches \(88\): netcnnaud\.0\.bias -> "
                                                      r"audio_cnn/blocks/0/conv/bias: \(8,\) vs expected \(64,\)"):
        convert_syncnet.convert_model(tensors, _config("released"))  # the width/8 file into the released model
    missing = {k: v for k, v in tensors.items() if k != "netfclip.3.bias"}
    with pytest.raises(foreign.ConversionError, match=r"parameters left empty \(1\): lip_fc/fc2/bias"):
        convert_syncnet.convert_model(missing, _config("tiny"))
    stray = {**tensors, "netfclip.4.weight": np.zeros(3, np.float32)}
    with pytest.raises(foreign.ConversionError, match=r"source keys no rule uses \(1\): netfclip\.4\.weight"):
        convert_syncnet.convert_model(stray, _config("tiny"))
    wrong = {**tensors, "netcnnaud.19.running_var": np.ones(7, np.float32)}
    with pytest.raises(foreign.ConversionError, match=r"netcnnaud\.19\.running_var -> audio_cnn/blocks/5/norm/var"):
        convert_syncnet.convert_model(wrong, _config("tiny"))
    # `syncnet_v2.model` is read as a torch file (weights_only), whatever its suffix says.
    (tmp_path / "syncnet_v2.model").write_bytes(b"garbage")
    with pytest.raises(foreign.ConversionError, match="syncnet_v2.model"):
        convert_syncnet.read_checkpoint(tmp_path / "syncnet_v2.model")
    # The tool reports the problem and exits 2.
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = _tool("convert_syncnet").main(["--checkpoint", str(truncated), "--out", str(tmp_path / "x")])
    assert status == 2 and "not a readable safetensors" in err.getvalue()


def test_convert_tool_writes_a_loadable_checkpoint(tmp_path, tiny_model, io_npz):
    from mirrortalk_jax.runs import loader

    tool = _tool("convert_syncnet")
    config = base_config.config_path("syncnet") + ":tiny"
    out = tmp_path / "syncnet"
    assert tool.main(["--checkpoint", WEIGHTS, "--out", str(out), f"--config={config}"]) == 0
    loaded = loader.load_model(out)
    assert loaded.config.model.name == "syncnet" and loaded.config.model.width_divisor == 8
    mfcc = io_npz["f1_aud_in"][:, 0]
    np.testing.assert_array_equal(loaded.model.forward_aud(mfcc), tiny_model.forward_aud(mfcc))
    with contextlib.redirect_stderr(io.StringIO()):
        assert tool.main(["--checkpoint", WEIGHTS, "--out", str(out), f"--config={config}"]) == 2  # no overwrite


def test_registry_model_has_logical_axes_on_every_param():
    model = nnx.eval_shape(lambda: registry.create_model(_config("released"), None, nnx.Rngs(0)))
    assert isinstance(model, syncnet.SyncNet)
    known = {name for name, _ in mesh_lib.DEFAULT_RULES}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        axes = var.get_metadata().get("out_sharding")
        assert axes is not None and len(axes) == len(var.shape) and set(axes) <= known, (path, axes)
    with pytest.raises(ValueError, match="width_divisor=7"):
        syncnet.SyncNet(width_divisor=7, rngs=nnx.Rngs(0))
