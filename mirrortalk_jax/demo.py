"""The demo job (`mirrortalk demo`): SynthTalk -> the tiny MirrorTalk stack -> results table, previews, plots.

    mirrortalk demo [--workdir runs/demo] [--dataset_variant default] [--ablations no_hsic,...]

1. Builds SynthTalk (`default` size unless told otherwise) under DATA_ROOT, or reuses a complete build.
2. Trains each stage with the package's configs (`:tiny` variants, so a 2-core CPU finishes in minutes),
   each a normal training run in WORKDIR/runs/<stage> that later stages load and freeze:
     motion_expert   mirrortalk_jax/configs/motion_expert.py          the lip-sync expert (stage 0; also the sync judge)
     style_encoder   mirrortalk_jax/configs/style_encoder.py          SDSE, content supervision from the expert (stage 1)
     mirrortalk      mirrortalk_jax/configs/mirrortalk.py             the DiT generator, SDSE + expert frozen (stage 2)
     regression      mirrortalk_jax/configs/synthtalk_regression.py   the audio-only baseline
     style_judge     mirrortalk_jax/configs/style_encoder.py, own seed, random content projection: the INDEPENDENT
                     style encoder behind StyleSim (never the generator's own SDSE)
     dreamtalk_lip_expert  mirrortalk_jax/configs/dreamtalk_lip_expert.py  DreamTalk's style-aware lip expert, then
     dreamtalk       mirrortalk_jax/configs/dreamtalk.py                DreamTalk's denoiser with that expert's sync loss (a row)
     mimictalk_a2m   mirrortalk_jax/configs/mimictalk_a2m.py            MimicTalk's ICS-A2M (a row of the table)
   plus, per requested ablation, its own style encoder and/or generator run.
   A finished stage is reused and an interrupted one resumes from its last checkpoint, so re-running the
   demo continues where it stopped.
3. Generates held-out sentences and held-out speakers (style reference = another utterance of the same
   speaker) and scores every method (evaluate.suite) into WORKDIR/results.{md,csv,json}.
4. Writes side-by-side previews (ground truth | MirrorTalk, with audio) to WORKDIR/previews/ and the training
   curves and metrics to WORKDIR/training_curves.png.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import ml_collections

from mirrortalk_jax import base_config

BASELINES = ("Ground Truth", "Mean motion", "Nearest-neighbour audio retrieval", "Audio-only regression")
# The published systems re-implemented here, trained on the same data as rows of the table.
COMPETITORS = {"dreamtalk": "DreamTalk", "mimictalk_a2m": "MimicTalk ICS-A2M"}
# DreamTalk's L_sync weight (the paper does not give its value). In the default demo run the denoising loss goes
# 0.065 -> 0.03 and -log P_sync 0.88 -> 0.34 over the 400 steps, so at 0.1 the sync term stays a correction of
# the same order as the denoising loss instead of dominating it.
DREAMTALK_SYNC_WEIGHT = 0.1
ABLATION_TITLES = {"no_memory_bank": "w/o memory bank", "no_hsic": "w/o HSIC", "no_triplet": "w/o triplet",
                   "no_hier_mod": "w/o hierarchical modulation"}


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    workdir: str = "runs/demo"
    data_root: str = "data"
    dataset_dir: str = ""  # an existing dataset in the record schema; empty: build SynthTalk
    dataset_variant: str = "default"
    config_variant: str = "tiny"
    ablations: tuple[str, ...] = ()
    competitors: tuple[str, ...] = tuple(COMPETITORS)  # DreamTalk / ICS-A2M rows (mirrortalk_jax/configs/<name>.py)
    steps: tuple[tuple[str, int], ...] = ()  # (stage, training steps) overrides
    splits: tuple[str, ...] = ("heldout_sentences", "heldout_speakers")
    max_clips: int = 48  # per evaluation split (0: all)
    previews: int = 2  # preview videos per split
    judge_seed: int = 1
    eval: object = None  # evaluate.suite.Settings; None: its defaults


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    config: ml_collections.ConfigDict

    @property
    def title(self) -> str:
        return self.name.replace("_", " ")


def _config(name: str, variant: str) -> ml_collections.ConfigDict:
    return base_config.load_config_file(base_config.config_path(name), variant)  # shipped in the package


def _train_speakers(dataset_dir: Path) -> int:
    from mirrortalk_jax.data.sources import load_info
    meta = load_info(dataset_dir).metadata
    if "synthtalk_config" in meta:
        return int(json.loads(meta["synthtalk_config"])["train_speakers"])
    from mirrortalk_jax.data.sources import ClipSource
    source = ClipSource(dataset_dir, "train")
    return 1 + max(int(source[i]["speaker_index"]) for i in range(len(source)))


def plan_stages(settings: DemoSettings, dataset_dir: Path) -> list[Stage]:
    """Every training run of the demo, in order, each config pointing at the runs it builds on."""
    runs = Path(settings.workdir) / "runs"
    variant = settings.config_variant
    num_speakers = _train_speakers(dataset_dir)
    style_ablations = [a for a in settings.ablations if a in base_config.STYLE_ENCODER_ABLATIONS]
    unknown = set(settings.ablations) - set(ABLATION_TITLES)
    if unknown:
        raise ValueError(f"unknown ablation(s) {sorted(unknown)}: use any of {sorted(ABLATION_TITLES)}")
    unknown = set(settings.competitors) - set(COMPETITORS)
    if unknown:
        raise ValueError(f"unknown competitor(s) {sorted(unknown)}: use any of {sorted(COMPETITORS)}")

    def style_encoder(option: str = "") -> ml_collections.ConfigDict:
        config = _config("style_encoder", variant + (f",{option}" if option else ""))
        config.model.content_encoder_workdir = str(runs / "motion_expert")
        config.model.num_speakers = num_speakers
        return config

    def generator(style_run: str, option: str = "") -> ml_collections.ConfigDict:
        config = _config("mirrortalk", variant + (f",{option}" if option else ""))
        config.model.style_encoder_workdir = str(runs / style_run)
        config.model.motion_expert_workdir = str(runs / "motion_expert")
        return config

    stages = [Stage("motion_expert", _config("motion_expert", variant)),
              Stage("style_encoder", style_encoder()),
              Stage("mirrortalk", generator("style_encoder")),
              Stage("regression", _config("synthtalk_regression", variant))]
    judge = _config("style_encoder", variant)
    judge.train.seed = settings.judge_seed  # own seed, own run, random content projection: independent
    judge.model.num_speakers = num_speakers
    stages.append(Stage("style_judge", judge))
    if "dreamtalk" in settings.competitors:  # as the paper: the style-aware lip expert first, then the denoiser
        stages.append(Stage("dreamtalk_lip_expert", _config("dreamtalk_lip_expert", variant)))
        denoiser = _config("dreamtalk", variant)
        denoiser.model.lip_expert_workdir = str(runs / "dreamtalk_lip_expert")
        denoiser.model.sync_weight = DREAMTALK_SYNC_WEIGHT
        stages.append(Stage("dreamtalk", denoiser))
    if "mimictalk_a2m" in settings.competitors:
        stages.append(Stage("mimictalk_a2m", _config("mimictalk_a2m", variant)))
    for ablation in style_ablations:
        stages.append(Stage(f"style_encoder_{ablation}", style_encoder(ablation)))
    for ablation in settings.ablations:
        style_run = f"style_encoder_{ablation}" if ablation in style_ablations else "style_encoder"
        option = ablation if ablation in base_config.GENERATOR_ABLATIONS else ""
        stages.append(Stage(f"mirrortalk_{ablation}", generator(style_run, option)))
    steps = dict(settings.steps)
    known = {stage.name for stage in stages} | {stage.name.split("_no_")[0] for stage in stages}
    if set(steps) - known:
        raise ValueError(f"--steps names unknown stage(s) {sorted(set(steps) - known)}; stages: {sorted(known)}")
    for stage in stages:
        stage.config.data.dataset_dir = str(dataset_dir)
        base_name = stage.name.split("_no_")[0]  # a budget for "mirrortalk" also applies to its ablations
        n = steps.get(stage.name, steps.get(base_name))
        if n:
            stage.config.train.num_steps = n
            stage.config.train.warmup_steps = min(stage.config.train.warmup_steps, max(n // 10, 1))
            stage.config.train.eval_every = min(stage.config.train.eval_every, n)
            stage.config.train.checkpoint_every = min(stage.config.train.checkpoint_every, n)
    return stages


def parse_steps(text: str) -> tuple[tuple[str, int], ...]:
    """"mirrortalk=800,regression=100" -> (("mirrortalk", 800), ("regression", 100)), checked."""
    steps = []
    for item in filter(None, text.split(",")):
        name, _, count = item.partition("=")
        if not name or not count.isdigit() or int(count) <= 0:
            raise ValueError(f"--steps takes STAGE=POSITIVE_INT items separated by commas, got {item!r}")
        steps.append((name, int(count)))
    return tuple(steps)


def _finished_step(run_dir: Path) -> int | None:
    from mirrortalk_jax.runs import checkpointing
    if not (run_dir / "checkpoints").is_dir():
        return None
    ckpt = checkpointing.Checkpointer(run_dir / "checkpoints", async_save=False)
    try:
        return ckpt.latest_step()
    finally:
        ckpt.close()


def train_stages(stages: list[Stage], runs_dir: Path, log=print) -> dict[str, float]:
    """Trains what is not finished yet (resuming interrupted runs); returns seconds spent per stage."""
    from mirrortalk_jax.evaluate import training_samples
    from mirrortalk_jax.train import trainer
    seconds = {}
    for i, stage in enumerate(stages, 1):
        run_dir = runs_dir / stage.name
        done = _finished_step(run_dir)
        if done is not None and done >= stage.config.train.num_steps:
            log(f"[{i}/{len(stages)}] {stage.title}: done earlier (step {done}), reusing {run_dir}")
            continue
        log(f"[{i}/{len(stages)}] {stage.title}: training {stage.config.train.num_steps} steps"
            + (f" (resuming at {done})" if done else "") + f" -> {run_dir}")
        start = time.perf_counter()
        trainer.train_and_evaluate(stage.config, run_dir, on_samples=training_samples.errors_and_preview)
        seconds[stage.name] = round(time.perf_counter() - start, 1)
    return seconds


def methods_for(dataset_dir: Path, runs_dir: Path, settings: DemoSettings, eval_settings) -> dict:
    """The table's rows: baselines, MirrorTalk, its ablations and the other-speaker-reference control."""
    from mirrortalk_jax.evaluate import suite
    audio_feature = _config("mirrortalk", settings.config_variant).data.audio_feature
    methods = {
        "Ground Truth": suite.ground_truth(),
        "Mean motion": suite.mean_motion(dataset_dir),
        "Nearest-neighbour audio retrieval": suite.nearest_neighbour(dataset_dir, audio_feature),
        "Audio-only regression": suite.generator(runs_dir / "regression", eval_settings),
        "MirrorTalk": suite.generator(runs_dir / "mirrortalk", eval_settings),
    }
    for ablation in settings.ablations:
        methods[f"MirrorTalk {ABLATION_TITLES[ablation]}"] = suite.generator(runs_dir / f"mirrortalk_{ablation}",
                                                                              eval_settings)
    for name in settings.competitors:
        methods[COMPETITORS[name]] = suite.generator(runs_dir / name, eval_settings)
    methods["MirrorTalk (other-speaker reference)"] = suite.generator(runs_dir / "mirrortalk", eval_settings,
                                                                      control=True)
    return methods


