"""The dataset manifest: one row per video and extraction, as plain Parquet (storage/README.md).

Layout: ``datasets/<ds>/manifest.parquet/`` is a folder of immutable parts, one per append
(``part-<seq:08d>-<tag>.parquet``), that pandas, pyarrow and DuckDB read with one call each::

    pandas.read_parquet("<root>/datasets/<ds>/manifest.parquet")
    duckdb.sql("select status, count(*) from '<root>/datasets/<ds>/manifest.parquet/part-*.parquet' group by status")

so an append costs the rows it appends, not the manifest's size. Rows are only ever appended (history is kept).
The *current* view keeps, for each ``(video_id, extract_fingerprint)``, the row appended last; it is kept beside the
history as ``current.parquet/``, one part per manifest part under the same name, holding that part's rows that are
still current. An append writes its own current part and rewrites only the older current parts that held a row it
supersedes (a re-extracted or retried video; none when it adds new videos). ``compact()`` merges the parts into one.

Parts are ordered by their sequence number (then name), so "appended last" is well defined. A part whose sequence
number is at or below a compacted part's (``part-<seq>-compact-<tag>.parquet``) is covered by it and ignored.

Crash safety: each part is written under a temporary name (:data:`storage.workspace.TMP_MARKER`, ignored by every
reader, pandas and pyarrow included, and swept by the ingest's recovery) and renamed into place. The manifest part
is the commit: its current part follows, so a reader that finds a manifest part without one computes it from the
manifest part, and the next append writes it. A part that cannot be read is refused with its path, never skipped.

A manifest written by an earlier mmcaps is one ``manifest.parquet`` file (and a ``current.parquet`` file): it is read
as is; the first append converts it into part 0 of the folder (moving it aside to ``manifest.legacy.parquet`` first,
which readers take as part 0 until the conversion is done; the old current file is dropped, part 0's current part
replaces it). One writer per dataset at a time: the dataset's writer lock, held by the ingest driver and ``compact``.

Cost of an append onto N rows in P parts: its own rows, a listing of both folders (P names), and a lookup of its keys
in per-part key hashes that the process keeps (the first append of a process reads the current parts' two key
columns once: 0.7 s at 1 M rows). Reading is one pass of pyarrow's dataset scanner over the parts.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from storage.locks import dataset_lock
from storage.workspace import TMP_MARKER, Workspace

STATUSES = ("ok", "failed", "skipped")

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),  # the original id (the shard key is safe_name of it)
        pa.field("source", pa.string(), nullable=False),  # path or URL as given
        pa.field("sha256", pa.string(), nullable=False),  # hex sha256 of the source bytes; "" when unreadable
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # ok | failed | skipped
        pa.field("error", pa.string(), nullable=False),  # one line; "" when ok
        # one line: a problem that did not stop the video (an unreadable caption file: kept without captions)
        pa.field("warning", pa.string(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),  # 0.0 when unknown (failed)
        pa.field("has_audio", pa.bool_(), nullable=False),
        pa.field("n_captions", pa.int32(), nullable=False),
        # sha256 of the captions' canonical JSON (storage.sample.captions_digest); "" in manifests written before
        # the column existed, where an edit is detected by the caption count alone.
        pa.field("captions_sha256", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),  # relative to the dataset folder; "" unless ok
        pa.field("extract_fingerprint", pa.string(), nullable=False),
        pa.field("extracted_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
COLUMNS = tuple(MANIFEST_SCHEMA.names)
# Columns added after the first manifests were written, with the value older rows read with.
ADDED_COLUMNS = {"captions_sha256": "", "warning": ""}
CURRENT_FILE = "current.parquet"  # beside the manifest: its current view (one row per video and fingerprint)
LEGACY_ASIDE = "manifest.legacy.parquet"  # a single-file manifest file while it is converted into part 0
KEY = ("video_id", "extract_fingerprint")  # what the current view keeps one row of
_PART = re.compile(r"^part-(\d{8})-(compact-)?([0-9a-f]{8})\.parquet$")
_READ_THREADS = 8  # parts read side by side (Parquet decoding releases the GIL; object stores answer in parallel)


def empty_manifest() -> pa.Table:
    return MANIFEST_SCHEMA.empty_table()


def rows_to_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Validate manifest rows (dicts with exactly the schema's columns) and build a table.

    ``extracted_at`` may be a datetime or an ISO-8601 string. Raises ValueError naming the row and the problem.
    """
    rows = list(rows)
    for i, row in enumerate(rows):
        keys = set(row)
        if keys != set(COLUMNS):
            raise ValueError(
                f"manifest row {i} ({row.get('video_id')!r}): missing {sorted(set(COLUMNS) - keys)}, "
                f"unknown {sorted(keys - set(COLUMNS))}"
            )
        if row["status"] not in STATUSES:
            raise ValueError(f"manifest row {i} ({row['video_id']!r}): status {row['status']!r} not in {STATUSES}")
        if row["status"] == "ok" and not row["shard"]:
            raise ValueError(f"manifest row {i} ({row['video_id']!r}): an ok row must name its shard")
        if "\n" in row["error"]:
            raise ValueError(f"manifest row {i} ({row['video_id']!r}): error must be one line")
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for row in rows:
        for name in COLUMNS:
            value = row[name]
            if name == "extracted_at" and isinstance(value, str):
                value = datetime.fromisoformat(value)
            if name == "extracted_at" and value.tzinfo is None:
                value = value.replace(tzinfo=timezone.utc)
            columns[name].append(value)
    try:
        return pa.table(columns, schema=MANIFEST_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"manifest rows do not fit the schema: {exc}") from exc


