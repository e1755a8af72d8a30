"""Writers' locks: one writer at a time per dataset (or run folder), on local folders and object stores alike.

A lock is a small JSON file (``<dataset dir>/.lock``) naming its owner — host, pid, a random token, when it was
taken — and a heartbeat that the owner refreshes every ``heartbeat_s`` from a thread. A second writer waits for it
(up to ``wait_s``) or refuses with a message naming the owner. A lock whose holder died is taken over: at once when
it ran on this host (its pid is gone), else once its heartbeat is older than ``stale_after_s`` — so a killed run
never blocks the dataset for good, and recovery never touches a live run's files.

Taking the lock: on a local folder the file is created with ``O_CREAT | O_EXCL`` (atomic); on an object store,
where there is no exclusive create, the token is written and read back after a pause, and the writer whose token
survives holds the lock. Taking over a stale lock replaces it the same way.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from storage.workspace import Workspace

LOCK_NAME = ".lock"
DEFAULT_STALE_S = 120.0
DEFAULT_HEARTBEAT_S = 10.0


class LockBusy(RuntimeError):
    """Another live writer holds the lock (the message names it)."""


@dataclass(frozen=True)
class LockInfo:
    token: str
    host: str
    pid: int
    owner: str  # what the writer is doing ("mmcaps extract lab"), for the message
    since: float  # epoch seconds
    heartbeat: float

    def describe(self, now: float) -> str:
        return (
            f"{self.owner} (pid {self.pid} on {self.host}, since {time.strftime('%H:%M:%S', time.localtime(self.since))},"
            f" heartbeat {now - self.heartbeat:.0f} s ago)"
        )


class WriterLock:
    """``with WriterLock(ws, path, owner=...):`` — the lock file at ``path`` (see the module doc)."""

    def __init__(
        self,
        workspace: Workspace,
        path: str,
        *,
        owner: str = "mmcaps",
        wait_s: float = 0.0,
        stale_after_s: float = DEFAULT_STALE_S,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        poll_s: float = 0.5,
    ) -> None:
        if stale_after_s <= heartbeat_s:
            raise ValueError(f"stale_after_s ({stale_after_s}) must exceed heartbeat_s ({heartbeat_s})")
        self.workspace, self.path, self.owner = workspace, path, owner
        self.wait_s, self.stale_after_s, self.heartbeat_s, self.poll_s = wait_s, stale_after_s, heartbeat_s, poll_s
        self.token = uuid.uuid4().hex
        self.took_over: LockInfo | None = None  # the stale lock this writer replaced, if any
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._since = 0.0

    # -- the file ---------------------------------------------------------------------------------------------------
    def _info(self, now: float) -> dict[str, Any]:
        return {
            "token": self.token,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "owner": self.owner,
            "since": self._since,
            "heartbeat": now,
        }

    def read(self) -> LockInfo | None:
        """The lock as it is on disk (None when there is none; an unreadable one counts as stale)."""
        try:
            data = json.loads(self.workspace.read_bytes(self.path))
            return LockInfo(**{k: data[k] for k in LockInfo.__dataclass_fields__})
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return LockInfo("", "?", -1, "an unreadable lock file", 0.0, 0.0)

    def _create(self) -> bool:
        """Create the lock file if there is none; True when this writer holds it afterwards."""
        data = json.dumps(self._info(time.time())).encode()
        ws = self.workspace
        if ws.is_local:
            ws.makedirs(self.path.rsplit("/", 1)[0])
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return True
        if ws.exists(self.path):
            return False
        ws.write_bytes(self.path, data)
        time.sleep(min(1.0, self.poll_s))  # another writer may have raced us: the last write wins on object stores
        held = self.read()
        return held is not None and held.token == self.token

    def _replace(self) -> bool:
        """Overwrite the (stale) lock with ours; True when ours survives a re-read."""
        self.workspace.write_text(self.path, json.dumps(self._info(time.time())))
        time.sleep(min(1.0, self.poll_s))
        held = self.read()
        return held is not None and held.token == self.token

    # -- taking and giving back ---------------------------------------------------------------------------------------
    def acquire(self) -> WriterLock:
        deadline = time.monotonic() + self.wait_s
        self._since = time.time()
        while True:
            if self._create():
                break
            held = self.read()
            now = time.time()
            if held is None:
                continue  # released between our two looks
            if now - held.heartbeat > self.stale_after_s or _dead_here(held):
                if self._replace():
                    self.took_over = held
                    break
                continue
            if time.monotonic() >= deadline:
                waited = f" after waiting {self.wait_s:g} s" if self.wait_s else ""
                raise LockBusy(
                    f"{self.path.rsplit('/', 2)[-2]} is being written by {held.describe(now)}{waited}; wait for it "
                    f"(--wait SECONDS), or if that process is gone, the lock is taken over once its heartbeat is "
                    f"{self.stale_after_s:g} s old"
                )
            time.sleep(self.poll_s)
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lock-heartbeat {self.path}", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            held = self.read()
            if held is None or held.token != self.token:
                return  # taken over (we were presumed dead): never write someone else's lock
            self.workspace.write_text(self.path, json.dumps(self._info(time.time())))

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s + 5)
            self._thread = None
        held = self.read()
        if held is not None and held.token == self.token:
            self.workspace.fs.rm(self.path)

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _dead_here(held: LockInfo) -> bool:
    """The holder ran on this host and its process is gone (a kill needs no stale timeout to be seen here)."""
    if held.host != socket.gethostname() or held.pid <= 0 or held.pid == os.getpid():
        return False
    try:
        os.kill(held.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def dataset_lock(workspace: Workspace, dataset: str, **kwargs: Any) -> WriterLock:
    """The writers' lock of dataset ``dataset`` (``datasets/<dataset>/.lock``)."""
    return WriterLock(workspace, f"{workspace.dataset_dir(dataset)}/{LOCK_NAME}", **kwargs)


__all__ = ["LOCK_NAME", "LockBusy", "LockInfo", "WriterLock", "dataset_lock"]
