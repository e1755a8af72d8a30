"""`mmcaps index` (the Prefect ``index`` flow) and `mmcaps search` on the session's trained tiny demo: a re-run is
Cached throughout, a new video runs one embedding task and the merge, and the CLI prints what the library finds."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone

import pytest

from flows.cli import main
from pipeline.search import Searcher

pytestmark = pytest.mark.slow
DATASET = "search-cli"


def _task_runs_since(since: float) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterStartTime

    after = datetime.fromtimestamp(since, tz=timezone.utc)

    async def read():
        async with get_client() as client:
            runs = await client.read_task_runs(
                task_run_filter=TaskRunFilter(start_time=TaskRunFilterStartTime(after_=after)), limit=200
            )
            return [r for r in runs if r.start_time is not None and r.state.state_details.child_flow_run_id is None]

    return asyncio.run(read())


@pytest.fixture(scope="module")
def cli_index(trained_demo):
    """Dataset ``search-cli``: the held-out split without its last video, indexed once through `mmcaps index`."""
    from storage import Workspace
    from storage.dataset import open_dataset

    last = sorted(open_dataset(Workspace(trained_demo.workspace), "eval-synthetic").video_ids)[-1]
    trained_demo.copy_dataset("eval-synthetic", DATASET, drop=(last,))
    argv = ["index", "--model", trained_demo.run_id, "--dataset", DATASET, "--window", "3", "--stride", "1.5"]
    argv += ["--workspace", str(trained_demo.workspace)]
    return trained_demo, argv, last


def test_index_command_then_cached_then_one_new_video(cli_index, capsys):
    demo, argv, last = cli_index
    started = time.time()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"index {DATASET} of run {demo.run_id}: 7 videos" in out and "7 videos embedded now" in out
    assert "approximate: none" in out  # 40-odd clips: far below approximate_min_clips
    first = sorted(r.name for r in _task_runs_since(started - 1))
    embeds = [n for n in first if n.startswith("index-")]
    assert len(embeds) == 1 and embeds[0].endswith("+6"), first  # 7 videos: one task (videos_per_task 32)
    assert any(n.startswith("merge-index") for n in first), first

    time.sleep(1.1)  # the window below starts 1 s early (clock granularity): keep the first run's tasks out of it
    started = time.time()
    assert main(argv) == 0
    runs = _task_runs_since(started - 1)
    assert runs and all(r.state.name == "Cached" for r in runs), {(r.name, r.state.name) for r in runs}
    assert "— unchanged" in capsys.readouterr().out

    demo.restore_videos("eval-synthetic", DATASET, (last,))
    time.sleep(1.1)
    started = time.time()
    assert main(argv) == 0
    ran = sorted(r.name for r in _task_runs_since(started - 1) if r.state.name != "Cached")
    assert [n for n in ran if n.startswith("index-")] == [f"index-{last}+0"], ran
    assert any(n.startswith("merge-index") for n in ran), ran
    out = capsys.readouterr().out
    assert "8 videos" in out and "1 videos embedded now, 7 reused" in out


def test_search_command_prints_the_librarys_results(cli_index, capsys):
    demo, argv, _ = cli_index
    assert main(argv) == 0
    capsys.readouterr()
    texts = ["the red circle slides leftwards", "a blue square spins"]
    common = ["--model", demo.run_id, "--index", DATASET, "-k", "5", "--workspace", str(demo.workspace)]
    assert main(["search", *texts, *common, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    want = Searcher.open(demo.workspace, demo.run_id, DATASET).search(texts, 5)
    assert [[(h["clip"], h["video_id"]) for h in q["hits"]] for q in printed] == [
        [(h.clip, h.video_id) for h in r.hits] for r in want
    ]
    assert [h["score"] for q in printed for h in q["hits"]] == pytest.approx([h.score for r in want for h in r.hits])
    assert all(q["modality"] == "video+audio" and q["method"] == "exact" for q in printed)

    assert main(["search", texts[0], *common, "--modality", "video", "--compare-exact"]) == 0
    table = capsys.readouterr().out
    assert "rank  video id" in table and "(video, exact" in table and "overlap with exact top-5: 1.00" in table
    (video,) = Searcher.open(demo.workspace, demo.run_id, DATASET).search(texts[:1], 5, modality="video")
    assert [ln.split()[1] for ln in table.splitlines() if ln.strip()[:1].isdigit()] == [h.video_id for h in video.hits]


def test_search_errors_are_one_line(trained_demo, capsys):
    common = ["--model", trained_demo.run_id, "--workspace", str(trained_demo.workspace)]
    assert main(["search", "anything", *common, "--index", "synthetic-train"]) == 2
    err = capsys.readouterr().err
    assert "no index of dataset 'synthetic-train'" in err and "mmcaps index --model" in err
    assert main(["index", *common, "--dataset", "eval-synthetic", "--window", "2", "--stride", "3"]) == 2
    assert "gaps" in capsys.readouterr().err
    ws = ["--workspace", str(trained_demo.workspace)]
    assert main(["index", "--model", "no-such-run", "--dataset", "eval-synthetic", *ws]) == 2
    err = capsys.readouterr().err
    assert "run no-such-run: no such run in" in err and "mmcaps runs lists them" in err
    assert main(["index", "--model", trained_demo.run_id, "--dataset", "no-such-data", *ws]) == 2
    assert "dataset 'no-such-data': no manifest" in capsys.readouterr().err
    assert main(["browse", "--model", trained_demo.run_id, "--index", "no-such-data", *ws]) == 2
    assert "no index of dataset 'no-such-data'" in capsys.readouterr().err  # before anything listens
