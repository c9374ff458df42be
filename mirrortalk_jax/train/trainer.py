"""The trainer shared by every model: `train_and_evaluate(config, workdir, on_samples=...)`.

A linear script in banner sections (data, mesh, model and state, restore, steps, loop). The model enters only
through its recipe (`runs.loader.recipe`: the registry model with its parts), its `loss(batch, rng, train)` and,
for models that generate, its evaluation sampler (`sample.generators.eval_sampler`). What is measured on generated motion
(errors, previews) is the caller's `on_samples` hook (evaluate/training_samples.py for the command line).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils
from tqdm import tqdm

from mirrortalk_jax import storage
from mirrortalk_jax.data import pipeline
from mirrortalk_jax.data.motion_spec import MotionSpec
from mirrortalk_jax.data.sources import ClipSource
from mirrortalk_jax.runs import checkpointing, loader
from mirrortalk_jax.sample import generators
from mirrortalk_jax.train.compiled import compile_training
from mirrortalk_jax.train import mesh as mesh_lib, observe, warm_start
from mirrortalk_jax.train import state as state_lib
from mirrortalk_jax.train.preemption import Preemption
from mirrortalk_jax.train.metrics import MetricWriter


def resolve_dataset(data_config) -> epath.Path:
    """`data.dataset_dir` (local or gs://) if set; else the SynthTalk variant under `data.data_root`, built if
    missing."""
    if data_config.dataset_dir:
        return storage.path(data_config.dataset_dir)
    from mirrortalk_jax.data.synthtalk import builder  # building is rare; keep the import off the hot path
    # One process builds (the build is deterministic, but N writers would race on the publish); the others
    # wait for it at a barrier and then read the published directory.
    if jax.process_index() == 0:
        builder.build(data_config.data_root, data_config.synthtalk_variant)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("synthtalk_built")
    return storage.path(builder.dataset_dir(data_config.data_root, data_config.synthtalk_variant))


@dataclasses.dataclass(frozen=True)
class Samples:
    """Motion the periodic evaluation generated for its first held-out batch, gathered to every host."""

    step: int
    generated: np.ndarray  # (B, L, D)
    target: np.ndarray  # (B, L, D) ground truth
    mask: np.ndarray  # (B, L) valid frames
    waveform: np.ndarray  # (B, L * 16000 / fps) the windows' audio
    spec: MotionSpec
    workdir: epath.Path  # local or gs://
    writer: MetricWriter | None = None  # for images / previews in TensorBoard


SamplesHook = Callable[[Samples], dict[str, float]]  # -> metrics logged under eval/sample/


def _evaluate(setup, sample_step, state, source: ClipSource, config, rng, step: int, workdir: epath.Path,
              on_samples: SamplesHook | None, writer: MetricWriter | None = None) -> dict[str, float]:
    """Mean metrics over a fixed set of held-out windows (the same windows at every evaluation).

    With a sampler and an `on_samples` hook, the first batch is also generated and handed to the hook.
    """
    window = dataclasses.replace(pipeline.WindowConfig.from_config(config.data), waveform=True)
    ds = pipeline.training_dataset(source, window, batch_size=config.train.batch_size, seed=config.train.seed)
    totals: dict[str, float] = {}
    for i, local in enumerate(itertools.islice(iter(ds), config.train.eval_batches)):
        batch = setup.global_batch(local)
        metrics = jax.device_get(setup.eval_step(state, batch, rng))
        for k, v in metrics.items():
            totals[k] = totals.get(k, 0.0) + float(v) / config.train.eval_batches
        if sample_step is None or on_samples is None or i:
            continue
        # Global arrays may span processes: gather what the host-side hook needs.
        generated, target, mask, audio = (np.asarray(multihost_utils.process_allgather(x, tiled=True)) for x in (
            sample_step(state, batch, rng), batch["motion"], batch["motion_mask"], batch["waveform"]))
        found = on_samples(Samples(step, generated, target, mask, audio, source.spec, workdir, writer))
        totals.update({f"sample/{k}": v for k, v in found.items()})
    return totals


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                       on_samples: SamplesHook | None = None) -> state_lib.TrainState:
    """Trains `config.model` on `config.data` into `workdir`, resuming from its latest checkpoint.

    on_samples: called at each evaluation with the motion a generating model sampled for held-out windows;
      its metrics are logged as eval/sample/*. None: nothing is sampled.
    """
    workdir = storage.path(workdir)  # a local folder or gs://...: every file below goes through epath
    workdir.mkdir(parents=True, exist_ok=True)
    tc = config.train

    # ----- Data -----
    dataset_dir = resolve_dataset(config.data)
    train_source = ClipSource(dataset_dir, config.data.train_split, on_bad_record=config.data.on_bad_record)
    window = pipeline.WindowConfig.from_config(config.data)
    train_iter = iter(pipeline.training_dataset(train_source, window, batch_size=tc.batch_size, seed=tc.seed,
                                                worker_count=config.data.worker_count))
    eval_source = ClipSource(dataset_dir, config.data.eval_split) if tc.eval_every else None

    # ----- Mesh, model, state and steps -----
    mesh = mesh_lib.create_mesh(config.mesh)
    # The model's parts (a frozen expert, a pretrained style encoder) are built from their runs' stored configs.
    recipe = loader.recipe(config.model, train_source.spec)
    setup = compile_training(config, recipe.factory, mesh, init_from=recipe.init_from)
    init_rng, step_rng = jax.random.split(jax.random.key(tc.seed))
    sampler = generators.eval_sampler(config.model.name) if on_samples is not None else None
    sample_step = setup.sample_step(sampler) if sampler is not None else None

    # ----- Restore or initialise -----
    ckpt = checkpointing.Checkpointer(workdir / "checkpoints", keep=tc.keep_checkpoints, every=tc.checkpoint_every)
    meta = {"config": json.loads(config.to_json_best_effort()), "motion_spec": train_source.spec.to_json(),
            "parts": dict(recipe.parts)}
    if "motion_basis" in train_source.info.metadata:  # a real-face space: generation projects new faces with it
        meta["motion_basis"] = train_source.info.metadata["motion_basis"]
    # A corrupt latest checkpoint is an error naming the step and file, unless the config asks to fall back.
    restored = ckpt.restore_latest(setup.abstract_state(), train_iter,
                                   fallback_to_previous=bool(tc.fallback_to_previous_checkpoint))
    if restored is not None:
        _, state = restored
    else:
        state = setup.init(init_rng)
        for subtree, run_dir, *source in setup.training.init_from:  # (subtree, run[, source subtree])
            state = warm_start.load_subtree(state, subtree, run_dir, setup.shardings, *source)

    # ----- Loop -----
    start = int(jax.device_get(state.step))
    writer = MetricWriter(workdir, resume_step=start)  # the steps after `start` are redone: one row each
    if jax.process_index() == 0 and start == 0:
        overview = observe.parameter_overview(state.params)
        (workdir / "parameters.txt").write_text(overview + "\n")
        logging.info("trainable parameters of %s:\n%s", config.model.name, overview)
    preemption = Preemption(tc.preemption_sync_every)  # SIGTERM to any process: all save and stop together
    profiler = observe.Profiler(workdir / "profile", *tuple(tc.get("profile") or (0, 0)))
    progress = observe.Progress(start, tc.num_steps)
    frames_per_step = tc.batch_size * config.data.window_frames
    try:
        with tqdm(total=tc.num_steps, initial=start, desc="train", unit="step",
                  disable=jax.process_index() != 0) as bar:
            for step in range(start + 1, tc.num_steps + 1):
                batch = setup.global_batch(next(train_iter))
                profiler.before(step)
                state, metrics = setup.train_step(state, batch, step_rng)
                profiler.after(step, state)
                bar.update(1)
                if step % tc.log_every == 0 or step == tc.num_steps:
                    metrics = {**jax.device_get(metrics), **progress.report(step)}
                    metrics["frames_per_s"] = frames_per_step * metrics["steps_per_s"]
                    writer.write(step, metrics, prefix="train/")
                    bar.set_postfix(loss=f"{float(metrics['loss']):.4f}")
                    streak = int(jax.device_get(state.nonfinite_streak))
                    if streak >= tc.max_nonfinite_streak:
                        raise FloatingPointError(f"{streak} consecutive steps had a non-finite loss or gradient "
                                                 f"(last at step {step}); parameters are from before them")
                if eval_source is not None and step % tc.eval_every == 0:
                    writer.write(step, _evaluate(setup, sample_step, state, eval_source, config, step_rng, step,
                                                 workdir, on_samples, writer), prefix="eval/")
                    writer.flush()
                ckpt.save(step, state, train_iter, meta)
                if preemption.should_stop(step):
                    break
        ckpt.save(int(jax.device_get(state.step)), state, train_iter, meta, force=True)
    finally:
        profiler.close()
        ckpt.wait()
        ckpt.close()
        writer.close()
        preemption.restore()
    return state


def count_params(state: state_lib.TrainState) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)))
