"""The writers' lock on a real S3 API (``moto_server`` on loopback, tests/conftest.py ``s3_server``): conditional
PUTs make its create and its takeover atomic. Two driver processes playing two hosts race for one dataset's lock;
a lock whose owner died on another host is taken over only after the stale timeout."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from storage import locks
from storage.locks import HOST_ENV, LockBusy, _ConditionalStore, _honours_conditions, dataset_lock
from storage.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]

# One driver: at each of the given start times it tries the lock of dataset ``race-<i>`` (no waiting, or waiting up to
# 10 s in the rounds marked "wait"), holds it 0.6 s when it gets it, and prints what happened as a JSON line.
DRIVER = textwrap.dedent(
    """
    import json, sys, time
    from storage.locks import LockBusy, dataset_lock
    from storage.workspace import Workspace
    ws = Workspace(sys.argv[1])
    for i, (start, mode) in enumerate(json.loads(sys.argv[2])):
        lock = dataset_lock(ws, f"race-{i}", owner="extract race", poll_s=0.05, wait_s=10 if mode == "wait" else 0)
        time.sleep(max(0.0, start - time.time() - 0.02))
        while time.time() < start:
            pass  # spin the last 20 ms: both drivers leave this loop within microseconds of each other
        try:
            lock.acquire()
        except LockBusy as exc:
            print(json.dumps({"round": i, "busy": str(exc)}), flush=True)
            continue
        got = time.time()
        time.sleep(0.6)
        lock.release()
        print(json.dumps({"round": i, "held": [got, time.time()], "host": lock.host}), flush=True)
    """
)


def s3_workspace(s3_server) -> Workspace:
    return Workspace(s3_server.url(f"locks-{uuid.uuid4().hex[:8]}"))


def test_s3_honours_conditional_writes(s3_server):
    """The probe sees what moto does: If-None-Match and If-Match are honoured, so the conditional store is used."""
    ws = s3_workspace(s3_server)
    assert _honours_conditions(ws, ws.dataset_dir("lab"))
    lock = dataset_lock(ws, "lab")
    assert isinstance(lock.store, _ConditionalStore)
    assert not [p for p in ws.fs.find(ws.root) if ".lock-probe-" in p]  # the probe cleans up


def test_two_hosts_race_for_one_lock_and_exactly_one_holds_it(s3_server):
    """Two processes, hosts ``host-a`` and ``host-b``, start acquiring the same lock at the same instant, four times:
    each time exactly one holds it and the other is refused with a message naming the holder's host; in a round
    where they wait instead, both get it in turn, never at the same time."""
    ws = s3_workspace(s3_server)
    t0 = time.time() + 3.0  # both processes have imported s3fs by then
    rounds = [(t0 + 1.0 * i, "refuse") for i in range(4)] + [(t0 + 4.0, "wait")]
    argv = [sys.executable, "-c", DRIVER, ws.root, json.dumps(rounds)]
    procs = {
        host: subprocess.Popen(argv, cwd=REPO, env={**os.environ, HOST_ENV: host}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        for host in ("host-a", "host-b")
    }  # fmt: skip
    outs = {}
    for host, proc in procs.items():
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err[-3000:]
        outs[host] = {r["round"]: r for r in map(json.loads, out.splitlines())}
    for i, (_, mode) in enumerate(rounds):
        a, b = outs["host-a"][i], outs["host-b"][i]
        if mode == "refuse":
            holders = [r for r in (a, b) if "held" in r]
            assert len(holders) == 1, (i, a, b)
            (refused,) = [r for r in (a, b) if "busy" in r]
            assert f"race-{i} is being written by extract race (pid" in refused["busy"]
            assert f"on {holders[0]['host']}," in refused["busy"], refused
        else:
            first, second = sorted([a["held"], b["held"]])
            assert first[1] <= second[0], f"round {i}: both held the lock at once: {a} {b}"
    assert not [p for p in ws.fs.find(ws.root) if p.endswith("/.lock")]  # every lock released


HOLDER = textwrap.dedent(
    """
    import sys, time
    from storage.locks import dataset_lock
    from storage.workspace import Workspace
    lock = dataset_lock(Workspace(sys.argv[1]), "lab", owner="doomed", heartbeat_s=0.2).acquire()
    print("held", flush=True)
    time.sleep(120)
    """
)


def test_a_lock_whose_owner_died_on_another_host_is_taken_over_after_the_stale_timeout(s3_server):
    """A holder on ``host-dead`` is SIGKILLed: its pid means nothing on ``host-b``, so its lock counts until its
    heartbeat is ``stale_after_s`` old, and is then taken over (naming the dead owner)."""
    ws = s3_workspace(s3_server)
    env = {**os.environ, HOST_ENV: "host-dead"}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, ws.root], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        time.sleep(0.5)  # a heartbeat or two
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed = time.monotonic()
    opts = {"host": "host-b", "stale_after_s": 2.0, "heartbeat_s": 0.2, "poll_s": 0.05}
    with pytest.raises(LockBusy, match=r"doomed \(pid \d+ on host-dead"):
        dataset_lock(ws, "lab", **opts).acquire()  # its heartbeat is fresh: refused
    with dataset_lock(ws, "lab", wait_s=15, **opts) as lock:
        waited = time.monotonic() - killed
        assert lock.took_over is not None and (lock.took_over.host, lock.took_over.owner) == ("host-dead", "doomed")
        assert lock.read().token == lock.token
    assert 1.5 <= waited < 10, waited  # not before the stale timeout (2 s after the last heartbeat)
    assert not ws.exists(lock.path)


def test_takeover_and_heartbeats_are_conditional_on_the_etag(s3_server):
    """Two writers judge the same lock stale: only the first replacement lands. The holder presumed dead finds out at
    its next heartbeat and never writes over, or deletes, its successor's lock."""
    ws = s3_workspace(s3_server)
    old = dataset_lock(ws, "lab", host="host-a", owner="slow", heartbeat_s=60, stale_after_s=61).acquire()
    old._stop.set()  # a holder that hangs: no more heartbeats
    a = dataset_lock(ws, "lab", host="host-b", stale_after_s=0.2, heartbeat_s=0.1)
    b = dataset_lock(ws, "lab", host="host-c", stale_after_s=0.2, heartbeat_s=0.1)
    held_a, version_a = a.store.read_versioned()
    held_b, version_b = b.store.read_versioned()
    assert held_a.token == held_b.token == old.token and version_a == version_b
    assert a.store.replace(held_a, version_a)
    assert not b.store.replace(held_b, version_b)  # the lock it judged is gone: If-Match fails
    assert a.read().token == a.token
    assert not old.store.beat()  # the old holder's heartbeat is refused
    old.release()  # and its release deletes nothing
    assert a.read().token == a.token
    a.store.release()
    assert a.read() is None


def test_a_retried_create_whose_reply_was_lost_holds_the_lock(s3_server):
    """A conditional create that landed but whose reply was lost is retried, gets 412, and reads back its own token."""
    ws = s3_workspace(s3_server)
    lock = dataset_lock(ws, "lab")
    assert lock.store.create()  # the first try landed
    with lock:  # the "retry": the lock exists, and it is ours
        assert lock.took_over is None and lock.read().token == lock.token
    assert lock.read() is None


def test_stores_without_conditional_writes_warn_once_and_still_refuse(caplog):
    """memory:// has no conditional PUT: the lock is written and read back (its known race), with one warning."""
    locks._WARNED.discard("memory://locks-fallback")
    ws = Workspace("memory://locks-fallback")
    with caplog.at_level(logging.WARNING, logger="storage.locks"):
        with dataset_lock(ws, "lab", owner="first", poll_s=0.01), pytest.raises(LockBusy, match="first"):
            dataset_lock(ws, "lab", owner="second", poll_s=0.01).acquire()
        with dataset_lock(ws, "lab", poll_s=0.01):
            pass
    warned = [r for r in caplog.records if "no conditional writes" in r.getMessage()]
    assert len(warned) == 1
