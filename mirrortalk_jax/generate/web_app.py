"""The web demo (`mirrortalk serve`, the `demo` extra): upload a photo, speech and an optional reference video, pick
the model and the guidance per region, get the mp4.

    app = build_app({"MirrorTalk": "runs/hdtf/mirrortalk", "MimicTalk": "runs/hdtf/mimictalk"}, "runs/hdtf/renderer")
    app.launch()                                   # or: mirrortalk serve --model MirrorTalk=runs/... --renderer ...

The app is a thin form over generate/talking_face.py: each model is loaded on first use and kept, and every
request runs `TalkingFace.write`, so the app, the command and the Python API make the same video. Its endpoint
`/generate` is what `gradio_client` drives (tests/test_generate_real.py). Guidance sliders a model does not read
(regions for ICS-A2M) are ignored for it; all at 1 means no guidance (one pass).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from mirrortalk_jax.generate.talking_face import TalkingFace

GUIDANCE_KEYS = ("audio", "style", "lower", "upper", "eyes", "pose")
INSTALL_HINT = "the web demo needs Gradio: pip install -e \".[demo]\""


class Models:
    """Generator runs by display name, loaded on first use (one at a time) with the shared renderer."""

    def __init__(self, runs: Mapping[str, str | os.PathLike], renderer: str | os.PathLike):
        if not runs:
            raise ValueError("the web demo needs at least one generator run")
        self.runs, self.renderer = dict(runs), renderer
        self._loaded: dict[str, TalkingFace] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> TalkingFace:
        if name not in self.runs:
            raise KeyError(f"no model {name!r}; models: {sorted(self.runs)}")
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = TalkingFace.load(self.runs[name], self.renderer)
            return self._loaded[name]


def guidance_for(face: TalkingFace, scales: Mapping[str, float]) -> dict[str, float] | None:
    """The sliders' scales the model reads; None when they are all 1 (no guidance)."""
    chosen = {k: float(v) for k, v in scales.items() if k in face.generator.guidance_keys}
    return None if all(v == 1.0 for v in chosen.values()) else chosen


def build_app(runs: Mapping[str, str | os.PathLike], renderer: str | os.PathLike, *,
              out_dir: str | os.PathLike | None = None):
    """The Gradio Blocks app (not launched)."""
    try:
        import gradio as gr
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    models = Models(runs, renderer)
    out = Path(out_dir or tempfile.mkdtemp(prefix="mirrortalk_serve_"))

    def generate(photo, audio, reference, model, steps, *scales):
        if not photo or not audio:
            raise gr.Error("upload a photo and an audio file")
        face = models[model]
        target = out / f"{model.lower().replace(' ', '_')}_{len(list(out.glob('*.mp4'))):04d}.mp4"
        sampling = {"num_steps": int(steps)}
        guidance = guidance_for(face, dict(zip(GUIDANCE_KEYS, scales)))
        if guidance:
            sampling["guidance"] = guidance
        try:
            summary = face.write(target, photo=photo, audio=audio, reference=reference or None, progress=False,
                                 **sampling)
        except (ValueError, OSError) as e:
            raise gr.Error(str(e)) from e
        notes = "; ".join(summary["notes"]) or "ok"
        return str(target), (f"{summary['frames']} frames ({summary['seconds']:.2f} s), motion in "
                             f"{summary['motion_seconds']:.1f} s, rendering {summary['render_frames_per_s']:.1f} "
                             f"frames/s. {notes}")

    with gr.Blocks(title="mirrortalk_jax") as app:
        gr.Markdown("# mirrortalk_jax: talking face from a photo, speech and a style video")
        with gr.Row():
            photo = gr.Image(type="filepath", label="Photo (any size; the largest face is animated)")
            audio = gr.Audio(type="filepath", label="Speech")
            reference = gr.Video(label="Reference video of the talking style (optional)")
        with gr.Row():
            model = gr.Dropdown(list(runs), value=next(iter(runs)), label="Model")
            steps = gr.Slider(1, 50, value=10, step=1, label="Sampling steps")
        with gr.Accordion("Guidance (1 = none); regions apply to MirrorTalk", open=False):
            scales = [gr.Slider(0.0, 4.0, value=1.0, step=0.1, label=key) for key in GUIDANCE_KEYS]
        button = gr.Button("Generate", variant="primary")
        result = gr.Video(label="Result")
        info = gr.Textbox(label="Details")
        button.click(generate, [photo, audio, reference, model, steps, *scales], [result, info],
                     api_name="generate")
    return app
