"""Writers' locks: one writer at a time per dataset (or run folder), on local folders and object stores alike.

A lock is a small JSON file (``<dataset dir>/.lock``) naming its owner — host, pid, a random token, when it was
taken — and a heartbeat that the owner refreshes every ``heartbeat_s`` from a thread. A second writer waits for it
(up to ``wait_s``) or refuses with a message naming the owner. A lock whose holder died is taken over: at once when
it ran on this host (its pid is gone), else once its heartbeat is older than ``stale_after_s`` — so a killed run
never blocks the dataset for good, and recovery never touches a live run's files. The host written in the lock is
``socket.gethostname()``, or ``$MMCAPS_LOCK_HOST`` when set (two containers that share a host name, or a test that
plays two hosts, set it).

How the lock is taken, by store:

* **A local folder**: the complete file is hard-linked into place (``os.link`` fails if the name exists: an atomic
  create, never a half-written lock). Replacing a stale lock, heartbeats and the release happen under an exclusive
  ``flock`` of the dataset folder, each re-reading the lock first: a takeover replaces only the lock it judged
  stale, and a holder never writes over its successor. (``flock`` reaches other hosts only where the network file
  system forwards it, as NFSv4 does; a lock on S3 needs none of this.)
* **S3 that honours conditional writes** (AWS S3, MinIO, moto; probed once per bucket and process, 4 requests): the
  lock is created with a conditional PUT, ``If-None-Match: *`` — the store creates it only where there is none, so of
  two writers racing exactly one gets it and the other reads the owner. A stale lock is replaced with
  ``If-Match: <its ETag>`` (as read before judging it), so of two writers taking it over one wins; heartbeats are
  ``If-Match`` our last write's ETag (a holder that was presumed dead and taken over finds out at its next beat and
  stops writing), and the release a ``DELETE If-Match``. A PUT whose reply was lost and which was retried finds the
  lock existing: reading back our own token, we hold it.
* **Other object stores, and S3 stores that ignore the condition headers**: there is no exclusive create. The token is
  written, read back after a pause (``min(1 s, poll_s)``) and the writer whose token survives holds the lock; takeover
  and heartbeats likewise. Two writers whose writes and read-backs interleave within that pause can both believe they
  hold the lock — a known race, narrow but real; a warning says so once per process. Run one writer per dataset there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from storage.workspace import Workspace

LOCK_NAME = ".lock"
DEFAULT_STALE_S = 120.0
DEFAULT_HEARTBEAT_S = 10.0
HOST_ENV = "MMCAPS_LOCK_HOST"

log = logging.getLogger(__name__)

# (store, bucket) -> whether it honours If-None-Match and If-Match (probed once per process).
_CONDITIONAL: dict[tuple[str, str], bool] = {}
_WARNED: set[str] = set()


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


def lock_host() -> str:
    """The host name written in locks: ``$MMCAPS_LOCK_HOST``, else ``socket.gethostname()``."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


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
        host: str | None = None,
    ) -> None:
        if stale_after_s <= heartbeat_s:
            raise ValueError(f"stale_after_s ({stale_after_s}) must exceed heartbeat_s ({heartbeat_s})")
        self.workspace, self.path, self.owner = workspace, path, owner
        self.wait_s, self.stale_after_s, self.heartbeat_s, self.poll_s = wait_s, stale_after_s, heartbeat_s, poll_s
        self.host = host or lock_host()
        self.token = uuid.uuid4().hex
        self.took_over: LockInfo | None = None  # the stale lock this writer replaced, if any
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._since = 0.0
        self._etag: str | None = None  # S3 with conditional writes: the ETag of our last write of the lock
        self._store: _Store | None = None

    # -- the file ---------------------------------------------------------------------------------------------------
    def _data(self) -> bytes:
        info = {"token": self.token, "host": self.host, "pid": os.getpid(), "owner": self.owner}
        return json.dumps({**info, "since": self._since, "heartbeat": time.time()}).encode()

    def read(self) -> LockInfo | None:
        """The lock as it is in the store (None when there is none; an unreadable one counts as stale)."""
        try:
            return _parse(self.workspace.fs.cat_file(self.path))
        except FileNotFoundError:
            return None

    @property
    def store(self) -> _Store:
        """How this lock is written (module doc): local, conditional (S3) or write-and-read-back."""
        if self._store is None:
            ws = self.workspace
            if ws.is_local:
                self._store = _LocalStore(self)
            elif _honours_conditions(ws, self.path.rsplit("/", 1)[0]):
                self._store = _ConditionalStore(self)
            else:
                _warn_once(ws.root)
                self._store = _ReadBackStore(self)
        return self._store

    # -- taking and giving back ---------------------------------------------------------------------------------------
    def acquire(self) -> WriterLock:
        deadline = time.monotonic() + self.wait_s
        self._since = time.time()
        store = self.store
        while True:
            if store.create():
                break
            held, version = store.read_versioned()
            now = time.time()
            if held is None:
                continue  # released between our two looks
            if held.token == self.token:
                break  # our create landed but its reply was lost (a retried request): it is ours
            if now - held.heartbeat > self.stale_after_s or _dead_here(held, self.host):
                if store.replace(held, version):
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
            try:
                if not self.store.beat():
                    log.warning("%s: the lock was taken over (this writer was presumed dead)", self.path)
                    return  # never write someone else's lock
            except OSError as exc:  # the store is unreachable for now: the next beat tries again
                log.warning("%s: heartbeat failed (%s)", self.path, " ".join(str(exc).split()))

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s + 5)
            self._thread = None
        self.store.release()

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# -- the stores -------------------------------------------------------------------------------------------------------
class _Store:
    """How a lock file is created, replaced, refreshed and removed (see the module doc)."""

    def __init__(self, lock: WriterLock) -> None:
        self.lock, self.fs, self.path = lock, lock.workspace.fs, lock.path

    def create(self) -> bool:
        """Create the lock if there is none; True when this writer holds it afterwards."""
        raise NotImplementedError

    def read_versioned(self) -> tuple[LockInfo | None, Any]:
        """The lock and what :meth:`replace` needs to replace only that version of it."""
        return self.lock.read(), None

    def replace(self, stale: LockInfo, version: Any) -> bool:
        """Replace the (stale) lock ``stale`` with ours; True when ours is in place."""
        raise NotImplementedError

    def beat(self) -> bool:
        """Refresh our heartbeat; False when the lock is no longer ours."""
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError


