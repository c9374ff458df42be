"""What the trainer's periodic evaluation measures on generated motion (its `on_samples` hook).

Per-region errors of the generated windows against the ground truth, and on motion spaces with a face drawer a
preview mp4 (ground truth | generated, with the window's audio) in WORKDIR/previews/ from process 0, and the
same frames in TensorBoard.
"""

from __future__ import annotations

import jax

from mirrortalk_jax import storage
from mirrortalk_jax.data import video
from mirrortalk_jax.evaluate import motion_error, preview
from mirrortalk_jax.train.trainer import Samples


def errors_and_preview(samples: Samples) -> dict[str, float]:
    """The hook: region errors (logged as eval/sample/*) and a preview of the first window."""
    metrics = motion_error.region_errors(samples.generated, samples.target, samples.mask, samples.spec)
    if jax.process_index() == 0 and preview.can_preview(samples.spec):
        valid = int(samples.mask[0].sum())
        frames = preview.side_by_side([samples.target[0, :valid], samples.generated[0, :valid]])
        # PyAV writes local files: a gs:// workdir gets the finished file uploaded.
        with storage.local_output(samples.workdir / "previews" / f"step_{samples.step:07d}.mp4") as path:
            video.write_mp4(path, frames, fps=samples.spec.fps, sample_rate=16000,
                            audio=samples.waveform[0, :valid * int(round(16000 / samples.spec.fps))])
        if samples.writer is not None:  # the same preview in TensorBoard (an animated image)
            samples.writer.write_video(samples.step, "eval/preview", frames, fps=samples.spec.fps)
    return metrics
