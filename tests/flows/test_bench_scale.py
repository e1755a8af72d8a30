"""`mmcaps bench scale --tiny` through the command line: every stage's row is printed, each exponent is the
least-squares slope of log cost against log N recomputed naively from the JSON's per-N figures, the printed table
is the JSON's figures, and the counted parts (Prefect task runs, requests) are what their rules give."""

import json
import math

from flows.bench.scale import PLAN_STAGES, STAGES, fmt
from flows.cli import main

TINY = [20, 50, 120]


def naive_slope(xs: list[float], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def assert_rows_match(figures: dict, printed: list[str], stages) -> None:
    """Each stage's exponent is the naive slope of its JSON figures, and its printed row is those figures."""
    assert set(figures["stages"]) == {s.key for s in stages}
    for stage in stages:
        got = figures["stages"][stage.key]
        values = [got["per_n"][str(n)] for n in TINY]
        assert all(v > 0 for v in values), (stage.key, values)
        slope = naive_slope([math.log(n) for n in TINY], [math.log(v) for v in values])
        assert math.isclose(got["exponent"], slope, rel_tol=1e-9, abs_tol=1e-12), (stage.key, got["exponent"], slope)
        rows = [line for line in printed if line.startswith(f"  {stage.label:<34} ")]
        assert len(rows) == 1, (stage.label, printed)
        cells = rows[0][2 + 34 :].split()
        assert cells[0] == stage.unit
        assert cells[1 : 1 + len(TINY)] == [fmt(v) for v in values]
        assert cells[1 + len(TINY)] == f"{got['exponent']:.3f}"


def test_bench_scale_tiny_table_matches_json(tmp_path, capsys):
    out = tmp_path / "scale.json"
    assert main(["bench", "scale", "--tiny", "--json", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    figures = json.loads(out.read_text())
    assert figures["videos"] == TINY and figures["batch"] == 20
    assert_rows_match(figures, printed, STAGES)
    # one Prefect task run per batch of up to 32 videos, and ~4 batches per worker on a short run (2 workers)
    runs = figures["stages"]["prefect_task_runs"]["per_n"]
    assert runs == {str(n): math.ceil(n / max(1, min(32, math.ceil(n / 8)))) for n in TINY}
    for row in figures["rows"]:
        # a no-change plan asks the workspace for a few files (manifest, hash cache), never once per video
        assert row["plan_requests_per_video"] * row["videos"] < row["videos"]
        assert row["index_recall"] > 0.5 and row["publish_requests_per_video"] > 0
    how = figures["howto100m"]
    assert how["stages"]["prefect_task_runs"] == math.ceil(1_220_000 / 32)
    assert any(line.startswith("  HowTo100M (1,220,000 videos, 136,000,000 clips)") for line in printed)
    # Prefect's database: real import flows of N/10 videos on a fresh SQLite database, the task runs by the same rule
    # (counted in the database), and its growth projected in proportion to the largest import
    rows = figures["rows"]
    assert [r["prefect_videos"] for r in rows] == [n // 10 for n in TINY]
    assert all(r["prefect_db_task_runs"] == math.ceil(r["prefect_videos"] / max(1, min(32, math.ceil(r["prefect_videos"] / 8))))
               for r in rows)  # fmt: skip
    assert all(r["prefect_db"] > 0 and r["prefect_events"] >= 3 * r["prefect_db_task_runs"] for r in rows)
    per_video = rows[-1]["prefect_db"] / rows[-1]["prefect_videos"]  # the largest import's, in proportion
    assert math.isclose(how["prefect_db_mb_per_100k"], per_video * 100_000, rel_tol=1e-9)
    assert math.isclose(how["stages"]["prefect_db"], per_video * 1_220_000, rel_tol=1e-9)
    assert any(line.startswith("  Prefect: import flows of 2, 5, 12 videos added") for line in printed)


def test_bench_scale_plan_only(tmp_path, capsys):
    """``--plan-only`` (what a 1 M-video run on request measures in a 24 GiB /dev/shm): the two plan rows alone,
    no store entries or shards built, and the no-change plan's requests projected."""
    out = tmp_path / "plan.json"
    assert main(["bench", "scale", "--tiny", "--plan-only", "--json", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    figures = json.loads(out.read_text())
    assert_rows_match(figures, printed, PLAN_STAGES)
    assert [s.key for s in PLAN_STAGES] == ["plan_nochange", "plan_one_new"]
    assert all(
        set(row) == {"videos", "plan_nochange", "plan_one_new", "plan_requests_per_video"} for row in figures["rows"]
    )
    how = figures["howto100m"]
    assert how["requests_nochange_plan"] == figures["rows"][-1]["plan_requests_per_video"] * 1_220_000
    assert any(line.startswith("  plan requests per video") for line in printed)
