"""SynthTalk as a TFDS builder writing ArrayRecord shards (no TensorFlow needed), and its atomic build.

    from mirrortalk_jax.data.synthtalk import builder
    path = builder.build("~/data", "tiny")      # -> ~/data/synth_talk/tiny/1.0.0

Clips are generated in worker processes (each clip is a pure function of the config), then written by TFDS.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import uuid
from pathlib import Path

import tensorflow_datasets as tfds
from tqdm import tqdm

from mirrortalk_jax.data import publishing, schema, sources
from mirrortalk_jax.data.motion_spec import SYNTHTALK_SPEC
from mirrortalk_jax.data.synthtalk import corpus
from mirrortalk_jax.data.synthtalk.style import SpeakerStyle

VERSION = "1.0.0"


@dataclasses.dataclass
class SynthTalkBuilderConfig(tfds.core.BuilderConfig):
    synth: corpus.SynthTalkConfig = corpus.SynthTalkConfig()


def _generate(args: tuple[corpus.SynthTalkConfig, corpus.ClipPlan]) -> tuple[str, dict]:
    cfg, plan = args
    return plan.clip_id, corpus.make_clip(cfg, plan)


class SynthTalk(tfds.core.GeneratorBasedBuilder):
    """Synthetic talking heads with known content, style and geometry (see docs/data.md)."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "First release: espeak-ng speech, 18-channel SynthTalk motion, dlib-68 landmarks."}
    BUILDER_CONFIGS = [SynthTalkBuilderConfig(name=name, synth=cfg) for name, cfg in corpus.VARIANTS.items()]

    def __init__(self, *, num_workers: int = 0, **kwargs):
        """`num_workers`: clip generator processes; 0 = one per CPU core (at most 8), 1 = in this process."""
        self.num_workers = num_workers
        super().__init__(**kwargs)

    @property
    def synth(self) -> corpus.SynthTalkConfig:
        return self.builder_config.synth

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.synth
        return tfds.core.DatasetInfo(
            builder=self,
            description="SynthTalk: espeak-ng speech with exact phoneme timing, per-speaker style, "
                        "parametric dlib-68 landmarks and rasterised frames.",
            features=schema.clip_features(SYNTHTALK_SPEC, num_landmarks=68, frames=cfg.with_frames,
                                          style_dim=len(SpeakerStyle.names())),
            metadata=tfds.core.MetadataDict(
                motion_spec=SYNTHTALK_SPEC.to_json(),
                image_size=cfg.image_size,
                style_names=list(SpeakerStyle.names()),
                synthtalk_config=json.dumps(dataclasses.asdict(cfg), sort_keys=True),
            ),
        )

    def _split_generators(self, dl_manager):
        plans = corpus.plan_clips(self.synth)
        return {split: self._generate_examples(plans[split]) for split in corpus.SPLITS}

    def _generate_examples(self, plans):
        jobs = [(self.synth, p) for p in plans]
        workers = self.num_workers or min(os.cpu_count() or 1, 8)
        desc = f"SynthTalk {self.synth.name}: {plans[0].split if plans else ''}"
        if workers == 1:
            for job in tqdm(jobs, desc=desc, unit="clip"):
                yield _generate(job)
            return
        # spawn, not fork: the parent may hold JAX threads, and espeak-ng keeps global state per process.
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            yield from tqdm(pool.map(_generate, jobs, chunksize=2), total=len(jobs), desc=desc, unit="clip")


def dataset_dir(data_dir: str | os.PathLike, variant: str) -> Path:
    """Where `build(data_dir, variant)` publishes: DATA_DIR/synth_talk/VARIANT/VERSION."""
    return Path(data_dir).expanduser() / "synth_talk" / variant / VERSION


def resolve_config(variant: str | corpus.SynthTalkConfig) -> corpus.SynthTalkConfig:
    if isinstance(variant, corpus.SynthTalkConfig):
        return variant
    if variant not in corpus.VARIANTS:
        raise ValueError(f"unknown SynthTalk variant {variant!r}; known: {sorted(corpus.VARIANTS)}")
    return corpus.VARIANTS[variant]


def build(data_dir: str | os.PathLike, variant: str | corpus.SynthTalkConfig = "default", *,
          overwrite: bool = False, num_workers: int = 0) -> Path:
    """Builds SynthTalk and publishes it atomically; returns the dataset directory.

    The dataset is written into a temporary directory next to the destination and moved into place only
    once complete, so an interrupted (re)build never leaves a half-written dataset where readers look.
    An existing complete build is reused unless `overwrite`.
    """
    cfg = resolve_config(variant)
    final = dataset_dir(data_dir, cfg.name)
    if (final / "dataset_info.json").exists() and not overwrite:
        logging.info("SynthTalk %s already built at %s", cfg.name, final)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".staging-{uuid.uuid4().hex[:8]}"
    try:
        # A registered variant is named as such; a custom one must carry a name of its own.
        config = cfg.name if corpus.VARIANTS.get(cfg.name) == cfg else SynthTalkBuilderConfig(name=cfg.name, synth=cfg)
        builder = SynthTalk(data_dir=str(staging), config=config, num_workers=num_workers)
        builder.download_and_prepare(file_format="array_record")
        built = staging / "synth_talk" / cfg.name / VERSION
        for split in corpus.SPLITS:
            sources.write_clip_index(built, split)
        publishing.publish(built, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
