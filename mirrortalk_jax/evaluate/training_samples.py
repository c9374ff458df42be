"""What the trainer's periodic evaluation measures on generated motion (its `on_samples` hook).

Per-region errors of the generated windows against the ground truth, and on motion spaces with a face drawer a
preview mp4 (ground truth | generated, with the window's audio) in WORKDIR/previews/ from process 0.
"""

from __future__ import annotations

import jax

from mirrortalk_jax.evaluate import motion_error, preview
from mirrortalk_jax.train.trainer import Samples


def errors_and_preview(samples: Samples) -> dict[str, float]:
    """The hook: region errors (logged as eval/sample/*) and a preview of the first window."""
    metrics = motion_error.region_errors(samples.generated, samples.target, samples.mask, samples.spec)
    if jax.process_index() == 0 and preview.can_preview(samples.spec):
        valid = int(samples.mask[0].sum())
        preview.write_side_by_side(samples.workdir / "previews" / f"step_{samples.step:07d}.mp4",
                                   [samples.target[0, :valid], samples.generated[0, :valid]], fps=samples.spec.fps,
                                   audio=samples.waveform[0, :valid * int(round(16000 / samples.spec.fps))])
    return metrics
