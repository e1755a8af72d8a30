"""The terminal's progress lines (flows/progress.py) and the thread settings the CLI starts with (flows/threads.py).

The display is driven by a fake clock here, so the throttling is checked exactly: off a terminal a stage prints a
line only after 30 s *and* 25 % of the stage since its start or its last line, and its last; on a terminal one line is redrawn in
place and left standing. Then the real commands, in-process: ``mmcaps import`` and ``mmcaps train`` print their
progress to stderr, few lines, ending with ``N/N``.
"""

from __future__ import annotations

import io
import itertools
import json
import re

import numpy as np
import pytest

from flows import artifacts, progress
from flows.cli import main
from flows.progress import StageProgress, duration
from flows.threads import SHARED_MACHINE_DEFAULTS, apply_thread_settings, without_thread_settings
from pipeline.runs import RunFolder
from storage.workspace import Workspace
from tests.pipeline.ingest.release_layouts import vfe_rows, write_captions, write_vfe, write_word2vec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _display(total: int, *, tty: bool = False, **kw) -> tuple[StageProgress, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    return StageProgress("extract d", total, unit="videos", stream=out, tty=tty, clock=clock, **kw), out, clock


def test_off_a_terminal_a_long_stage_prints_a_few_spaced_lines_with_rate_and_eta() -> None:
    shown, out, clock = _display(100)
    printed_at = []
    for done in range(1, 101):  # a video every 5 s: 500 s in all
        clock.now += 5.0
        before = len(shown.lines)
        shown.update(done)
        if len(shown.lines) > before:
            printed_at.append((done, clock.now))
    shown.close()
    lines = out.getvalue().splitlines()
    assert lines == shown.lines and "\r" not in out.getvalue()
    assert lines == [
        "extract d: 25/100 videos, 0.200 videos/s, ETA 6 min 15 s",
        "extract d: 50/100 videos, 0.200 videos/s, ETA 4 min 10 s",
        "extract d: 75/100 videos, 0.200 videos/s, ETA 2 min 05 s",
        "extract d: 100/100 videos, 0.200 videos/s, took 8 min 20 s",
    ]
    # a line per >= 30 s and >= 25 videos, counted from the start, then the last
    gaps = [(d2 - d1, t2 - t1) for (d1, t1), (d2, t2) in itertools.pairwise([(0, 1000.0), *printed_at])][:-1]
    assert all(dd >= 25 and dt >= 30 for dd, dt in gaps), gaps


def test_a_stage_of_any_length_prints_at_most_four_lines() -> None:
    for total, step_s in ((7, 100.0), (1000, 1.0), (100_000, 0.01)):
        shown, out, clock = _display(total)
        for done in range(1, total + 1):
            clock.now += step_s
            shown.update(done)
        shown.close()
        assert 1 <= len(out.getvalue().splitlines()) <= 4, (total, out.getvalue())


def test_no_rate_until_a_second_of_work() -> None:
    shown, _, clock = _display(8, tty=True)
    clock.now += 0.00002
    shown.update(1)
    assert shown.lines[-1] == "extract d: 1/8 videos"  # not 50000 videos/s
    clock.now += 1.5
    shown.update(2)
    assert shown.lines[-1] == "extract d: 2/8 videos, 1.33 videos/s, ETA 5 s"


def test_a_short_stage_prints_its_last_line_only_and_an_empty_one_nothing() -> None:
    shown, out, clock = _display(50)
    for done in range(1, 51):
        clock.now += 0.01
        shown.update(done, details=f"({done} ok, 0 failed)")
    shown.close()
    shown.close()  # idempotent
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"extract d: 50/50 videos \(50 ok, 0 failed\), 100 videos/s, took 0 s", lines[0])

    empty, out, _ = _display(0)
    empty.close()
    assert out.getvalue() == ""


def test_on_a_terminal_one_line_is_redrawn_in_place_and_left_standing() -> None:
    shown, out, clock = _display(10, tty=True)
    for done in range(1, 11):
        clock.now += 1.0
        shown.update(done)
    shown.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.count("\r") == 11  # every update (a second apart) and the close
    assert text.rstrip("\n").split("\r")[-1] == "extract d: 10/10 videos, 1.00 videos/s, took 10 s\x1b[K"


def test_training_lines_count_steps_and_samples_from_the_first_logged_step(monkeypatch) -> None:
    err, clock = io.StringIO(), Clock()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr(progress.time, "monotonic", clock)
    hook = progress.training("d", clips_per_step=32)
    clock.now += 7.0  # the network's build: not in the rate
    for step in range(110, 201, 10):  # resumed at 100, logged every 10 steps, a step every 0.1 s
        clock.now += 1.0
        hook(step, 200, {"loss": 1.0 / step, "video-text": 0.5})
    hook.close()
    lines = err.getvalue().splitlines()
    assert lines == ["train d: step 200/200, loss 0.0050, 320 samples/s, took 9 s"]  # 9 s: the last line only


def test_eval_stages_each_get_their_lines() -> None:
    out = io.StringIO()
    stages = progress.Stages("evaluate synthetic")
    for display_stage in ("extract videos", "embed videos"):
        for done in (1, 2, 3):
            stages(display_stage, done, 3)
            stages.displays[display_stage]._stream = out
    stages.close()
    assert [line.split(",")[0] for line in out.getvalue().splitlines()] == [
        "evaluate synthetic: extract videos: 3/3 videos",
        "evaluate synthetic: embed videos: 3/3 videos",
    ]


