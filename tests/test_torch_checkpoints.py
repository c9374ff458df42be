"""Released PyTorch checkpoint layouts, read through the optional `[torch]` extra (torch.load weights_only=True).

Each reference fixture's weights are written as the original's torch file (the release's nesting and key
prefixes) and must read back exactly as the safetensors export does; files holding pickled code are refused.
Without torch this module is skipped: the safetensors paths, which need no torch, are covered by every
fixture test; `pip install -e ".[torch]"` runs these too.
"""

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from mirrortalk_jax.convert import dreamtalk, mimictalk, pirenderer, foreign, syncnet

torch = pytest.importorskip("torch", reason="reading PyTorch files needs the [torch] extra")

FIXTURES = Path(__file__).parent / "fixtures"


def _weights(name: str) -> dict[str, np.ndarray]:
    return load_file(str(FIXTURES / name / "weights.safetensors"))


def _save(tree, path: Path) -> Path:
    def to_torch(node):
        if isinstance(node, dict):
            return {k: to_torch(v) for k, v in node.items()}
        # np.array, not ascontiguousarray: that one turns 0-d buffers (num_batches_tracked) into shape (1,)
        return torch.from_numpy(np.array(node)) if isinstance(node, np.ndarray) else node
    torch.save(to_torch(tree), path)
    return path


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_dreamtalk_denoiser_and_renderer_files(tmp_path):
    denoiser = _weights("dreamtalk_denoiser")  # keys carry the release's `diff_net.` prefix
    # denoising_network.pth: {"model_state_dict": ..., "optimizer_state_dict": ..., "epoch": ...}
    path = _save({"model_state_dict": denoiser, "optimizer_state_dict": {"state": {}}, "epoch": 7},
                 tmp_path / "denoising_network.pth")
    _assert_same(dreamtalk.read_denoiser(path), dreamtalk.read_denoiser(FIXTURES / "dreamtalk_denoiser" /
                                                                         "weights.safetensors"))
    renderer = _weights("dreamtalk_renderer")
    path = _save({"net_G_ema": renderer, "net_G": renderer}, tmp_path / "renderer.pt")
    _assert_same(pirenderer.renderer_tensors(path), renderer)


def test_syncnet_release_file_without_suffix(tmp_path):
    weights = _weights("syncnet")
    _assert_same(syncnet.read_checkpoint(_save(weights, tmp_path / "syncnet_v2.model")), weights)
    wrapped = {f"module.{k}": v for k, v in weights.items()}  # a DataParallel save
    _assert_same(syncnet.read_checkpoint(_save(wrapped, tmp_path / "wrapped.pth")), weights)


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_mimictalk_ckpt_layouts(tmp_path, layout):
    weights = _weights("mimictalk_icl_a2m")
    if layout == "nested":  # ckpt["state_dict"]["model"][key]
        tree = {"state_dict": {"model": weights}, "global_step": 1000}
    else:  # ckpt["state_dict"]["model." + key], beside other sub-modules the loader ignores
        tree = {"state_dict": {**{f"model.{k}": v for k, v in weights.items()},
                               "disc.weight": np.zeros((2, 2), np.float32)}}
    path = _save(tree, tmp_path / "model_ckpt_steps_1000.ckpt")
    _assert_same(mimictalk.read_checkpoint(path), weights)
    out, config = mimictalk.convert_checkpoint(path, tmp_path / "converted")
    assert (out / "model.json").is_file() and config.mode == "icl_flow_matching"


def test_bfloat16_tensors_are_read_as_float32(tmp_path):
    path = tmp_path / "half.pt"
    torch.save({"w": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)}, path)
    got = foreign.read_tensors(path)["w"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.arange(6, dtype=np.float32).reshape(2, 3))


class _Payload:  # anything that is not a tensor, container or number: weights_only must refuse to build it
    pass


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"diff_net.w": torch.zeros(1)}, "hook": _Payload()}, path)
    with pytest.raises(foreign.ConversionError, match=r"evil\.pth: torch\.load\(weights_only=True\) refused it"):
        dreamtalk.read_denoiser(path)
    path = tmp_path / "truncated.pth"
    path.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(foreign.ConversionError, match="truncated.pth"):
        foreign.read_tensors(path)
