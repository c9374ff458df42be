"""PNG figures of a set of runs: training loss curves per run and the headline metrics per method."""

from __future__ import annotations

import math
import os
from pathlib import Path

from mirrortalk_jax.evaluate.results_table import ResultsTable
from mirrortalk_jax.train.metrics import read_metrics

HEADLINE = (("m_lmd", "M-LMD ↓"), ("lse_c", "Sync_conf ↑"), ("style_sim", "StyleSim ↑"))


def training_curves(path: str | os.PathLike, runs: dict[str, Path], table: ResultsTable | None = None) -> Path:
    """One panel per run (train loss vs step, eval loss where logged) plus one per headline metric."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    curves = {}
    for name, run_dir in runs.items():
        try:
            records = read_metrics(run_dir)
        except FileNotFoundError:
            continue
        curves[name] = records
    metric_panels = list(HEADLINE) if table is not None else []
    panels = len(curves) + len(metric_panels)
    if panels == 0:
        raise ValueError("nothing to plot: no run has metrics.jsonl and no results table was given")
    cols = min(3, panels)
    fig, axes = plt.subplots(math.ceil(panels / cols), cols, figsize=(4.2 * cols, 3.2 * math.ceil(panels / cols)),
                             squeeze=False)
    flat = list(axes.flat)
    for ax, (name, records) in zip(flat, curves.items()):
        for key, style in (("train/loss", "-"), ("eval/loss", "o-")):
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                ax.plot(*zip(*points), style, label=key.split("/")[0], markersize=3)
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for ax, (key, title) in zip(flat[len(curves):], metric_panels):
        labels, values, groups = [], [], []
        for split, methods in table.rows.items():
            for method, metrics in methods.items():
                if metrics.get(key) is not None:
                    labels.append(method)
                    values.append(metrics[key])
                    groups.append(split)
        splits = list(dict.fromkeys(groups))
        colours = [plt.cm.tab10(splits.index(g)) for g in groups]
        ax.barh(range(len(values)), values, color=colours)
        ax.set_yticks(range(len(values)), [f"{label} ({g[:12]})" for label, g in zip(labels, groups)], fontsize=6)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="x")
    for ax in flat[panels:]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
