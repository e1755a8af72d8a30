"""``mmcaps bench extract`` runs end to end on tiny videos and reports what it promises (no timing asserted)."""

from __future__ import annotations

import json
import math

from flows.cli import main


def test_bench_extract_speed_table(tmp_path, capsys, extract_cache):
    out_json = tmp_path / "extract.json"
    args = ["bench", "extract", "--videos", "1", "--seconds", "2", "--size", "320x180", "--no-compile"]
    assert main([*args, "--cache-dir", str(extract_cache), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "naive-fp32" in out and "ours-bf16" in out and "end to end" in out
    figures = json.loads(out_json.read_text())
    assert set(figures["speeds"]) == {"naive-fp32", "ours-fp32", "ours-bf16"}
    for name, row in figures["speeds"].items():
        for key in ("rgb2d", "rgb3d", "audio", "end_to_end"):
            assert math.isfinite(row[key]) and row[key] > 0, (name, key)
        if name != "naive-fp32":
            assert 0 < row["busy"] <= 1
    assert set(figures["agreement"]) == {"ours-bf16/rgb2d", "ours-bf16/rgb3d"}
    assert all(v["min"] >= 0.99 for v in figures["agreement"].values())


def test_bench_extract_memory(tmp_path, capsys, extract_cache):
    out_json = tmp_path / "memory.json"
    args = ["bench", "extract", "--memory", "--memory-seconds", "2", "4", "--size", "320x180"]
    assert main([*args, "--cache-dir", str(extract_cache), "--json", str(out_json)]) == 0
    assert "peak ratio long/short" in capsys.readouterr().out
    figures = json.loads(out_json.read_text())
    short, long = figures["memory"]["short"], figures["memory"]["long"]
    # Each child extracted its whole video: rows as the recipe gives them (1 fps; 24 fps in 16-frame windows).
    assert short["rows"] == {"rgb2d": 2, "rgb3d": 3, "mel": 201}
    assert long["rows"] == {"rgb2d": 4, "rgb3d": 6, "mel": 401}
    for f in (short, long):
        assert f["peak_mib"] >= f["built_mib"] > 100  # the backbones alone take hundreds of MiB
    assert figures["ratio"] == long["peak_mib"] / short["peak_mib"]
