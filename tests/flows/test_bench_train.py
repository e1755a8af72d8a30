"""``mmcaps bench train``: the workers table and the per-stage profile run end to end on tiny data (no timing is
asserted), and both profile paths build the same batch values (tests/pipeline/train/test_clips.py checks that bit for
bit; here: the table names every stage)."""

from __future__ import annotations

import json
import re

import pytest

from flows.cli import main


def test_workers_table_and_profile_on_tiny_data(capsys) -> None:
    argv = ["bench", "train", "--preset", "demo", "--videos", "16", "--seconds", "12", "--workers", "0", "1"]
    assert main([*argv, "--profile", "--no-model", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "torch CPU capability" in out and "load average at the start" in out
    rows = re.findall(r"^\| (\d+) \| (\d+) \|", out, flags=re.MULTILINE)
    assert [w for w, _ in rows] == ["0", "1"] and all(int(rate) > 0 for _, rate in rows)
    for stage in ("tar read", "npy decode", "clip spans", "pool clips into arrays", "audio float32 -> float16"):
        assert f"| {stage}" in out, stage
    assert re.search(r"\| \*\*clips/s \(one process\)\*\* \| \d+ \| \d+ \|", out)


def test_contention_bench_times_alone_and_beside_for_each_setting(tmp_path, capsys) -> None:
    """`mmcaps bench contention --tiny`: two settings, each in two fresh processes that see exactly its OpenMP
    environment (the bench checks); every row has positive times and its ratio is beside / alone."""
    out_json = tmp_path / "rows.json"
    argv = ["bench", "contention", "--tiny", "--setting", "passive", "--setting", "spin:GOMP_SPINCOUNT=1000"]
    assert main([*argv, "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "OpenMP runtime of the processes: " in out and "load average at the end" in out
    rows = re.findall(r"^\| (\w+) \| ([^|]+) \| 1 \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) / ([\d.]+) \| ([\d.]+)x \|$",
                      out, flags=re.MULTILINE)  # fmt: skip
    assert [(r[0], r[1].strip()) for r in rows] == [
        ("passive", "OMP_WAIT_POLICY=PASSIVE"),
        ("spin", "GOMP_SPINCOUNT=1000"),
    ]
    saved = json.loads(out_json.read_text())
    assert [r["setting"] for r in saved] == ["passive", "spin"]
    for row, (_, _, threads, alone, cpu, a, b, ratio) in zip(saved, rows, strict=True):
        printed = [float(x) for x in (alone, cpu, a, b, ratio)]
        measured = [row["alone_s"], row["alone_cpu_s"], *row["beside_s"], row["ratio"]]
        assert int(threads) == row["threads"] >= 1 and min(measured) > 0
        assert printed == pytest.approx(measured, abs=0.005)  # the table shows the rows rounded
        assert row["ratio"] == pytest.approx(sum(row["beside_s"]) / 2 / row["alone_s"])
    assert re.search(r"^spin vs passive: alone [\d.]+x the time, beside another [\d.]+x$", out, flags=re.MULTILINE)