def test_the_progress_artifact_sends_a_bounded_number_of_updates(prefect_api) -> None:
    """10 000 videos reported one by one over 100 s: an update per whole percent and per 10 s, the end always; the
    artifact the API holds reads 100 (one update per video would be 10 000 API calls, rows and events)."""
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    clock = Clock()
    bar = artifacts.Progress("test-bounded-progress", "bounded", min_interval_s=10.0, clock=clock)
    assert bar.artifact_id is not None
    for done in range(1, 10_001):
        clock.now += 0.01
        bar.update(done, 10_000)
    assert 100 <= bar.sent <= 101 + 10, bar.sent
    sent = bar.sent
    bar.update(10_000, 10_000)  # the end again: nothing new to send
    assert bar.sent == sent
    slow = artifacts.Progress("test-bounded-progress-slow", "slow", min_interval_s=10.0, clock=clock)
    for done in range(1, 31):  # 0.1 % a video every 10 s: the interval sends those within a whole percent too
        clock.now += 10.0
        slow.update(done, 1000)
    assert slow.sent == 30

    async def read() -> list:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["test-bounded-progress"]))
            )

    assert [a.data for a in asyncio.run(read())] == [100.0]


def test_duration_words() -> None:
    assert [duration(s) for s in (0.4, 59.6, 93, 3600 + 5 * 60 + 2)] == [
        "0 s",
        "1 min 00 s",
        "1 min 33 s",
        "1 h 05 min",
    ]


def test_thread_settings_are_set_unless_the_user_chose_a_wait_policy() -> None:
    env: dict[str, str] = {"PATH": "/bin"}
    assert apply_thread_settings(env) == SHARED_MACHINE_DEFAULTS
    assert env == {"PATH": "/bin", **SHARED_MACHINE_DEFAULTS}
    assert without_thread_settings(env) == {"PATH": "/bin"}
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert apply_thread_settings(mine) == {} and mine == {"OMP_WAIT_POLICY": "ACTIVE"}


# -- the commands, in-process ----------------------------------------------------------------------------------------
@pytest.fixture
def vfe_files(tmp_path):
    """Six videos' released-layout features (vfe) with captions, and one whose 3D array has the wrong width."""
    root = tmp_path / "vfe"
    words = ["add", "oil", "chop", "stir"]
    captions = {}
    for i in range(6):
        write_vfe(root / "feature_2d" / f"v{i}", vfe_rows(12, i))
        write_vfe(root / "feature_3d" / f"v{i}", vfe_rows(18, 10 + i))
        captions[f"v{i}"] = [(2 * k, 2 * k + 2, f"{words[k % 4]} {words[(k + i) % 4]}") for k in range(5)]
    write_vfe(root / "feature_2d" / "bad", vfe_rows(6, 9))
    write_vfe(root / "feature_3d" / "bad", vfe_rows(6, 9)[:, :512])
    return root, write_captions(tmp_path / "caption.json", captions), write_word2vec(tmp_path / "w.txt", words)


def test_import_and_train_print_their_progress_in_a_few_lines(prefect_api, vfe_files, tmp_path, capsys) -> None:
    root, captions, w2v = vfe_files
    ws = str(tmp_path / "ws")
    argv = ["import", "--layout", "vfe", "--features-2d", str(root / "feature_2d"), "--features-3d",
            str(root / "feature_3d"), "--captions", str(captions), "--word2vec", str(w2v), "--dataset", "d",
            "--batch-size", "2", "--workspace", ws]  # fmt: skip
    assert main(argv) == 3  # finished, one video failed
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("import d: ")]
    assert 1 <= len(lines) <= 3, err
    assert re.fullmatch(r"import d: 7/7 videos \(6 ok, 1 failed\), [\d.]+ videos/s, took \d+ s", lines[-1]), lines
    assert len((out + err).splitlines()) <= 15, out + err
    assert (out + err).count("bad.npy: rgb3d array is [6, 512], not [T, 2048]") == 1, out + err  # said once

    steps = 12
    argv = ["train", "--dataset", "d", "--preset", "demo", "--run-id", "r", "--workspace", ws, "--set",
            f"max_steps={steps}", "--set", "log_every=3", "--set", "batch_size=2", "--set", "n_pair=2",
            "--set", "model.num_capsules=4", "--set", "warmup_steps=2", "--set", "min_time=2.0"]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("train d: ")]
    assert 1 <= len(lines) <= 4, err  # a short run: its last line only (off a terminal, a line per >= 30 s)
    last = re.match(r"train d: step (\d+)/(\d+), loss ([\d.]+)", lines[-1])
    assert last and last.group(1) == last.group(2) == str(steps)
    assert np.isfinite(float(last.group(3))) and re.search(r", [\d.]+ samples/s, took \d+ s$", lines[-1])
    assert f"run r (trained, {steps} steps" in out
    assert len((out + err).splitlines()) <= 12, out + err
    # the run records the thread settings its step time depends on
    info = RunFolder(Workspace(ws), "r").info()
    assert info["threads"]["torch"] >= 1
    assert json.dumps(info["threads"])
