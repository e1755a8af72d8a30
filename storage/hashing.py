"""Content hashes: streamed sha256 of files (local or fsspec) and stable fingerprints of tables.

The sha256 of a source video is what the manifest compares to decide whether a video changed; the table
fingerprint is what names a dataset's content (training run ids are derived from it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from storage.manifest import _new_part_name, _parse_part, _Part

log = logging.getLogger(__name__)

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


HASH_PARTS = "sha256"  # cache/sha256/: the folder of parts (cache/sha256.parquet: an earlier mmcaps's single file)
# cache/captions-v1/: a subtitle file's caption count and digest as this mmcaps parses it (the version changes with
# the parser, so a parsing fix reads every subtitle again)
CAPTION_PARTS = "captions-v1"
MAX_PARTS = 16  # a save that leaves more parts merges the newest small ones (:meth:`HashCache.save`)


def _merge_order(rows: list[int]) -> int:
    """How many of the newest parts (row counts ``rows``, oldest first) one merge takes: the newest two, then each
    older part no larger than the rows taken so far (size-tiered, as an LSM tree: a row is rewritten O(log N)
    times over the cache's life, and the large base is rewritten only when the tail has grown as large)."""
    take, total = 0, 0
    for count in reversed(rows):
        if take >= 2 and count > total:
            break
        take, total = take + 1, total + count
    return take


class HashCache:
    """sha256 of source files remembered by (source, size, stamp), so a re-run reads only new or rewritten files.

    The rule of ``make`` and ``rsync``: a file whose size and modification time (or object-store ETag) are
    unchanged has the same bytes. ``sha256(source, path, fs)`` returns the remembered hash or reads the file;
    ``save()`` writes what was learned since the cache was read as one new part (Parquet,
    ``<workspace>/cache/sha256/part-<seq>-<tag>.parquet``, the manifest's part names): a run that meets one new
    video writes one row, not the table. Parts are read in order, a later row for a source replacing an earlier one.
    A save that leaves more than :data:`MAX_PARTS` parts merges the newest small ones (:func:`_merge_order`);
    ``compact()`` merges them all. Without a workspace the cache lives in memory only; ``read=False`` starts empty
    (every file is read again) and still saves what it learns. ``kind`` names the folder: :data:`HASH_PARTS` for
    files' hashes, :data:`CAPTION_PARTS` for subtitles' caption summaries (any value of a file's bytes:
    :meth:`remember`).

    Crash and concurrency safety: each part is written under a temporary name and renamed into place (readers skip
    temporaries), and a merge writes the merged part before it deletes the parts merged, so a kill at any point loses
    no entry (at worst two parts hold the same rows). Two processes saving at once write two parts (none is lost, as
    a whole-table rewrite lost one); two entries of one source with different stamps are both valid, and whichever
    is read last only decides whether the file is hashed again. A part that cannot be read is skipped with a
    warning: its files are hashed again, never given a wrong hash. An earlier mmcaps's single file
    (``cache/sha256.parquet``) is read while there is no folder of parts; the first save writes its rows with the new
    ones as the first part and removes it. ``path`` is the newest part (the single file before any save).
    """

    def __init__(self, workspace: Any = None, *, read: bool = True, kind: str = HASH_PARTS) -> None:
        # workspace: a storage.workspace.Workspace or None
        self.workspace = workspace
        self.folder = workspace.join("cache", kind) if workspace is not None else None
        legacy = workspace is not None and kind == HASH_PARTS
        self.legacy_path = workspace.join("cache", "sha256.parquet") if legacy else None
        self.path = self.legacy_path
        self._entries: dict[str, tuple[int, str, str]] = {}
        self._new: dict[str, tuple[int, str, str]] = {}  # learned since the last save
        self._parts: list[tuple[_Part, int]] = []  # the parts read (or written), oldest first, and their rows
        self.hits = self.misses = 0
        if read and workspace is not None:
            self._read()

    # -- reading ----------------------------------------------------------------------------------------------------
    def _listing(self) -> list[_Part] | None:
        """The folder's parts, oldest first (None when there is no folder: a cache of an earlier mmcaps, or none)."""
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.workspace.fs.ls(self.folder, detail=False)]
        except FileNotFoundError:
            return None
        parts = [p for p in map(_parse_part, names) if p is not None]  # temporaries and strays are not parts
        return sorted(parts, key=lambda p: (p.seq, p.compact, p.name))

    def _read_table(self, path: str) -> dict[str, tuple[int, str, str]] | None:
        try:
            with self.workspace.fs.open(path, "rb") as fh:
                table = pq.read_table(fh)
            columns = [table.column(c).to_pylist() for c in _HASH_CACHE_SCHEMA.names]
        except FileNotFoundError:  # merged away by another process since the listing
            return None
        except Exception as exc:  # a damaged part costs hashing again, never a wrong hash
            log.warning("hash cache %s: cannot read (%s); its files will be hashed again", path, exc)
            return None
        return {source: (size, stamp, sha) for source, size, stamp, sha in zip(*columns, strict=True)}

    def _read(self) -> None:
        parts = self._listing()
        if parts is None:
            if self.legacy_path is not None and self.workspace.exists(self.legacy_path):
                self._entries = self._read_table(self.legacy_path) or {}
            return
        for part in parts:
            rows = self._read_table(f"{self.folder}/{part.name}")
            if rows is None:
                continue
            self._entries.update(rows)
            self._parts.append((part, len(rows)))
        if self._parts:
            self.path = f"{self.folder}/{self._parts[-1][0].name}"

    def __len__(self) -> int:
        return len(self._entries)

    def sha256(self, source: str, path: str, fs: fsspec.AbstractFileSystem) -> tuple[str, int]:
        """(sha256, size) of ``source`` (opened as ``path`` on ``fs``): remembered, or read and remembered."""
        return self.remember(source, path, fs, lambda: sha256_file(path, fs))

    def remember(
        self, source: str, path: str, fs: fsspec.AbstractFileSystem, compute: Callable[[], str]
    ) -> tuple[str, int]:
        """(value, size) of ``source``: the value remembered for its (size, stamp), or ``compute()`` — a function
        of the file's bytes (its sha256; a subtitle's caption digest) — remembered. One stat when remembered."""
        size, stamp = file_stamp(path, fs)
        known = self._entries.get(source)
        if stamp and known is not None and known[0] == size and known[1] == stamp:
            self.hits += 1
            return known[2], size
        self.misses += 1
        value = compute()
        if stamp:
            self._entries[source] = self._new[source] = (size, stamp, value)
        return value, size

    # -- writing ----------------------------------------------------------------------------------------------------
    def _write(self, rows: dict[str, tuple[int, str, str]], seq: int, *, compact: bool = False) -> _Part:
        """``rows`` as a new part (atomic: written under a temporary name, then renamed)."""
        ordered = sorted(rows.items())
        table = pa.table(
            {
                "source": [s for s, _ in ordered],
                "size": [v[0] for _, v in ordered],
                "stamp": [v[1] for _, v in ordered],
                "sha256": [v[2] for _, v in ordered],
            },
            schema=_HASH_CACHE_SCHEMA,
        )
        part = _parse_part(_new_part_name(seq, compact=compact))
        assert part is not None
        with self.workspace.atomic_open(f"{self.folder}/{part.name}", "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
        return part

    def save(self) -> None:
        """Write what was learned since the last save as one new part (module doc), then merge the newest parts
        when there are more than :data:`MAX_PARTS`."""
        if self.workspace is None or not self._new:
            return
        listed = self._listing()
        rows, legacy = dict(self._new), False
        first_after_legacy = self.legacy_path is not None and self.workspace.exists(self.legacy_path)
        if listed is None and first_after_legacy:  # the first save after an earlier mmcaps
            rows, legacy = {**(self._read_table(self.legacy_path) or {}), **rows}, True
        seq = max((p.seq for p in listed or []), default=-1) + 1
        part = self._write(rows, seq)
        if legacy:
            self.workspace.fs.rm(self.legacy_path)  # its rows are in the part just written
        # the parts as listed now (another process's new ones included: rows unknown, taken as small) and this one
        known = {p.name: r for p, r in self._parts}
        self._parts = [(p, known.get(p.name, 0)) for p in listed or []] + [(part, len(rows))]
        self.path = f"{self.folder}/{part.name}"
        self._new = {}
        if len(self._parts) > MAX_PARTS:
            self._merge(_merge_order([r for _, r in self._parts]))

    def compact(self) -> int:
        """Merge every part into one (the merged view: what a new cache reads is unchanged); returns the number of
        parts merged (0 when there was at most one)."""
        if self.workspace is None:
            return 0
        self._parts = [(p, 0) for p in self._listing() or []]
        return self._merge(len(self._parts))

    def _merge(self, count: int) -> int:
        """Merge the newest ``count`` parts this cache knows into one compact part, then delete them. A part gone
        meanwhile (another process merged it) stops the merge: its rows are in that process's merged part."""
        if count < 2:
            return 0
        taken = self._parts[-count:]
        merged: dict[str, tuple[int, str, str]] = {}
        for part, _ in taken:
            rows = self._read_table(f"{self.folder}/{part.name}")
            if rows is None:
                return 0
            merged.update(rows)
        new = self._write(merged, taken[-1][0].seq, compact=True)  # first: a kill from here on loses nothing
        for part, _ in taken:
            with contextlib.suppress(FileNotFoundError):
                self.workspace.fs.rm(f"{self.folder}/{part.name}")
        self._parts = [*self._parts[:-count], (new, len(merged))]
        self.path = f"{self.folder}/{new.name}"
        return count
