"""Faults beyond one machine: the S3 server paused mid-run (SIGSTOP/SIGCONT of a ``moto_server`` of this test's own),
and a Dask worker SIGKILLed mid-extraction (a ``dask scheduler`` and two ``dask worker`` processes of its own).

A writer's run here is what the ingest driver's publisher does per video, on the storage layer alone (no CNN): under
the dataset's writer lock, a shard (one sample) is written, then its manifest row is appended. A 3 s pause of the
server is waited out: every video once, each shard whole.

Found while writing this: against a SIGSTOPped server (the kernel still accepts its connections) a request waits for
the server to come back. aiobotocore's ``read_timeout`` (1 s here, through ``$FSSPEC_S3``'s ``config_kwargs``) did
not fire within 8 s, so botocore's retry settings never come into play for this kind of outage; an outage that
refuses connections is another case (botocore retries those, then raises OSError), not tested here.
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.compute as pc
import pytest

from storage.locks import dataset_lock
from storage.manifest import Manifest
from storage.shards import ShardWriter, iter_shard
from storage.workspace import TMP_MARKER, Workspace
from tests.conftest import start_moto_server
from tests.storage.test_manifest import row

VIDEOS = [f"v{i:02d}" for i in range(6)]


def s3_workspace() -> Workspace:
    """A workspace in a new bucket (of the server ``fsspec.config.conf["s3"]`` names); s3fs's own retry loop
    (``S3FileSystem.retries``, 5 tries of a timed-out request) off, so botocore's retry settings decide alone."""
    ws = Workspace(f"s3://faults-{uuid.uuid4().hex[:8]}/ws")
    ws.fs.retries = 1
    ws.fs.mkdir(ws.root.split("/")[2])
    return ws


def s3_conf(endpoint: str, attempts: int) -> dict:
    """s3fs options as a user gives them in ``$FSSPEC_S3`` (fsspec's config): 1 s timeouts, ``attempts`` tries."""
    return {
        "endpoint_url": endpoint,
        "key": "k",
        "secret": "s",
        "config_kwargs": {
            "connect_timeout": 1,
            "read_timeout": 1,
            "retries": {"mode": "standard", "total_max_attempts": attempts},
        },
    }


def sample(video: str) -> dict:
    buf = io.BytesIO()
    np.save(buf, np.full((3, 4), int(video[1:]), dtype=np.float16))
    return {"__key__": video, "rgb2d.npy": buf.getvalue(), "meta.json": json.dumps({"video_id": video}).encode()}


def run(ws: Workspace, on_video=None) -> None:
    """Publish every video the manifest lacks: its shard, then its row (the publisher's order)."""
    manifest = Manifest(ws, "lab")
    with dataset_lock(ws, "lab", owner="extract lab", heartbeat_s=0.5, stale_after_s=5, poll_s=0.1, wait_s=15):
        done = set(manifest.read().column("video_id").to_pylist()) if manifest.exists() else set()
        run_id = uuid.uuid4().hex[:6]
        for i, video in enumerate(v for v in VIDEOS if v not in done):
            if on_video is not None:
                on_video(i)
            with ShardWriter(ws.join("datasets", "lab", "shards"), f"lab-{run_id}-{video}", 1, workspace=ws) as writer:
                writer.write(sample(video))
            shard = writer.paths[0].split("/datasets/lab/", 1)[1]
            manifest.append([row(video, sha=f"{i:064x}", shard=shard)])


def assert_nothing_lost(ws: Workspace) -> None:
    rows = Manifest(Workspace(ws.root), "lab").read()
    assert sorted(rows.column("video_id").to_pylist()) == VIDEOS  # every video once
    assert pc.all(pc.equal(rows.column("status"), "ok")).as_py()
    for r in rows.to_pylist():
        (got,) = list(iter_shard(ws.join("datasets", "lab", r["shard"])))  # raises if torn
        assert got == sample(r["video_id"])


def pause(proc, at: int, seconds: float):
    """A hook that SIGSTOPs the server when video ``at`` starts and SIGCONTs it ``seconds`` later (from a timer)."""

    def hook(i: int) -> None:
        if i == at:
            os.killpg(proc.pid, signal.SIGSTOP)
            threading.Timer(seconds, os.killpg, (proc.pid, signal.SIGCONT)).start()

    return hook


# 3 s in the suite; the issue's ~20 s outage is the same code path, run on request: MMCAPS_TEST_S3_PAUSE_S=20
PAUSE_S = float(os.environ.get("MMCAPS_TEST_S3_PAUSE_S", "3"))


def test_a_paused_s3_server_is_waited_out_and_nothing_is_lost(tmp_path, monkeypatch):
    with start_moto_server(tmp_path) as (endpoint, proc):
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setitem(fsspec.config.conf, "s3", s3_conf(endpoint, attempts=10))
        ws = s3_workspace()
        started = time.monotonic()
        try:
            run(ws, pause(proc, at=2, seconds=PAUSE_S))
        finally:
            os.killpg(proc.pid, signal.SIGCONT)
        took = time.monotonic() - started
        print(f"paused {PAUSE_S:.0f} s mid-run: the run took {took:.1f} s")
        assert took >= PAUSE_S  # it did wait the outage out
        assert_nothing_lost(ws)


