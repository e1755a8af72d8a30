"""Writers' locks: one holder at a time, a clear refusal naming the holder, waiting, heartbeats, and a dead holder's
lock taken over once stale (a real process killed with SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from storage.locks import LockBusy, WriterLock, dataset_lock
from storage.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]


def test_one_holder_and_a_refusal_that_names_it(tmp_path):
    ws = Workspace(tmp_path)
    first = dataset_lock(ws, "lab", owner="extract lab").acquire()
    info = json.loads(Path(first.path).read_text())
    assert info["pid"] == os.getpid() and info["owner"] == "extract lab" and info["token"] == first.token
    with pytest.raises(LockBusy, match=rf"lab is being written by extract lab \(pid {os.getpid()} on"):
        dataset_lock(ws, "lab", owner="second").acquire()
    first.release()
    assert not Path(first.path).exists()
    with dataset_lock(ws, "lab", owner="second") as again:  # free again
        assert again.read().owner == "second"
    assert not Path(again.path).exists()


def test_a_waiting_writer_gets_the_lock_when_it_is_released(tmp_path):
    ws = Workspace(tmp_path)
    first = dataset_lock(ws, "lab").acquire()
    threading.Timer(0.6, first.release).start()
    started = time.monotonic()
    with dataset_lock(ws, "lab", wait_s=10, poll_s=0.05) as second:
        assert second.read().token == second.token
    assert 0.5 <= time.monotonic() - started < 5


def test_heartbeat_refreshes_and_a_stale_lock_is_taken_over(tmp_path):
    ws = Workspace(tmp_path)
    with WriterLock(ws, str(tmp_path / "x.lock"), heartbeat_s=0.1, stale_after_s=1) as held:
        first = held.read().heartbeat
        time.sleep(0.35)
        assert held.read().heartbeat > first
    # A lock whose heartbeat is old (its writer died): taken over, and the caller is told whose it was.
    path = tmp_path / "datasets" / "lab" / ".lock"
    path.parent.mkdir(parents=True)
    dead = {"token": "t0", "host": "gone", "pid": 1, "owner": "extract lab", "since": 0.0, "heartbeat": 0.0}
    path.write_text(json.dumps(dead))
    with dataset_lock(ws, "lab") as lock:
        assert lock.took_over is not None and lock.took_over.host == "gone"
        assert json.loads(path.read_text())["token"] == lock.token


HOLDER = textwrap.dedent(
    """
    import sys, time
    from storage.locks import dataset_lock
    from storage.workspace import Workspace
    lock = dataset_lock(Workspace(sys.argv[1]), "lab", owner="doomed", heartbeat_s=0.2).acquire()
    print("held", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.slow
def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    """On this host the holder's pid tells that it is gone: the lock is taken over at once after SIGKILL."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        ws = Workspace(tmp_path)
        with pytest.raises(LockBusy, match="doomed"):
            dataset_lock(ws, "lab").acquire()  # alive: refused
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        with dataset_lock(ws, "lab") as lock:
            assert lock.took_over is not None and lock.took_over.owner == "doomed"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_lock_from_another_host_is_taken_over_after_the_stale_timeout(tmp_path):
    """Another host's holder cannot be asked: its lock counts until its heartbeat is ``stale_after_s`` old."""
    ws = Workspace(tmp_path)
    path = tmp_path / "datasets" / "lab" / ".lock"
    path.parent.mkdir(parents=True)
    now = time.time()
    remote = {"token": "t1", "host": "worker-7", "pid": 4242, "owner": "extract lab", "since": now, "heartbeat": now}
    path.write_text(json.dumps(remote))
    with pytest.raises(LockBusy, match=r"pid 4242 on worker-7"):
        dataset_lock(ws, "lab", stale_after_s=1.0, heartbeat_s=0.2).acquire()
    started = time.monotonic()
    with dataset_lock(ws, "lab", wait_s=10, stale_after_s=1.0, heartbeat_s=0.2, poll_s=0.05) as lock:
        assert lock.took_over is not None and lock.took_over.host == "worker-7"
    assert 0.7 <= time.monotonic() - started < 5
