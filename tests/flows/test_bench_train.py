"""``mmcaps bench train``: the workers table and the per-stage profile run end to end on tiny data (no timing is
asserted), and both profile paths build the same batch values (tests/pipeline/train/test_clips.py checks that bit for
bit; here: the table names every stage)."""

from __future__ import annotations

import re

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
