"""Counting a workspace's requests: an fsspec filesystem that wraps another and counts its calls by kind.

On object storage each call is at least one HTTP request: ``ls`` a LIST (one per 1000 keys), ``info`` a HEAD (or a
LIST where s3fs asks for a "directory"), ``open`` a GET or PUT (more for a file read in several blocks), ``cat`` a GET,
``put`` a PUT, ``rm`` a DELETE, ``mv`` a COPY and a DELETE. So the counts are the requests a run makes to within the
blocks a file is read in, and, unlike a server log, they are attributed to the process and the code that made them.
s3fs answers some ``info`` calls from its listing cache: a count is then an upper bound on the requests.

Two ways in:

- ``CountingFileSystem(fs, counter)`` wraps one filesystem object (``memory://``, ``s3://``, a local one);
- ``with count_requests("s3://bucket/ws") as counter:`` counts every :class:`~storage.workspace.Workspace` made in
  this process under that root, and every URL opened through :func:`url_to_fs` (the training loader's shards) —
  what the driver, its worker threads and the loader each make of their own. Other processes (Dask workers,
  loader worker processes) count nothing: a counter lives in the process that made it.

Counts are thread-safe (the driver's worker threads share one counter).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import fsspec
from fsspec import AbstractFileSystem

# Kind → the fsspec methods of that kind. Each public method is forwarded to the wrapped filesystem's own (its
# efficient implementation: s3fs lists a prefix recursively in one call), so one counted call is what the code
# asked for, not the primitives a generic implementation would make of it.
KINDS: dict[str, tuple[str, ...]] = {
    "ls": ("ls", "listdir", "find", "glob", "walk", "du"),
    "info": ("info", "exists", "lexists", "isdir", "isfile", "size", "sizes", "modified", "created", "ukey",
             "checksum"),
    "open": ("open",),
    "cat": ("cat", "cat_file", "cat_ranges", "read_text", "read_bytes", "read_block", "head", "tail"),
    "put": ("pipe", "pipe_file", "put", "put_file", "write_text", "write_bytes", "touch"),
    "get": ("get", "get_file", "download"),
    "rm": ("rm", "rm_file", "rmdir", "delete"),
    "mv": ("mv", "rename", "move"),
    "copy": ("copy", "cp", "cp_file", "copy_file"),
    "mkdir": ("mkdir", "makedirs", "mkdirs"),
}  # fmt: skip


class RequestCounter:
    """Calls counted by kind (``ls``, ``info``, ``open``, ``cat``, ``put``, ``get``, ``rm``, ``mv``, ``copy``,
    ``mkdir``), and with ``keep_paths`` every call's ``(kind, method, path)`` in order. Thread-safe."""

    def __init__(self, *, keep_paths: bool = False) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self.keep_paths = keep_paths
        self.calls: list[tuple[str, str, str]] = []

    def add(self, kind: str, method: str, path: Any = None) -> None:
        with self._lock:
            self._counts[kind] += 1
            if self.keep_paths:
                self.calls.append((kind, method, _path_text(path)))

    def counts(self) -> dict[str, int]:
        """A copy of the counts by kind (kinds never called are absent)."""
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def opened(self, mode: str = "r") -> list[str]:
        """The paths passed to ``open`` for reading (``mode="r"``) or writing (``"w"``), in call order (needs
        ``keep_paths``)."""
        with self._lock:
            return [p for kind, method, p in self.calls if kind == "open" and method.endswith(f":{mode}")]

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self.calls.clear()


def _path_text(path: Any) -> str:
    if isinstance(path, (list, tuple)):
        return ",".join(str(p) for p in path)
    return "" if path is None else str(path)


