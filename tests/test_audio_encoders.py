"""HuBERT / wav2vec 2.0 ports against Hugging Face dumps, their converter, and chunked feature extraction."""

import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest
import soundfile
from safetensors.numpy import load_file, save_file

from mirrortalk_jax.models.abstract import abstract_variables, builder
from mirrortalk_jax import base_config, cli
from mirrortalk_jax import fixtures
from mirrortalk_jax.convert import hf_audio, name_map, foreign
from mirrortalk_jax.runs import loader
from mirrortalk_jax.convert.foreign import ConversionError
from mirrortalk_jax.data import encoder_features as ef
from mirrortalk_jax.data import sources as data_sources
from mirrortalk_jax.models.audio_encoders import wav2vec2 as audio_encoders
from tools import check_fixture, convert_hf_audio

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
HUBERT, W2V_PRE, W2V_POST = FIXTURES / "hubert_tiny", FIXTURES / "wav2vec2_tiny", FIXTURES / "wav2vec2_tiny" / "nonstable"
# (fixture, full-size config variant its manifest describes)
MANIFESTS = ((HUBERT, "hubert_large"), (W2V_PRE, "wav2vec2_large_xlsr53"), (W2V_POST, "wav2vec2_base"))


def _hf(folder):
    return json.loads((folder / "config.json").read_text()), load_file(folder / "weights.safetensors")


def _model(folder):
    config, tensors = _hf(folder)
    return hf_audio.convert(tensors, config, source=str(folder))