def run(settings: DemoSettings, log=print) -> dict[str, Path]:
    """The whole demo; returns the paths of what it wrote."""
    from mirrortalk_jax.data.synthtalk import builder
    from mirrortalk_jax.evaluate import plots, results_table, style_similarity, suite
    from mirrortalk_jax.runs import loader

    total = time.perf_counter()
    workdir = Path(settings.workdir).expanduser()
    workdir.mkdir(parents=True, exist_ok=True)
    eval_settings = settings.eval or suite.Settings()

    start = time.perf_counter()
    if settings.dataset_dir:
        dataset_dir = Path(settings.dataset_dir)
    else:
        log(f"SynthTalk {settings.dataset_variant}: building or reusing under {settings.data_root}")
        dataset_dir = builder.build(settings.data_root, settings.dataset_variant)
    seconds = {"data": round(time.perf_counter() - start, 1)}

    stages = plan_stages(settings, dataset_dir)
    runs_dir = workdir / "runs"
    seconds["train"] = train_stages(stages, runs_dir, log)

    start = time.perf_counter()
    log("evaluating: loading the held-out splits and the trained runs")
    generator = loader.stored_model(runs_dir / "mirrortalk").config
    splits = [suite.load_split(dataset_dir, name, generator.data.audio_feature, int(generator.data.reference_frames),
                               max_clips=settings.max_clips) for name in settings.splits]
    judges = suite.Judges(expert=loader.load_model(runs_dir / "motion_expert").model,
                          style=style_similarity.StyleEvaluator.from_run(runs_dir / "style_judge",
                                                                         generator_config=generator))
    methods = methods_for(dataset_dir, runs_dir, settings, eval_settings)
    rows, predictions = suite.evaluate(splits, methods, judges, eval_settings, progress=lambda m: log(f"  scoring {m}"))
    seconds["evaluate"] = round(time.perf_counter() - start, 1)

    notes = {
        "units": "M-LMD/F-LMD in pixels of the dataset's image size; Sync_conf = LSE-C of the motion expert "
                 f"(offsets +-{eval_settings.vshift}); FID under the weights-free pixel-projection extractor "
                 "(not comparable with Inception FID); SSIM/PSNR on frames drawn from the motion",
        "dataset": str(dataset_dir), "clips_per_split": str({s.name: len(s.clips) for s in splits}),
        "sampler": f"{eval_settings.num_steps} sampling steps, seed {eval_settings.seed}",
        "seconds": seconds,
    }
    table = results_table.ResultsTable(rows, notes)
    paths = {f"results_{k}": v for k, v in table.write(workdir).items()}
    previews = []
    for split in splits:
        previews += suite.write_previews(workdir / "previews", split, predictions[split.name], "MirrorTalk",
                                         count=settings.previews)
    paths["previews"] = workdir / "previews"
    paths["curves"] = plots.training_curves(workdir / "training_curves.png",
                                            {s.name: runs_dir / s.name for s in stages}, table)
    seconds["total"] = round(time.perf_counter() - total, 1)
    table.notes["seconds"] = seconds
    table.write(workdir)
    log("\n" + table.to_markdown())
    log("wrote:\n" + "\n".join(f"  {k}: {v}" for k, v in paths.items())
        + "\n" + "\n".join(f"  preview: {p}" for p in previews))
    logging.info("demo finished in %.0f s", seconds["total"])
    return paths
