"""Content hashes: streamed sha256 of files (local or fsspec) and stable fingerprints of tables.

The sha256 of a source video is what the manifest compares to decide whether a video changed; the table
fingerprint is what names a dataset's content (training run ids are derived from it).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import fsspec
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

CHUNK_BYTES = 1 << 20  # 1 MiB: large enough to keep syscalls rare, small enough to stream multi-GB videos


def sha256_file(path: str, fs: fsspec.AbstractFileSystem | None = None, *, chunk_bytes: int = CHUNK_BYTES) -> str:
    """The hex sha256 of the file at ``path`` (local path or fsspec URL), read in chunks of ``chunk_bytes``.

    Raises FileNotFoundError naming the path when it does not exist.
    """
    if fs is None:
        fs, path = fsspec.core.url_to_fs(str(path))
    digest = hashlib.sha256()
    try:
        with fs.open(path, "rb") as fh:
            while chunk := fh.read(chunk_bytes):
                digest.update(chunk)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise ValueError(f"{path}: is a directory, not a file") from exc
    return digest.hexdigest()


_LOCAL_MEMO: dict[tuple[str, int, int], str] = {}


def sha256_local(path: str | os.PathLike[str]) -> str:
    """:func:`sha256_file` of a local file, remembered in this process by (path, size, mtime) — the rule
    :class:`HashCache` applies across processes. For large inputs that configs name (weights, word vectors), whose
    hash a fingerprint needs many times per run."""
    p = os.path.abspath(os.path.expanduser(str(path)))
    try:
        st = os.stat(p)
    except OSError as exc:
        raise FileNotFoundError(f"{path}: cannot read ({exc})") from exc
    key = (p, st.st_size, st.st_mtime_ns)
    if key not in _LOCAL_MEMO:
        _LOCAL_MEMO[key] = sha256_file(p, LocalFileSystem())
    return _LOCAL_MEMO[key]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _plain(value: Any) -> Any:
    """A JSON-stable form of one cell (timestamps as ISO strings, floats as repr-exact values)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def table_fingerprint(table: pa.Table, columns: Sequence[str], *, length: int = 16) -> str:
    """A short hex hash of ``table[columns]`` that ignores row order and the other columns.

    Rows are reduced to canonical JSON lists, sorted, and hashed, so the same set of rows gives the same
    fingerprint whatever order they were appended in.
    """
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise KeyError(f"table has no columns {missing} (has {table.column_names})")
    cols = [table.column(c).to_pylist() for c in columns]
    rows = sorted(
        json.dumps([_plain(v) for v in row], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        for row in zip(*cols, strict=True)
    )
    digest = hashlib.sha256(json.dumps(list(columns)).encode("utf-8"))
    for row in rows:
        digest.update(row.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:length]


# -- remembered hashes ----------------------------------------------------------------------------------------------
_HASH_CACHE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("stamp", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
    ]
)


def file_stamp(path: str, fs: fsspec.AbstractFileSystem) -> tuple[int, str]:
    """(size, stamp) of a file: the stamp is what changes when the file is rewritten — the modification time in
    nanoseconds for local files; for object stores the ETag or last-modified time fsspec reports ("" when it
    reports neither, and then the file is always hashed)."""
    if isinstance(fs, LocalFileSystem):
        st = os.stat(path)
        return int(st.st_size), f"mtime_ns:{st.st_mtime_ns}"
    info = fs.info(path)
    for key in ("ETag", "etag", "md5Hash", "LastModified", "last_modified", "mtime", "updated"):
        if info.get(key):
            return int(info["size"]), f"{key}:{info[key]}"
    return int(info["size"]), ""


class HashCache:
    """sha256 of source files remembered by (source, size, stamp), so a re-run reads only new or rewritten files.

    The rule of ``make`` and ``rsync``: a file whose size and modification time (or object-store ETag) are
    unchanged has the same bytes. ``sha256(source, path, fs)`` returns the remembered hash or reads the file;
    ``save()`` rewrites the table atomically (Parquet, ``<workspace>/cache/sha256.parquet``) when anything was
    added. Without a workspace the cache lives in memory only; ``read=False`` starts empty (every file is read
    again) and still saves what it learns.
    """

    def __init__(self, workspace: Any = None, *, read: bool = True) -> None:  # storage.workspace.Workspace | None
        self.workspace = workspace
        self.path = workspace.join("cache", "sha256.parquet") if workspace is not None else None
        self._entries: dict[str, tuple[int, str, str]] = {}
        self._dirty = False
        self.hits = self.misses = 0
        if read and self.path is not None and workspace.exists(self.path):
            import pyarrow.parquet as pq  # noqa: PLC0415  deferred: pyarrow

            try:
                with workspace.fs.open(self.path, "rb") as fh:
                    table = pq.read_table(fh)
                columns = [table.column(c).to_pylist() for c in _HASH_CACHE_SCHEMA.names]
                for source, size, stamp, sha in zip(*columns, strict=True):
                    self._entries[source] = (size, stamp, sha)
            except Exception:  # a damaged cache costs hashing again, never a wrong hash
                self._entries = {}

    def __len__(self) -> int:
        return len(self._entries)

    def sha256(self, source: str, path: str, fs: fsspec.AbstractFileSystem) -> tuple[str, int]:
        """(sha256, size) of ``source`` (opened as ``path`` on ``fs``): remembered, or read and remembered."""
        size, stamp = file_stamp(path, fs)
        known = self._entries.get(source)
        if stamp and known is not None and known[0] == size and known[1] == stamp:
            self.hits += 1
            return known[2], size
        self.misses += 1
        sha = sha256_file(path, fs)
        if stamp:
            self._entries[source] = (size, stamp, sha)
            self._dirty = True
        return sha, size

    def save(self) -> None:
        """Write the table if anything was added (atomic: readers see the old table or the new one)."""
        if self.path is None or not self._dirty:
            return
        import pyarrow.parquet as pq  # noqa: PLC0415  deferred: pyarrow

        rows = sorted(self._entries.items())
        table = pa.table(
            {
                "source": [s for s, _ in rows],
                "size": [v[0] for _, v in rows],
                "stamp": [v[1] for _, v in rows],
                "sha256": [v[2] for _, v in rows],
            },
            schema=_HASH_CACHE_SCHEMA,
        )
        self.workspace.makedirs(self.path.rsplit("/", 1)[0])
        with self.workspace.atomic_open(self.path, "wb") as fh:
            pq.write_table(table, fh)
        self._dirty = False
