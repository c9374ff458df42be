"""The results table in the layout of the papers: one row per method, the literature's metrics as columns.

Written as Markdown (for reading), CSV (for spreadsheets) and JSON (for scripts); CSV and JSON read back to
the same table. Rows are grouped by evaluation split; a metric a method has no value for (e.g. SSIM when
the dataset has no frames) is left empty.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Column:
    key: str
    title: str
    better: str  # "↑", "↓" or "" (informational)
    fmt: str = "{:.3f}"


COLUMNS = (
    Column("ssim", "SSIM", "↑"), Column("psnr", "PSNR", "↑", "{:.2f}"), Column("fid", "FID", "↓", "{:.2f}"),
    Column("perceptual", "Perceptual", "↓", "{:.4f}"),
    Column("m_lmd", "M-LMD", "↓"), Column("f_lmd", "F-LMD", "↓"),
    Column("landmark_frames", "tracked", "", "{:.2f}"), Column("csim", "CSIM", "↑"),
    Column("lse_c", "Sync_conf", "↑"), Column("lse_d", "LSE-D", "↓"),
    Column("syncnet_lse_c", "LSE-C (SyncNet)", "↑"), Column("syncnet_lse_d", "LSE-D (SyncNet)", "↓"),
    Column("style_sim", "StyleSim", "↑"), Column("retrieval_acc", "Retrieval", "↑", "{:.2f}"),
    Column("aed", "AED", "↓"), Column("apd", "APD", "↓"),
    Column("offset_zero_fraction", "offset 0", "", "{:.2f}"),
    Column("clips", "clips", "", "{:.0f}"), Column("frames", "frames", "", "{:.0f}"),
)
_KEYS = tuple(c.key for c in COLUMNS)


@dataclasses.dataclass
class ResultsTable:
    """rows[split][method] = {metric key: value}; `notes` says how the numbers were made (units, settings)."""

    rows: dict[str, dict[str, dict[str, float]]]
    notes: dict = dataclasses.field(default_factory=dict)

    def columns(self) -> tuple[Column, ...]:
        """The columns some row has a value for, in the papers' order."""
        present = {k for methods in self.rows.values() for m in methods.values() for k, v in m.items()
                   if v is not None}
        return tuple(c for c in COLUMNS if c.key in present)

    def to_markdown(self) -> str:
        cols = self.columns()
        lines = ["| split | method | " + " | ".join(f"{c.title} {c.better}".strip() for c in cols) + " |",
                 "|---|---|" + "---:|" * len(cols)]
        for split, methods in self.rows.items():
            for method, metrics in methods.items():
                cells = [_cell(metrics.get(c.key), c.fmt) for c in cols]
                lines.append(f"| {split} | {method} | " + " | ".join(cells) + " |")
        notes = [f"- {k}: {v}" for k, v in self.notes.items() if isinstance(v, str)]
        return "\n".join(lines + ([""] + notes if notes else [])) + "\n"

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["split", "method", *_KEYS])
        for split, methods in self.rows.items():
            for method, metrics in methods.items():
                writer.writerow([split, method, *("" if metrics.get(k) is None else repr(float(metrics[k]))
                                                  for k in _KEYS)])
        return out.getvalue()

    def to_json(self) -> str:
        return json.dumps({"rows": self.rows, "notes": self.notes}, indent=1, default=_jsonable)

    def write(self, directory: str | os.PathLike, name: str = "results") -> dict[str, Path]:
        """Writes NAME.md, NAME.csv and NAME.json into `directory`; returns their paths by format."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {}
        for fmt, text in (("md", self.to_markdown()), ("csv", self.to_csv()), ("json", self.to_json())):
            paths[fmt] = directory / f"{name}.{fmt}"
            tmp = paths[fmt].with_suffix(f".{fmt}.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(paths[fmt])  # never a half-written table
        return paths


def _cell(value, fmt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return fmt.format(value)


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to the results JSON")


def read_json(path: str | os.PathLike) -> ResultsTable:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if "rows" not in data:
        raise ValueError(f"{path}: not a results table (no 'rows')")
    return ResultsTable(data["rows"], data.get("notes", {}))


def read_csv(path: str | os.PathLike) -> ResultsTable:
    rows: dict[str, dict[str, dict[str, float]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"split", "method"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not a results table (no {sorted(missing)} column)")
        for record in reader:
            metrics = {k: float(v) for k, v in record.items() if k in _KEYS and v != ""}
            rows.setdefault(record["split"], {})[record["method"]] = metrics
    return ResultsTable(rows)