def _flat(model):
    from flax import nnx
    return {name_map.path_str(p): np.asarray(v.get_value())
            for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


# ----- Numerics against the Hugging Face reference dumps -----

def test_check_fixture_passes_every_fixture_and_hidden_state(capsys):
    """tools/check_fixture.py exits 0 on the three fixtures; every hidden state of both inputs is compared."""
    assert check_fixture.main(["check_fixture", str(HUBERT), str(W2V_PRE), str(W2V_POST)]) == 0
    out = capsys.readouterr().out
    assert "hubert: 13/13 outputs within tolerance" in out
    assert out.count("wav2vec2: 15/15 outputs within tolerance") == 2  # pre-LN and post-LN arrangements
    for case in ("w1", "w2"):
        for i in range(3):  # L + 1 hidden states (transformers 4.x convention) and L raw layer outputs
            assert f"{case}_hidden_states[{i}]" in out
        assert f"{case}_layer_outputs[1]" in out and f"{case}_extract_features" in out
    rel = [float(line.split()[2]) for line in out.splitlines() if line.startswith(("w1_", "w2_"))]
    assert len(rel) == 13 + 15 + 15 and max(rel) < 1e-5


def test_a_wrong_weight_fails_the_fixture_check(tmp_path):
    """The comparison is not vacuous: the weight norm's g scaled by 1.01 is caught (check_fixture exits 1)."""
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in ("config.json", "io.npz"):
        (folder / name).write_bytes((HUBERT / name).read_bytes())
    tensors = load_file(HUBERT / "weights.safetensors")
    tensors["encoder.pos_conv_embed.conv.weight_g"] = tensors["encoder.pos_conv_embed.conv.weight_g"] * 1.01
    save_file(tensors, folder / "weights.safetensors")
    _, results = fixtures.check(folder)
    failed = {r.output for r in results if not r.passed}
    assert "w1_last_hidden_state" in failed and "w1_input_values(normalize_waveform)" not in failed


# ----- The converter -----

@pytest.mark.parametrize("folder,variant", MANIFESTS, ids=lambda x: getattr(x, "name", x))
def test_full_size_manifest_fills_the_released_model_exactly(folder, variant):
    config = base_config.load_config_file(base_config.config_path("audio_encoders"), variant).model
    abstract = abstract_variables(builder(config, None))
    manifest = json.loads((folder / "manifest_full.json").read_text())["keys"]
    name_map.check_manifest(manifest, hf_audio.RULES, abstract)  # every key used, every param filled, shapes equal
    heads = ("lm_head.weight", "lm_head.bias", f"{config.name}.masked_spec_embed")  # consumed, not ported
    encoder = sum(math.prod(e["shape"]) for e in manifest if e["key"] not in heads)
    assert encoder == sum(math.prod(x.shape) for x in jax.tree.leaves(abstract))
    with pytest.raises(ConversionError, match=r"parameters left empty \(1\): encoder/layers/3/attention/q_proj/kernel"):
        name_map.check_manifest([e for e in manifest if e["key"] != f"{config.name}.encoder.layers.3.attention.q_proj.weight"],
                                hf_audio.RULES, abstract)


def test_truncated_checkpoint_is_refused(tmp_path):
    data = (HUBERT / "weights.safetensors").read_bytes()
    (tmp_path / "weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="weights.safetensors: not a readable safetensors file"):
        foreign.read_tensors(tmp_path / "weights.safetensors")


def test_mismatched_checkpoints_name_the_problem(tmp_path, capsys):
    config, tensors = _hf(HUBERT)
    missing = {k: v for k, v in tensors.items() if k != "encoder.layers.1.feed_forward.output_dense.bias"}
    with pytest.raises(ConversionError, match=r"parameters left empty \(1\): encoder/layers/1/feed_forward/output_dense/bias"):
        hf_audio.convert(missing, config)
    with pytest.raises(ConversionError, match=r"encoder\.layers\.0\.attention\.q_proj\.weight -> .*: \(32, 32\) vs expected "
                                              r"\(48, 48\)"):
        hf_audio.convert(tensors, {**config, "hidden_size": 48, "intermediate_size": 96})
    with pytest.raises(ConversionError, match=r"rules pointing at no parameter \(1\): encoder.layers.2.final_layer_norm"):
        hf_audio.convert({**tensors, "encoder.layers.2.final_layer_norm.weight": np.ones(32, np.float32)}, config)
    # A group-norm checkpoint does not fit a layer-norm config: the norms of convs 1..6 are left empty.
    post_config, post_tensors = _hf(W2V_POST)
    with pytest.raises(ConversionError, match=r"feature_extractor/conv_layers/6/layer_norm/scale"):
        hf_audio.convert(post_tensors, {**post_config, "feat_extract_norm": "layer", "conv_bias": False})
    with pytest.raises(ConversionError, match="belong to a hubert checkpoint, but config.json says model_type='wav2vec2'"):
        hf_audio.convert({f"hubert.{k}": v for k, v in tensors.items()}, {**config, "model_type": "wav2vec2"})
    with pytest.raises(ConversionError, match="conv_pos_batch_norm"):
        hf_audio.convert(tensors, {**config, "conv_pos_batch_norm": True})
    # The command-line tool turns the error into a message and exit code 2.
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    save_file(tensors, folder / "model.safetensors")
    assert convert_hf_audio.main(["--hf_dir", str(folder), "--out", str(tmp_path / "out")]) == 2
    assert "parameters left empty" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_ctc_prefix_heads_and_weight_norm_spellings_convert_to_the_same_model():
    config, tensors = _hf(HUBERT)
    reference = _flat(hf_audio.convert(tensors, config))
    g, v = tensors.pop("encoder.pos_conv_embed.conv.weight_g"), tensors.pop("encoder.pos_conv_embed.conv.weight_v")
    ctc = {f"hubert.{k}": x for k, x in tensors.items()}
    ctc.update({"hubert.encoder.pos_conv_embed.conv.parametrizations.weight.original0": g,
                "hubert.encoder.pos_conv_embed.conv.parametrizations.weight.original1": v,
                "hubert.masked_spec_embed": np.zeros(32, np.float32),
                "lm_head.weight": np.zeros((32, 32), np.float32), "lm_head.bias": np.zeros(32, np.float32)})
    for key, value in _flat(hf_audio.convert(ctc, config)).items():
        np.testing.assert_array_equal(value, reference[key], err_msg=key)
    # A checkpoint saved without weight norm (plain `weight`) gives the same effective kernel.
    plain = dict(tensors, **{"encoder.pos_conv_embed.conv.weight": g * v / np.sqrt((v ** 2).sum((0, 1), keepdims=True))})
    model = hf_audio.convert(plain, config)
    want = hf_audio.convert({**tensors, "encoder.pos_conv_embed.conv.weight_g": g,
                             "encoder.pos_conv_embed.conv.weight_v": v}, config)
    np.testing.assert_allclose(model.encoder.pos_conv_embed.kernel(), want.encoder.pos_conv_embed.kernel(), rtol=1e-5,
                               atol=1e-7)


def test_converted_checkpoint_stores_the_config_and_reloads(tmp_path, capsys):
    assert convert_hf_audio.main(["--hf_dir", str(W2V_POST), "--out", str(tmp_path / "ckpt")]) == 0
    assert "wav2vec2, 2 layers x 32, post-LN, group-norm conv encoder" in capsys.readouterr().out
    loaded = loader.load_model(tmp_path / "ckpt")
    model, config, spec = loaded.model, loaded.model_config, loaded.spec
    assert spec is None and config.to_dict() == audio_encoders.config_from_hf(_hf(W2V_POST)[0]).to_dict()
    direct = _flat(_model(W2V_POST))
    assert all(np.array_equal(value, direct[key]) for key, value in _flat(model).items())


# ----- Chunked extraction -----

def _speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.normal(size=t.size)
            + 0.01).astype(np.float32)


@pytest.mark.parametrize("folder,layers", [(HUBERT, (0, 1)), (W2V_POST, (0,))], ids=["pre_ln", "post_ln"])
def test_hidden_state_of_a_chosen_layer_matches_the_reference(folder, layers):
    """What the features job extracts: hidden_states[k] (transformers 4.x numbering), running only k layers."""
    io, model = np.load(folder / "io.npz"), _model(folder)
    for k in layers:
        ref = io["w1_hidden_states"][k, 0]
        out = ef.one_shot(model, io["w1_waveform"][0], k)
        assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max(), k
    with pytest.raises(ValueError, match="layer 3 out of range for 2 layers"):
        model.hidden_state(io["w1_input_values"], 3)


# One chunk layout for the tests below, so they share compiled window shapes: windows of 24 + 2 * 66 = 156
# frames, buckets of 156 and 78 frames.
CHUNK = ef.ChunkConfig(chunk_frames=24, context_frames=66, batch_size=4, buckets=2)
CHUNK_ARGS = ["--chunk_frames", "24", "--context_frames", "66", "--batch_size", "4"]


@pytest.mark.parametrize("folder", [HUBERT, W2V_POST], ids=["layer_norm_conv", "group_norm_conv"])
def test_chunked_equals_one_shot_within_the_receptive_field(folder):
    """Layer 0 (conv encoder + positional conv: receptive field +-64 frames): with 66 frames of context, 24-frame
    chunks of a 4 s clip equal one-shot processing; for the group-norm encoder this needs the whole clip's
    statistics, accumulated in a first pass. Another length reuses the compiled window shape."""
    model = _model(folder)
    extractor = ef.EncoderFeatures(model, 0, CHUNK)
    audio = _speech_like(4.0)
    out, ref = extractor(audio), ef.one_shot(model, audio, 0)
    assert out.shape == ref.shape == (199, 32)
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    compiled = ef.compiled_window_shapes()
    assert extractor(_speech_like(5.3, 1)).shape == (264, 32)
    assert ef.compiled_window_shapes() == compiled  # no recompilation for a new length


def test_frame_layouts_for_dreamtalk_and_mimictalk():
    h = np.arange(9 * 2, dtype=np.float32).reshape(9, 2) + 1  # 9 rows at 50 Hz
    windows = ef.dreamtalk_windows(h)
    assert windows.shape == (4, 11, 2)
    for i in range(4):
        for j, row in enumerate(range(2 * i - 5, 2 * i + 6)):
            np.testing.assert_array_equal(windows[i, j], h[row] if 0 <= row < 9 else 0)
    per_frame = ef.per_video_frame(h, 5)  # 9 rows for 5 video frames: the last row repeats
    assert per_frame.shape == (5, 4)
    np.testing.assert_array_equal(per_frame[2], np.concatenate([h[4], h[5]]))
    np.testing.assert_array_equal(per_frame[4], np.concatenate([h[8], h[8]]))
    np.testing.assert_array_equal(ef.mimictalk_input(per_frame)[:9], h)
    with pytest.raises(ValueError, match="max_pad"):
        ef.per_video_frame(h, 8)


# ----- The `mirrortalk features` command -----

def test_features_command_on_audio_files(tmp_path):
    """Audio files -> npz; a clip shorter than a window is padded to a bucket and masked, which gives exactly
    HF's unpadded last_hidden_state (the reference dump)."""
    io = np.load(HUBERT / "io.npz")
    soundfile.write(tmp_path / "speech.wav", io["w1_waveform"][0], 16000, subtype="FLOAT")
    assert cli.main(["features", str(HUBERT), str(tmp_path / "speech.wav"), "--out", str(tmp_path / "feats"),
                     "--dreamtalk_windows", *CHUNK_ARGS]) == 0
    with np.load(tmp_path / "feats" / "speech.npz") as npz:
        h50, h25, windows, info = (npz[k] for k in ("features_50hz", "features_25fps", "dreamtalk_windows", "info"))
    ref = io["w1_last_hidden_state"][0]  # 74 frames, run in a 78-frame bucket
    assert h50.shape == ref.shape and np.abs(h50 - ref).max() <= 1e-5 * np.abs(ref).max()
    assert h25.shape == (37, 64) and windows.shape == (37, 11, 32)
    np.testing.assert_array_equal(h25[10], np.concatenate([h50[20], h50[21]]))
    np.testing.assert_array_equal(windows[0, 5:], h50[:6])
    assert json.loads(str(info))["encoder"] == "hubert" and json.loads(str(info))["layer"] == -1
    assert cli.main(["features", str(tmp_path / "nothing"), str(tmp_path / "speech.wav"), "--out", str(tmp_path)]) == 2


def test_features_command_goes_on_after_a_bad_file_and_keeps_same_named_inputs_apart(tmp_path, capsys):
    """One unusable file is reported by name and the rest are written; inputs sharing a stem get distinct
    outputs named by their folders; no temporary file is left behind."""
    io = np.load(HUBERT / "io.npz")
    for speaker in ("alice", "bob"):
        (tmp_path / speaker).mkdir()
        soundfile.write(tmp_path / speaker / "speech.wav", io["w1_waveform"][0], 16000, subtype="FLOAT")
    (tmp_path / "broken.wav").write_bytes(b"RIFF")
    inputs = [tmp_path / "alice" / "speech.wav", tmp_path / "broken.wav", tmp_path / "bob" / "speech.wav"]
    out = tmp_path / "feats"
    assert cli.main(["features", str(HUBERT), *map(str, inputs), "--out", str(out), *CHUNK_ARGS]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["alice__speech.npz", "bob__speech.npz"]
    err = capsys.readouterr().err
    assert "broken.wav" in err and "1 of 3 file(s) failed" in err
    with np.load(out / "alice__speech.npz") as a, np.load(out / "bob__speech.npz") as b:
        np.testing.assert_array_equal(a["features_50hz"], b["features_50hz"])
        assert json.loads(str(b["info"]))["source"].endswith("bob/speech.wav")


def test_output_names_are_distinct():
    assert ef.output_names(["x/a.wav", "y/b.wav"]) == ["a", "b"]
    assert ef.output_names(["d/x/a.wav", "d/y/a.wav", "d/b.wav"]) == ["x__a", "y__a", "b"]
    assert ef.output_names(["d/a.wav", "d/a.mp4"]) == ["a_wav", "a_mp4"]
    assert ef.output_names(["d/a.wav", "d/a.wav"]) == ["a_wav", "a_wav_2"]


def test_features_command_writes_a_dataset_copy(micro_dataset, tmp_path):
    """From a converted checkpoint: a copy of a SynthTalk split whose records carry (T, 2H) audio_features."""
    assert convert_hf_audio.main(["--hf_dir", str(HUBERT), "--out", str(tmp_path / "hubert")]) == 0
    out = tmp_path / "with_features"
    assert cli.main(["features", str(tmp_path / "hubert"), str(micro_dataset), "--out", str(out), "--splits", "heldout_speakers",
                     "--drop_frames", *CHUNK_ARGS]) == 0
    source = data_sources.ClipSource(micro_dataset, "heldout_speakers")
    copy = data_sources.ClipSource(out, "heldout_speakers")  # validates every record it reads against the schema
    assert len(copy) == len(source) and "frames" not in copy.info.features
    assert copy.info.metadata["audio_features"]["encoder"] == "hubert"
    by_clip = lambda index: sorted(index, key=lambda e: e["clip_id"])
    assert by_clip(copy.clip_index()) == by_clip(source.clip_index())
    by_id = {copy[i]["clip_id"]: copy[i] for i in range(len(copy))}
    extractor = ef.EncoderFeatures(_model(HUBERT), -1, CHUNK)
    for i in range(len(source)):
        record = source[i]
        written, frames = by_id[record["clip_id"]], record["motion"].shape[0]
        np.testing.assert_array_equal(written["motion"], record["motion"])
        assert written["audio_features"].shape == (frames, 64)
        np.testing.assert_allclose(written["audio_features"], ef.per_video_frame(extractor(record["audio"]), frames),
                                   rtol=1e-6, atol=1e-6)