def current_view(table: pa.Table) -> pa.Table:
    """The last-appended row for each ``(video_id, extract_fingerprint)``, in the order of those last rows.

    ``table``: manifest rows in append order (at least the :data:`KEY` columns); vectorised (a group-by on the key).
    """
    if table.num_rows == 0:
        return table
    rows = pa.array(np.arange(table.num_rows, dtype=np.int64))
    keyed = table.select(list(KEY)).append_column("_row", rows)
    last = keyed.group_by(list(KEY), use_threads=False).aggregate([("_row", "max")]).column("_row_max")
    return table.take(pa.array(np.sort(last.to_numpy())))


@dataclass(frozen=True)
class _Part:
    """One file of a parts folder: ``part-<seq:08d>-[compact-]<tag>.parquet``."""

    seq: int
    compact: bool
    name: str


def _parse_part(name: str) -> _Part | None:
    match = _PART.match(name)
    return None if match is None else _Part(int(match.group(1)), bool(match.group(2)), name)


def _new_part_name(seq: int, *, compact: bool = False) -> str:
    return f"part-{seq:08d}-{'compact-' if compact else ''}{uuid.uuid4().hex[:8]}.parquet"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _conform(table: pa.Table, file_names: list[str], path: str, want: list[str]) -> pa.Table:
    """``table`` (columns ``want`` read from a file whose columns are ``file_names``) checked against the schema, with
    the columns an earlier mmcaps did not write (:data:`ADDED_COLUMNS`) added at their empty value."""
    missing = [c for c in COLUMNS if c not in file_names]
    if set(missing) - set(ADDED_COLUMNS) or [c for c in COLUMNS if c in file_names] != file_names:
        raise ValueError(f"manifest {path}: columns {file_names}, expected {list(COLUMNS)}")
    table = table.select([c for c in want if c in file_names])
    for at, name in enumerate(want):
        if name in missing:
            table = table.add_column(at, name, pa.array([ADDED_COLUMNS[name]] * table.num_rows, pa.string()))
    try:
        return table.cast(pa.schema([MANIFEST_SCHEMA.field(c) for c in want]))
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
        raise ValueError(f"manifest {path}: does not fit the schema ({_one_line(exc)})") from exc