def _forward(name: str, kind: str) -> Callable[..., Any]:
    def method(self: CountingFileSystem, *args: Any, **kwargs: Any) -> Any:
        path = args[0] if args else kwargs.get("path")
        self.counter.add(kind, name, path)
        return getattr(self.fs, name)(*args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"The wrapped filesystem's ``{name}``, counted as one ``{kind}`` call."
    return method


class CountingFileSystem(AbstractFileSystem):
    """``fs`` with each call counted in ``counter`` (see :data:`KINDS`); everything else is ``fs``'s own.

    An :class:`fsspec.AbstractFileSystem`, so pyarrow takes it as a filesystem (its reads are counted too). It
    pickles as the plain wrapped filesystem: another process does not count into this one's counter.
    """

    cachable = False  # one instance per counter, never fsspec's shared instance

    def __init__(self, fs: AbstractFileSystem, counter: RequestCounter | None = None) -> None:
        super().__init__()
        self.fs = fs
        self.counter = counter if counter is not None else RequestCounter()
        # The wrapped filesystem's path rules, on the instance (fsspec calls these as class attributes).
        self.protocol = fs.protocol
        self.root_marker = fs.root_marker
        self.sep = fs.sep
        self._strip_protocol = fs._strip_protocol  # type: ignore[method-assign]

    def open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        self.counter.add("open", f"open:{'r' if 'r' in mode else 'w'}", path)
        return self.fs.open(path, mode, **kwargs)

    def invalidate_cache(self, path: str | None = None) -> None:
        self.fs.invalidate_cache(path)

    def unstrip_protocol(self, name: str) -> str:
        return self.fs.unstrip_protocol(name)

    @property
    def fsid(self) -> str:
        return f"counting-{self.fs.fsid}"

    def __reduce__(self) -> tuple[Any, ...]:
        return self.fs.__reduce__()

    def __getattr__(self, name: str) -> Any:  # s3fs's own attributes (its client, its options)
        if name in ("fs", "counter"):  # not set yet (during unpickling or __init__): no recursion
            raise AttributeError(name)
        return getattr(self.fs, name)

    def __repr__(self) -> str:
        return f"CountingFileSystem({self.fs!r})"


for _kind, _names in KINDS.items():
    for _name in _names:
        if _name != "open":
            setattr(CountingFileSystem, _name, _forward(_name, _kind))


# -- counting what this process makes of a root ----------------------------------------------------------------------
_ACTIVE: list[tuple[str, RequestCounter]] = []  # (root key, counter) of the open count_requests blocks
_ACTIVE_LOCK = threading.Lock()


def _key(url: str) -> str:
    """A URL or path without its protocol and leading slashes: ``s3://b/ws`` and ``b/ws`` are the same place."""
    return str(url).split("://", 1)[-1].lstrip("/").rstrip("/")


@contextmanager
def count_requests(root: str, *, keep_paths: bool = False) -> Iterator[RequestCounter]:
    """Count the calls of every workspace and :func:`url_to_fs` filesystem made inside the block under ``root``.

    Filesystems made before the block are not counted; those made inside keep counting into this counter after it.
    """
    counter = RequestCounter(keep_paths=keep_paths)
    entry = (_key(root), counter)
    with _ACTIVE_LOCK:
        _ACTIVE.append(entry)
    try:
        yield counter
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.remove(entry)


def counted(fs: AbstractFileSystem, url: str) -> AbstractFileSystem:
    """``fs`` wrapped in a :class:`CountingFileSystem` when a :func:`count_requests` block covers ``url`` (the
    innermost one), else ``fs`` itself."""
    if not _ACTIVE:  # the common case: nothing counts, nothing is wrapped
        return fs
    key = _key(url)
    with _ACTIVE_LOCK:
        for root, counter in reversed(_ACTIVE):
            if key == root or key.startswith(f"{root}/") or not root:
                return CountingFileSystem(fs, counter)
    return fs


def url_to_fs(url: str) -> tuple[AbstractFileSystem, str]:
    """``fsspec.core.url_to_fs(url)``, counted where a :func:`count_requests` block covers ``url``."""
    fs, path = fsspec.core.url_to_fs(str(url))
    return counted(fs, str(url)), path