@pytest.mark.slow
def test_a_worker_killed_mid_extraction_is_rescheduled(prefect_api, synth_corpus, tmp_path):
    """A Dask worker (with its nanny) SIGKILLed while it runs an extraction task: Dask runs the task on the other
    worker, the flow completes, every video is in the manifest once, each shard reads back whole, no shard is
    written twice, and every feature-store entry loads."""
    import shutil

    from distributed import Client
    from prefect.settings import PREFECT_API_URL

    from flows.ingest import extract_flow
    from flows.runners import make_task_runner
    from pipeline.extract import ExtractConfig
    from storage.dataset import open_dataset
    from tests.conftest import start_dask

    src = tmp_path / "src"
    src.mkdir()
    names = ["train-0000", "train-0001", "train-0002"]
    for name in names:
        shutil.copy(synth_corpus / "train" / "videos" / f"{name}.mp4", src / f"{name}.mp4")
    ws = Workspace(tmp_path / "ws")
    cfg = ExtractConfig.model_validate({"max_seconds": 1, "text": {"word2vec": str(synth_corpus / "word2vec.bin")}})
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    (tmp_path / "dask").mkdir()
    with start_dask(tmp_path / "dask", 2, env) as cluster, Client(cluster.address, timeout=60) as client:
        result: dict = {}
        flow = extract_flow.with_options(task_runner=make_task_runner("dask", cluster.address))
        thread = threading.Thread(
            target=lambda: result.update(summary=flow(str(src), "lab", cfg, None, ws.root, shard_videos=1,
                                                      videos_per_task=1))
        )  # fmt: skip
        thread.start()
        seen: dict[str, float] = {}
        victim = None
        deadline = time.monotonic() + 240
        while victim is None:
            assert thread.is_alive(), "the flow finished before a worker could be killed"
            assert time.monotonic() < deadline, "no task ran on a worker in time"
            for address, keys in client.processing().items():
                if keys:
                    seen.setdefault(address, time.monotonic())
                    if time.monotonic() - seen[address] > 1.0:  # running for a second: mid-extraction
                        victim = address
            time.sleep(0.1)
        name = client.scheduler_info()["workers"][victim]["name"]
        os.killpg(cluster.workers[name].pid, signal.SIGKILL)  # the worker and its nanny: a lost machine
        thread.join(timeout=300)
        assert not thread.is_alive(), "the flow did not finish after the kill"
    summary = result["summary"]
    assert summary.failed == [] and summary.videos == len(names), summary
    rows = Manifest(ws, "lab").read().to_pylist()
    assert sorted(r["video_id"] for r in rows) == names and all(r["status"] == "ok" for r in rows)
    shards = [p for p in ws.fs.find(ws.dataset_dir("lab")) if p.endswith(".tar")]
    keys = [s["__key__"] for p in shards for s in iter_shard(p)]  # raises if a shard is torn
    assert sorted(keys) == names  # no shard lost, none written twice
    assert sorted(v.video_id for v in open_dataset(ws, "lab").iter_videos()) == names
    for path in ws.fs.find(ws.join("features")):
        if TMP_MARKER in path:
            continue  # the killed worker's unfinished write: never read as an entry
        if path.endswith(".npy"):
            np.load(path)
        elif path.endswith(".json"):
            json.loads(Path(path).read_text())


def test_an_object_store_that_refuses_connections_is_one_line_and_status_1(prefect_api, tmp_path, monkeypatch, capsys):
    """Past its retries an unreachable store ends the command with one line of ours (status 1, the workspace's
    storage failed), not a traceback; nothing was published, so the same command runs again from the start."""
    from flows.cli import main
    from tests.pipeline.ingest.release_layouts import vfe_rows, write_vfe

    for i in range(2):
        write_vfe(tmp_path / "f2" / f"v{i}", vfe_rows(6, i))
        write_vfe(tmp_path / "f3" / f"v{i}", vfe_rows(9, 5 + i))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setitem(fsspec.config.conf, "s3", s3_conf("http://127.0.0.1:9", attempts=1))  # nothing listens
    argv = ["import", "--features-2d", str(tmp_path / "f2"), "--features-3d", str(tmp_path / "f3"), "--dataset", "d"]
    assert main([*argv, "--workspace", f"s3://refused-{uuid.uuid4().hex[:8]}/ws"]) == 1
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmcaps import: ")]
    assert len(ours) == 1, ours
    assert ours[0].startswith("mmcaps import: error: storage: ") and "127.0.0.1:9" in ours[0], ours
    assert ours[0].endswith("what was published is kept: run the same command again")