def _read_part(workspace: Workspace, path: str, want: list[str]) -> pa.Table:
    """Columns ``want`` of one Parquet file of the manifest; ValueError naming ``path`` when it cannot be read."""

    def read(src: Any) -> tuple[pa.Table, list[str]]:
        with pq.ParquetFile(src) as pf:
            names = pf.schema_arrow.names
            return pf.read(columns=[c for c in want if c in names]), names

    try:
        if workspace.is_local:
            table, names = read(path)
        else:
            with workspace.fs.open(path, "rb") as fh:
                table, names = read(fh)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"manifest {path}: cannot read Parquet ({_one_line(exc)})") from exc
    return _conform(table, names, path, want)


def _read_parts(workspace: Workspace, paths: list[str], want: Sequence[str]) -> list[pa.Table]:
    """:func:`_read_part` of each path, in order (side by side when there are several)."""
    want = list(want)
    if len(paths) <= 2:
        return [_read_part(workspace, p, want) for p in paths]
    with ThreadPoolExecutor(min(_READ_THREADS, len(paths))) as pool:
        return list(pool.map(lambda p: _read_part(workspace, p, want), paths))


def _read_many(
    workspace: Workspace, paths: list[str], want: Sequence[str], where: dict[str, str] | None = None
) -> pa.Table:
    """The files at ``paths`` as one table (columns ``want``; only rows whose columns equal ``where``'s values), in
    order. One pass of pyarrow's dataset scanner (its own threads; the filter skips row groups by their statistics)
    when every file fits the schema; else file by file, so that the one at fault is named."""
    schema = pa.schema([MANIFEST_SCHEMA.field(c) for c in want])
    where = where or {}
    if not paths:
        return schema.empty_table()
    expression = None
    for name, value in where.items():
        term = pads.field(name) == value
        expression = term if expression is None else expression & term
    try:
        fs = None if workspace.is_local else workspace.fs
        names = paths if fs is None else [fs._strip_protocol(p) for p in paths]
        found = pads.dataset(names, schema=MANIFEST_SCHEMA, format="parquet", filesystem=fs)
        table = found.to_table(columns=list(want), filter=expression)
        if not any(column.null_count for column in table.columns):  # a missing column reads as nulls
            return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError, ValueError):
        pass  # read file by file below: the file at fault is named
    table = pa.concat_tables(_read_parts(workspace, paths, list(dict.fromkeys([*want, *where]))))
    for name, value in where.items():
        table = table.filter(pc.equal(table.column(name), value))
    return table.select(list(want))


def _write_part(workspace: Workspace, path: str, table: pa.Table) -> None:
    """Write ``table`` at ``path`` under a temporary name, then rename it into place."""
    with workspace.atomic_open(path, "wb") as fh:
        pq.write_table(table, fh, compression="zstd")


def _joined_keys(table: pa.Table) -> pa.ChunkedArray:
    """``video_id + "\\x1f" + extract_fingerprint`` per row (the unit separator appears in neither)."""
    return pc.binary_join_element_wise(table.column("video_id"), table.column("extract_fingerprint"), "\x1f")


def _key_hashes(joined: pa.ChunkedArray) -> np.ndarray:
    """Sorted unique in-process hashes of joined keys (int64 [n']); equal keys hash equal within this process."""
    return np.unique(np.fromiter((hash(k) for k in joined.to_pylist()), dtype=np.int64, count=len(joined)))


# Current part path -> the sorted hashes of its keys. Parts only ever lose rows once written and every new part has a
# new random name, so an entry is a superset of its part's keys: at worst it makes a part be read for nothing.
_KEY_HASHES: dict[str, np.ndarray] = {}
_KEY_HASHES_LOCK = threading.Lock()


