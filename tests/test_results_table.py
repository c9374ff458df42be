"""The results table: writers round-trip, Markdown layout, atomic files."""

import math

import pytest

from mirrortalk_jax.evaluate import results_table


def _table():
    rows = {"heldout_speakers": {
        "Ground Truth": {"ssim": 1.0, "psnr": math.inf, "m_lmd": 0.0, "lse_c": 0.21, "style_sim": 0.8},
        "MirrorTalk": {"ssim": 0.712345, "psnr": 21.5, "m_lmd": 0.93, "lse_c": 0.14, "style_sim": 0.77,
                       "fid": 1.25, "aed": 0.1, "apd": None}}}
    return results_table.ResultsTable(rows, {"units": "pixels"})


def test_csv_and_json_round_trip(tmp_path):
    table = _table()
    paths = table.write(tmp_path)
    assert sorted(paths) == ["csv", "json", "md"] and not list(tmp_path.glob("*.tmp"))
    from_json = results_table.read_json(paths["json"])
    assert from_json.rows == table.rows and from_json.notes == table.notes
    from_csv = results_table.read_csv(paths["csv"])
    expected = {s: {m: {k: v for k, v in metrics.items() if v is not None} for m, metrics in methods.items()}
                for s, methods in table.rows.items()}
    assert from_csv.rows == expected


def test_markdown_layout():
    md = _table().to_markdown().splitlines()
    header = md[0]
    # Papers' column order; columns nobody has a value for are left out; "better" arrows.
    assert header.index("SSIM ↑") < header.index("FID ↓") < header.index("M-LMD ↓") < header.index("Sync_conf ↑")
    assert "F-LMD" not in header and "APD" not in header
    gt = next(line for line in md if "Ground Truth" in line)
    assert "| 1.000 |" in gt and "| inf |" in gt
    mt = next(line for line in md if "| MirrorTalk |" in line)
    assert "0.712" in mt and mt.count("|") == header.count("|")
    assert md[-1] == "- units: pixels"


def test_reading_something_else_fails(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a results table"):
        results_table.read_csv(tmp_path / "x.csv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not a results table"):
        results_table.read_json(tmp_path / "x.json")
