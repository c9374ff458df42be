r"""Compiles the train step of a config for a pod topology on this machine, and reports per-device memory and
the communication per step, before any pod is rented.

    python tools/aot_compile.py --config=mirrortalk_jax/configs/mirrortalk.py:base --topology=v5p-64
    python tools/aot_compile.py --config=mirrortalk_jax/configs/mirrortalk.py:large --topology=v5e-256 \
        --config.mesh.ici_fsdp=16 --config.mesh.ici_data=-1 --json=runs/aot_large.json
    python tools/aot_compile.py --config=mirrortalk_jax/configs/synthtalk_regression.py:tiny --topology=cpu-8

TPU topologies need libtpu (`pip install -e '.[tpu]'`; any x86 Linux host, no TPU); without it the step is
compiled for the same number of fake CPU devices instead, and the report says so. Exit status 1 when a real
TPU target does not fit its device memory. Logic: mirrortalk_jax/train/aot.py.
"""

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. mirrortalk_jax/configs/x.py:base.")
flags.DEFINE_string("topology", "v5p-8", "TPU accelerator type (v5p-64, v5e-256, ...) or cpu-N.")
flags.DEFINE_integer("num_slices", 1, "Slices of that topology (multislice: set config.mesh.dcn_*).")
flags.DEFINE_string("json", None, "Also write the report as JSON to this file.")
flags.mark_flags_as_required(["config"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import jax

    from mirrortalk_jax.train import aot

    # CPU stand-ins must exist before JAX first runs; TPU targets ignore them.
    jax.config.update("jax_num_cpu_devices", max(aot.device_count(FLAGS.topology, FLAGS.num_slices), 1))
    config_arg = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), "")
    try:
        report = aot.compile_train_step(FLAGS.config, FLAGS.topology, num_slices=FLAGS.num_slices,
                                        config_name=os.path.relpath(config_arg) if config_arg else "")
    except Exception as e:  # noqa: BLE001 - jax raises JaxRuntimeError; only an out-of-memory one is an answer
        if (message := aot.out_of_memory(e)) is None:
            raise
        print(f"does not fit {FLAGS.topology}: {message}", file=sys.stderr)
        return 1
    print(aot.format_report(report))
    if FLAGS.json:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
        with open(FLAGS.json, "w") as f:
            json.dump(report.to_json(), f, indent=2)
    if aot.fits(report) is False:
        print(f"does not fit: {report.memory['total'] / 2**30:.1f} GiB needed per device, "
              f"{report.hbm_bytes / 2**30:.0f} GiB available", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    app.run(main)