def _may_hold(hashes: np.ndarray, wanted: np.ndarray) -> bool:
    """Whether sorted ``hashes`` shares a value with sorted ``wanted`` (O(len(wanted) log len(hashes)))."""
    if not len(hashes) or not len(wanted):
        return False
    at = np.minimum(np.searchsorted(hashes, wanted), len(hashes) - 1)
    return bool(np.any(hashes[at] == wanted))


def _move(workspace: Workspace, src: str, dst: str) -> None:
    if workspace.is_local:
        os.replace(src, dst)  # atomic on POSIX
    else:
        workspace.fs.mv(src, dst)


class Manifest:
    """The manifest of one dataset in a workspace: ``<root>/datasets/<dataset>/manifest.parquet`` (see the module doc)."""

    def __init__(self, workspace: Workspace, dataset: str) -> None:
        self.workspace = workspace
        self.dataset = dataset
        self.path = workspace.manifest_path(dataset)
        folder = self.path.rsplit("/", 1)[0]
        self.current_path = f"{folder}/{CURRENT_FILE}"
        self.aside_path = f"{folder}/{LEGACY_ASIDE}"

    def __repr__(self) -> str:
        return f"Manifest({self.path!r})"

    def exists(self) -> bool:
        return self.workspace.exists(self.path) or self.workspace.exists(self.aside_path)

    # -- layout ---------------------------------------------------------------------------------------------------
    def _names(self, folder: str) -> list[str]:
        """The file names in ``folder`` that readers read: not temporaries, nor hidden (``.``/``_``, as pyarrow)."""
        if not self.workspace.fs.isdir(folder):
            return []
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.workspace.fs.ls(folder, detail=False)]
        return sorted(n for n in names if not n.startswith((TMP_MARKER, ".", "_")))

    def _layout(self) -> tuple[list[_Part], list[str]]:
        """The manifest folder's live parts in append order, and the names a compacted part covers (left by a
        compaction that stopped before deleting them; readers ignore them). Another file there is refused."""
        parts = []
        for name in self._names(self.path):
            part = _parse_part(name)
            if part is None:
                raise ValueError(f"manifest {self.path}/{name}: not a manifest part (part-<seq>-<tag>.parquet)")
            parts.append(part)
        parts.sort(key=lambda p: (p.seq, p.compact, p.name))
        compacted = [p for p in parts if p.compact]
        if not compacted:
            return parts, []
        base = compacted[-1]  # the latest compaction holds every row of the parts up to its sequence number
        live = [base, *[p for p in parts if p.seq > base.seq]]
        return live, [p.name for p in parts if p not in live]

    def _sources(self) -> list[tuple[str, str | None]]:
        """(manifest part, its current part or None when it has none yet), in append order. A single-file manifest
        file is one part with no current part; so is one moved aside by a conversion that has not finished."""
        if self.workspace.fs.isfile(self.path):
            return [(self.path, None)]
        live, _ = self._layout()
        have = set(self._names(self.current_path)) if live else set()
        sources: list[tuple[str, str | None]] = [
            (f"{self.path}/{p.name}", f"{self.current_path}/{p.name}" if p.name in have else None) for p in live
        ]
        if not (live and live[0].seq == 0) and self.workspace.exists(self.aside_path):
            sources.insert(0, (self.aside_path, None))
        return sources

    def parts(self) -> list[str]:
        """The Parquet files that hold the manifest's rows, in append order (one path for a single-file manifest)."""
        return [m for m, _ in self._sources()]

    # -- reading --------------------------------------------------------------------------------------------------
    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """All rows (or only ``columns``), in append order; an empty table with the schema when there is no manifest.

        Raises ValueError naming the file when a part cannot be read or does not fit the schema.
        """
        return _read_many(self.workspace, self.parts(), list(columns or COLUMNS))

    def current(self, extract_fp: str | None = None, status: str | None = None) -> pa.Table:
        """The current view (latest row per video and fingerprint), optionally for one fingerprint and status.

        Reads the current parts, which hold disjoint keys (an append drops the keys it supersedes from the older
        ones before it writes its own). A manifest part without one (a crash between the two writes, or a single-file
        manifest) gives its own current view, and then the newest row of each key wins across the parts.
        """
        sources = self._sources()
        if all(c is not None for _, c in sources):
            where = {"extract_fingerprint": extract_fp, "status": status}
            where = {k: v for k, v in where.items() if v is not None}
            return _read_many(self.workspace, [c for _, c in sources if c is not None], COLUMNS, where)
        tables = _read_parts(self.workspace, [c or m for m, c in sources], COLUMNS)
        tables = [t if c is not None else current_view(t) for t, (_, c) in zip(tables, sources, strict=True)]
        if extract_fp is not None:  # before the newest-row pass: the fingerprint is part of the key
            tables = [t.filter(pc.equal(t.column("extract_fingerprint"), extract_fp)) for t in tables]
        table = current_view(pa.concat_tables(tables))
        if status is not None:
            table = table.filter(pc.equal(table.column("status"), status))
        return table

    def fingerprints(self) -> list[str]:
        """Extract fingerprints present, the one of the most recently appended row last."""
        column = self.read(["extract_fingerprint"]).column("extract_fingerprint").combine_chunks()
        backwards = column.take(pa.array(np.arange(len(column) - 1, -1, -1, dtype=np.int64)))
        return pc.unique(backwards).to_pylist()[::-1]  # first seen backwards = last appended

    # -- writing (one writer per dataset: the dataset's writer lock) ------------------------------------------------
    def append(self, rows: Sequence[dict[str, Any]] | pa.Table) -> pa.Table:
        """Append rows (dicts or a table with the schema) as one new part; returns the rows appended (schema order).

        Writes the part and its current part, and rewrites only the older current parts holding a row that these
        rows supersede, so the cost is the rows appended (see the module doc), not the manifest's size. Call this only
        after the shards that the rows name are in place, with the dataset's writer lock held.
        """
        new = rows if isinstance(rows, pa.Table) else rows_to_table(rows)
        new = new.select(list(COLUMNS)).cast(MANIFEST_SCHEMA)
        if new.num_rows == 0:
            return new
        self._finish_conversion()
        live, covered = self._layout()
        seq = max((p.seq for p in live), default=0) + 1  # 0 is a converted single-file manifest's
        part = _Part(seq, False, _new_part_name(seq))
        _write_part(self.workspace, f"{self.path}/{part.name}", new)  # the commit: readers see the rows from here on
        self._sync_current([*live, part], covered, {part.name: new})
        return new

    def _finish_conversion(self) -> None:
        """Turn a single-file manifest file into part 0 of the folder. Each step leaves a state readers read and that a
        later call finishes: the file moved aside (read as part 0), part 0 written (the aside file then ignored)."""
        fs = self.workspace.fs
        if fs.isfile(self.current_path):
            fs.rm(self.current_path)  # a single-file current view: the current parts replace it (derived, not history)
        if fs.isfile(self.path):
            _move(self.workspace, self.path, self.aside_path)
        if not self.workspace.exists(self.aside_path):
            return
        live, _ = self._layout()
        if not (live and live[0].seq == 0):
            (table,) = _read_parts(self.workspace, [self.aside_path], COLUMNS)  # conformed: added columns filled
            _write_part(self.workspace, f"{self.path}/{_new_part_name(0)}", table)
        fs.rm(self.aside_path)

    def _sync_current(self, live: list[_Part], covered: list[str], known: dict[str, pa.Table]) -> None:
        """Make ``current.parquet/`` hold one part per live manifest part, under its name, with that part's rows that
        no later part supersedes: write the missing ones in order (normally only the one just appended; more after a
        crash), each after dropping the rows it supersedes from the older ones. Remove parts a compaction covers."""
        ws = self.workspace
        names = [p.name for p in live]
        have = set(self._names(self.current_path))
        for stale in sorted(have - set(names)):  # covered by a compaction, or a compaction's unfinished part
            ws.fs.rm(f"{self.current_path}/{stale}")
            with _KEY_HASHES_LOCK:
                _KEY_HASHES.pop(f"{self.current_path}/{stale}", None)
        for name in covered:
            ws.fs.rm(f"{self.path}/{name}")
        for i, name in enumerate(names):
            if name in have:
                continue
            if name in known:
                table = known[name]
            else:
                (table,) = _read_parts(ws, [f"{self.path}/{name}"], COLUMNS)
            view = current_view(table)
            self._drop_superseded(view, [n for n in names[:i] if n in have])
            path = f"{self.current_path}/{name}"
            _write_part(ws, path, view)
            with _KEY_HASHES_LOCK:
                _KEY_HASHES[path] = _key_hashes(_joined_keys(view))
            have.add(name)

    def _drop_superseded(self, view: pa.Table, older: list[str]) -> None:
        """Rewrite the current parts named ``older`` that hold a key of ``view`` without those rows (an emptied part
        stays, empty). Only parts whose key hashes may match are read; the hashes are kept per process."""
        if not older or view.num_rows == 0:
            return
        joined = _joined_keys(view)
        wanted = _key_hashes(joined)
        paths = [f"{self.current_path}/{n}" for n in older]
        self._learn_keys(paths)
        for path in paths:
            with _KEY_HASHES_LOCK:
                hashes = _KEY_HASHES[path]
            if not _may_hold(hashes, wanted):
                continue
            (table,) = _read_parts(self.workspace, [path], COLUMNS)
            kept = table.filter(pc.invert(pc.is_in(_joined_keys(table), value_set=joined.combine_chunks())))
            if kept.num_rows < table.num_rows:
                _write_part(self.workspace, path, kept)
            with _KEY_HASHES_LOCK:
                _KEY_HASHES[path] = _key_hashes(_joined_keys(kept))

    def _learn_keys(self, paths: list[str]) -> None:
        """Read the key columns of the current parts this process has no hashes of yet (once per part)."""
        with _KEY_HASHES_LOCK:
            unknown = [p for p in paths if p not in _KEY_HASHES]
        for path, table in zip(unknown, _read_parts(self.workspace, unknown, KEY), strict=True):
            hashes = _key_hashes(_joined_keys(table))
            with _KEY_HASHES_LOCK:
                _KEY_HASHES[path] = hashes

    def compact(self, *, wait_s: float = 0.0, lock: bool = True) -> int:
        """Merge the manifest's parts into one (and its current parts into one exact current view); returns how many
        parts were merged (0: nothing to do). ``read()`` and ``current()`` give the same rows before and after.

        Takes the dataset's writer lock (waiting up to ``wait_s``; ``lock=False`` when the caller holds it). The
        merged current part is written first, then the merged manifest part (the commit: from then on it covers every
        part up to its sequence number), then the covered parts are deleted; a crash leaves what readers ignore.
        """
        if not lock:
            return self._compact()
        with dataset_lock(self.workspace, self.dataset, owner=f"compact {self.dataset}", wait_s=wait_s):
            return self._compact()

    def _compact(self) -> int:
        if not self.exists():
            return 0
        self._finish_conversion()
        live, covered = self._layout()
        if len(live) <= 1 and not covered:
            self._sync_current(live, covered, {})
            return 0
        history, current = self.read(), self.current()
        name = _new_part_name(live[-1].seq, compact=True)
        _write_part(self.workspace, f"{self.current_path}/{name}", current)
        _write_part(self.workspace, f"{self.path}/{name}", history)
        self._sync_current(*self._layout(), {})
        return len(live)


def forget_part_keys() -> None:
    """Forget the key hashes this process keeps of current parts, as a new process starts (for benchmarks)."""
    with _KEY_HASHES_LOCK:
        _KEY_HASHES.clear()