class _LocalStore(_Store):
    def create(self) -> bool:
        folder = self.path.rsplit("/", 1)[0]
        self.lock.workspace.makedirs(folder)
        new = f"{folder}/{LOCK_NAME}-new-{self.lock.token}"  # not a ".tmp-" name: a holder's recover() sweeps those
        with open(new, "wb") as fh:
            fh.write(self.lock._data())
        try:
            os.link(new, self.path)  # fails if the lock exists; never shows a half-written file
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(new)

    def replace(self, stale: LockInfo, version: Any) -> bool:
        with self._folder_locked():
            held = self.lock.read()
            if held is None or held.token != stale.token:
                return False  # released, or taken over by another writer since we judged it
            self.lock.workspace.write_bytes(self.path, self.lock._data())
            return True

    def beat(self) -> bool:
        return self.replace(LockInfo(self.lock.token, "", 0, "", 0.0, 0.0), None)

    def release(self) -> None:
        with self._folder_locked():
            held = self.lock.read()
            if held is not None and held.token == self.lock.token:
                os.unlink(self.path)

    @contextlib.contextmanager
    def _folder_locked(self) -> Iterator[None]:
        fd = os.open(self.path.rsplit("/", 1)[0], os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock


class _ConditionalStore(_Store):
    """S3 through s3fs: ``If-None-Match: *`` creates, ``If-Match: <ETag>`` replaces, refreshes and deletes."""

    def create(self) -> bool:
        try:
            self.lock._etag = self.fs.pipe_file(self.path, self.lock._data(), mode="create")["ETag"]
            return True
        except FileExistsError:
            return False

    def read_versioned(self) -> tuple[LockInfo | None, Any]:
        # The ETag before the body: if the lock changes in between, the If-Match below fails, as it must.
        try:
            etag = self.fs.info(self.path, refresh=True)["ETag"]
            held = _parse(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None, None
        if held.token == self.lock.token:
            self.lock._etag = etag
        return held, etag

    def replace(self, stale: LockInfo, version: Any) -> bool:
        return self._put_if(version)

    def beat(self) -> bool:
        return self._put_if(self.lock._etag)

    def release(self) -> None:
        bucket, key, _ = self.fs.split_path(self.path)
        try:
            self.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=self.lock._etag)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if not _precondition_failed(exc):
                raise
        finally:
            self.fs.invalidate_cache(self.path)

    def _put_if(self, etag: str | None) -> bool:
        if etag is None:
            return False
        try:
            self.lock._etag = self.fs.pipe_file(self.path, self.lock._data(), IfMatch=etag)["ETag"]
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            if _precondition_failed(exc):
                return False
            raise


class _ReadBackStore(_Store):
    """Object stores without conditional writes: write, pause, read back (the known race of the module doc)."""

    def create(self) -> bool:
        if self.lock.workspace.exists(self.path):
            return False
        return self._write_and_check()

    def replace(self, stale: LockInfo, version: Any) -> bool:
        return self._write_and_check()

    def beat(self) -> bool:
        held = self.lock.read()
        if held is None or held.token != self.lock.token:
            return False
        self.lock.workspace.write_bytes(self.path, self.lock._data())
        return True

    def release(self) -> None:
        held = self.lock.read()
        if held is not None and held.token == self.lock.token:
            self.fs.rm(self.path)

    def _write_and_check(self) -> bool:
        self.lock.workspace.write_bytes(self.path, self.lock._data())
        time.sleep(min(1.0, self.lock.poll_s))  # another writer may have raced us: the last write wins
        held = self.lock.read()
        return held is not None and held.token == self.lock.token


# -- helpers ----------------------------------------------------------------------------------------------------------
def _parse(data: bytes) -> LockInfo:
    try:
        parsed = json.loads(data)
        return LockInfo(**{k: parsed[k] for k in LockInfo.__dataclass_fields__})
    except (ValueError, KeyError, TypeError):
        return LockInfo("", "?", -1, "an unreadable lock file", 0.0, 0.0)


def _precondition_failed(exc: BaseException) -> bool:
    """The store refused a conditional request (412; 409 where two conditional writes collided)."""
    code = getattr(exc.__cause__, "response", {}).get("Error", {}).get("Code")
    return code in ("PreconditionFailed", "ConditionalRequestConflict")


def _honours_conditions(ws: Workspace, folder: str) -> bool:
    """Whether the store behind ``ws`` honours ``If-None-Match: *`` and ``If-Match`` on PUT (probed once)."""
    protocols = ws.fs.protocol if isinstance(ws.fs.protocol, (tuple, list)) else (ws.fs.protocol,)
    if not any(p in ("s3", "s3a") for p in protocols):
        return False
    bucket = ws.fs.split_path(folder)[0]
    key = (repr(ws.fs.storage_options), bucket)
    if key not in _CONDITIONAL:
        _CONDITIONAL[key] = _probe(ws.fs, f"{folder}/.lock-probe-{uuid.uuid4().hex[:12]}")
    return _CONDITIONAL[key]


def _probe(fs: Any, probe: str) -> bool:
    """Create a scratch object, create it again with If-None-Match, overwrite it with a wrong If-Match: a store that
    honours both refuses the last two. 4 requests (the delete included)."""
    try:
        fs.pipe_file(probe, b"probe", mode="create")
        try:
            fs.pipe_file(probe, b"again", mode="create")
            return False  # the header was ignored
        except FileExistsError:
            pass
        try:
            fs.pipe_file(probe, b"wrong", IfMatch='"00000000000000000000000000000000"')
            return False
        except OSError as exc:
            return _precondition_failed(exc)
    except OSError as exc:  # e.g. 501 NotImplemented for the header
        log.debug("conditional writes probe failed: %s", exc)
        return False
    finally:
        with contextlib.suppress(OSError):
            fs.rm(probe)


def _warn_once(root: str) -> None:
    if root not in _WARNED:
        _WARNED.add(root)
        log.warning(
            "%s: this store has no conditional writes: writer locks are written and read back, and two writers "
            "starting within a second of each other may both take one (storage/locks.py). Run one writer per dataset.",
            root,
        )


def _dead_here(held: LockInfo, host: str) -> bool:
    """The holder ran on this host and its process is gone (a kill needs no stale timeout to be seen here)."""
    if held.host != host or held.pid <= 0 or held.pid == os.getpid():
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


__all__ = ["HOST_ENV", "LOCK_NAME", "LockBusy", "LockInfo", "WriterLock", "dataset_lock", "lock_host"]
