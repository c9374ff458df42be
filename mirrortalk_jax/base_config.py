"""Defaults shared by every experiment config (mirrortalk_jax/configs/*.py); each experiment file overrides what it
needs, and `config_path` / `load_config_file` find and load them from any working directory."""

from __future__ import annotations

from pathlib import Path

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.data = ml_collections.ConfigDict()
    config.data.dataset_dir = ""  # a dataset in the record schema; empty: SynthTalk below, built if missing
    config.data.data_root = "data"
    config.data.synthtalk_variant = "default"
    config.data.train_split = "train"
    config.data.eval_split = "heldout_sentences"
    config.data.window_frames = 32
    config.data.reference_frames = 64
    config.data.audio_feature = "log_mel"
    config.data.worker_count = 0  # Grain decoding processes; 0 decodes in the training process
    config.data.on_bad_record = "skip"  # long runs log and skip a bad record instead of dying

    config.model = ml_collections.ConfigDict()
    config.model.name = ""

    config.train = ml_collections.ConfigDict()
    config.train.seed = 0
    config.train.batch_size = 32  # global, over all processes
    config.train.num_steps = 10_000
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 500
    config.train.decay_steps = 0  # length of the cosine decay; 0: num_steps (set it to extend a run later)
    config.train.final_lr_fraction = 0.1
    config.train.weight_decay = 1e-4
    config.train.param_groups = ()  # ((regex over param paths, lr multiplier), ...); multiplier 0 freezes
    # ((param subtree, trained run or converted folder[, its source subtree]), ...) loaded into a fresh run
    config.train.init_from = ()
    config.train.grad_clip = 1.0
    config.train.ema_decay = 0.0  # > 0 keeps an EMA of the parameters, used for evaluation
    config.train.log_every = 50
    config.train.eval_every = 1000  # 0 disables evaluation
    config.train.eval_batches = 4
    config.train.checkpoint_every = 1000
    config.train.keep_checkpoints = 3
    # Resume from the newest earlier checkpoint that verifies when the latest is corrupt (docs/training.md).
    config.train.fallback_to_previous_checkpoint = False
    config.train.max_nonfinite_streak = 10
    # On meshes with fsdp/tensor > 1, refuse parameters bigger than this (MiB) that no rule shards; 0: no check.
    config.train.max_replicated_param_mb = 2.0
    # Multi-process runs agree every this many steps whether a process got SIGTERM (a tiny all-gather), then all
    # save and stop after the same step.
    config.train.preemption_sync_every = 10
    # (first step, number of steps) to trace with jax.profiler into WORKDIR/profile (TensorBoard's profile tab);
    # () or a 0: no trace.
    config.train.profile = ()

    # Mesh (data, fsdp, tensor): ici_* within a slice, dcn_* across slices; -1 = all devices left.
    config.mesh = ml_collections.ConfigDict()
    config.mesh.ici_data = -1
    config.mesh.ici_fsdp = 1
    config.mesh.ici_tensor = 1
    config.mesh.dcn_data = 1
    config.mesh.dcn_fsdp = 1
    config.mesh.dcn_tensor = 1
    config.mesh.logical_axis_rules = ()  # empty: train.mesh.DEFAULT_RULES
    # Pin activations at block boundaries to the rules' placement (models/nn/sharding.py): the train, eval and
    # sample steps are traced with the mesh and rules active. False leaves activations to XLA's propagation.
    config.mesh.constrain_activations = True
    return config


def variant(arg: str | None, choices, default: str) -> str:
    """The config variant asked for (`mirrortalk_jax/configs/x.py:<variant>`), checked against `choices`."""
    name = arg or default
    if name not in choices:
        raise ValueError(f"unknown variant {name!r}: use one of {sorted(choices)}")
    return name


def variant_and_options(arg: str | None, choices, default: str, options=()) -> tuple[str, frozenset[str]]:
    """`mirrortalk_jax/configs/x.py:tiny,no_hsic` -> ("tiny", {"no_hsic"}): a variant plus options, each checked."""
    name, *opts = (arg or default).split(",")
    unknown = sorted(set(opts) - set(options))
    if unknown:
        raise ValueError(f"unknown config option(s) {unknown}: use any of {sorted(options)}")
    return variant(name or default, choices, default), frozenset(opts)


# The MirrorTalk paper's ablations as config options (`mirrortalk_jax/configs/style_encoder.py:tiny,no_hsic`): model-config
# overrides of the style encoder (stage 1) and of the generator (stage 2).
STYLE_ENCODER_ABLATIONS = {
    "no_memory_bank": {"num_slots": 0},
    "no_hsic": {"loss_weights.hsic": 0.0},
    "no_triplet": {"loss_weights.triplet": 0.0},
}
GENERATOR_ABLATIONS = {"no_hier_mod": {"hierarchical_modulation": False}}


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> None:
    """Sets dotted keys ("loss_weights.hsic") of `config`; a key the config lacks is a typo, not a new field."""
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for key in parents:
            node = node[key]
        if leaf not in node:
            raise KeyError(f"config has no field {dotted!r}")
        node[leaf] = value


def cpu_budget(config: ml_collections.ConfigDict, *, batch_size: int, num_steps: int, warmup_steps: int,
               eval_every: int, learning_rate: float | None = None) -> None:
    """The loop cadence of a `tiny` variant, sized for a 2-core CPU in minutes: logs every 20 steps, checkpoints
    at every evaluation."""
    config.train.update(batch_size=batch_size, num_steps=num_steps, warmup_steps=warmup_steps, log_every=20,
                        eval_every=eval_every, checkpoint_every=eval_every)
    if learning_rate is not None:
        config.train.learning_rate = learning_rate


CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # shipped with the package (installed or not)


def config_path(name: str) -> str:
    """The file of the config `name`: an experiment (configs/<name>.py) or a released network's converter
    spec (configs/released/<name>.py)."""
    for folder in (CONFIG_DIR, CONFIG_DIR / "released"):
        if (folder / f"{name}.py").is_file():
            return str(folder / f"{name}.py")
    known = sorted(p.stem for folder in (CONFIG_DIR, CONFIG_DIR / "released") for p in folder.glob("[!_]*.py"))
    raise FileNotFoundError(f"no config named {name!r}; known: {known}")


def load_config_file(path: str, variant: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(variant)` of a config file given by path ("mirrortalk_jax/configs/x.py", or
    "mirrortalk_jax/configs/x.py:tiny"), as the --config flag reads it, for scripts, benchmarks and tests."""
    import importlib.util
    import os

    if variant is None and ":" in os.path.basename(path):
        path, variant = path.rsplit(":", 1)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config file {path}")
    spec = importlib.util.spec_from_file_location(f"config_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)
