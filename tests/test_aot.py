"""Ahead-of-time compilation of the real train step for a topology, its memory report and the communication
computed from the shardings."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from mirrortalk_jax import base_config
from mirrortalk_jax.data import pipeline
from mirrortalk_jax.data.sources import ClipSource
from mirrortalk_jax.train import aot
from tests.test_trainer import ROOT


def _tiny(**mesh):
    config = base_config.load_config_file(os.path.join(ROOT, "mirrortalk_jax/configs/synthtalk_regression.py"), "tiny")
    config.mesh.update(mesh)
    return config


def test_data_parallel_step_all_reduces_every_gradient_once():
    report = aot.compile_train_step(_tiny(ici_data=8), "cpu-8")
    comm, params = report.communication, report.communication["param_bytes"]
    assert report.mesh == {"data": 8, "fsdp": 1, "tensor": 1} and not report.real_target
    assert params == 4 * report.num_params  # float32
    assert comm["param_all_gather"] == comm["grad_reduce_scatter"] == 0
    assert comm["grad_all_reduce"] == pytest.approx(2 * params * 7 / 8)  # ring all-reduce over 8 replicas
    assert report.memory["total"] > 0 and report.memory["argument"] > 0
    assert report.collectives.get("all-reduce", 0) > 0 and "all-gather" not in report.collectives


def test_fsdp_step_gathers_parameters_and_scatters_gradients():
    report = aot.compile_train_step(_tiny(ici_data=2, ici_fsdp=4), "cpu-8")
    dp = aot.compile_train_step(_tiny(ici_data=8), "cpu-8")
    comm = report.communication
    assert comm["param_all_gather"] == comm["grad_reduce_scatter"] > 0
    # Every byte is either FSDP-sharded (gathered over 4: 3/4 moves, then its quarter all-reduced over data=2)
    # or replicated (all-reduced over all 8 batch shards).
    sharded = comm["param_all_gather"] / (3 / 4)
    replicated = comm["param_bytes"] - sharded
    assert comm["grad_all_reduce"] == pytest.approx(2 * (sharded / 4) * (1 / 2) + 2 * replicated * 7 / 8)
    assert 0 < replicated < 0.05 * comm["param_bytes"]  # only biases of replicated axes are left whole
    assert report.collectives.get("all-gather", 0) > 0
    # Arguments per device shrink with FSDP: parameters and Adam moments are split 4 ways.
    assert report.memory["argument"] < 0.5 * dp.memory["argument"]


def test_abstract_batch_matches_the_input_pipeline(micro_dataset):
    config = _tiny()
    config.data.window_frames = 16
    source = ClipSource(micro_dataset, "train")
    real = next(iter(pipeline.training_dataset(source, pipeline.WindowConfig.from_config(config.data), batch_size=8, seed=0)))
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    config.train.batch_size = 8
    abstract = aot.abstract_batch(config, source.spec, mesh)
    assert {k: (v.shape, v.dtype) for k, v in abstract.items()} == {k: (v.shape, v.dtype) for k, v in real.items()
                                                                     if k in abstract}
    assert set(real) - set(abstract) == {"style_params"}  # SynthTalk's ground-truth style, which no loss reads


def test_a_step_the_compiler_cannot_fit_is_an_answer_not_a_crash():
    # What the TPU compiler raised for mirrortalk.py:large on v5p-8 without remat (docs/scaling.md).
    error = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required "
                                       "for HLO temporaries (100.80G) exceeds available HBM (95.74G).\nmore")
    assert aot.out_of_memory(error).endswith("exceeds available HBM (95.74G).")
    assert aot.out_of_memory(jax.errors.JaxRuntimeError("INTERNAL: something else")) is None


def test_errors_are_clear():
    with pytest.raises(ValueError, match="unknown topology"):
        aot.device_count("v9z-8")
    with pytest.raises(ValueError, match="needs 16 CPU stand-in devices"):
        aot.topology_devices("cpu-16")
    config = _tiny(ici_data=8)
    config.train.batch_size = 4
    with pytest.raises(ValueError, match="must divide by the data\\*fsdp mesh size 8"):
        aot.compile_train_step(config, "cpu-8")
    assert aot.device_count("v5p-64") == 32 and aot.device_count("v5e-16", num_slices=2) == 32


def test_tool_compiles_for_a_tpu_slice_or_says_it_stood_in(tmp_path):
    """With libtpu installed the target is the real TPU compiler; without it, 8 CPU devices, and the report
    says so."""
    have_libtpu = bool(importlib.util.find_spec("libtpu") or os.environ.get("TPU_LIBRARY_PATH"))
    out = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "tools/aot_compile.py", "--config=mirrortalk_jax/configs/synthtalk_regression.py:tiny",
                             "--topology=v5e-8", f"--json={out}", "--config.mesh.ici_fsdp=2",
                             "--config.mesh.ici_data=4"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["real_target"] == have_libtpu and report["mesh"] == {"data": 4, "fsdp": 2, "tensor": 1}
    assert report["memory"]["total"] > 0 and report["communication"]["param_all_gather"] > 0
    if have_libtpu:
        assert report["hbm_bytes"] == 16 * 2**30 and "TPU devices" in report["devices"]
    else:
        assert "fake CPU devices standing in for v5e-8" in result.stdout
    assert "communication per device per step" in result.stdout
