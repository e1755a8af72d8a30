"""The dataset manifest: one Parquet file per dataset, one row per video and extraction (README "Datasets").

The file is plain Parquet with an explicit schema, so pandas or DuckDB read it without mmcaps::

    pandas.read_parquet("<root>/datasets/<ds>/manifest.parquet")
    duckdb.sql("select status, count(*) from '<root>/datasets/<ds>/manifest.parquet' group by status")

Rows are only ever appended (history is kept). The *current* view keeps, for each ``(video_id,
extract_fingerprint)``, the row appended last: when a video's bytes change, its new row supersedes the old one.
Appending rewrites the whole file atomically (temporary name, then rename), so a reader sees the old manifest
or the new one. There is one writer per dataset at a time (the engine's run); concurrent appends are not merged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.workspace import Workspace

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
    """The last-appended row for each ``(video_id, extract_fingerprint)``, in append order."""
    if table.num_rows == 0:
        return table
    ids = table.column("video_id").to_pylist()
    fps = table.column("extract_fingerprint").to_pylist()
    latest: dict[tuple[str, str], int] = {}
    for i, pair in enumerate(zip(ids, fps, strict=True)):
        latest[pair] = i
    return table.take(sorted(latest.values()))


def _add_missing_columns(table: pa.Table) -> pa.Table | None:
    """A manifest written by an earlier mmcaps (a subset of the columns: the others of :data:`ADDED_COLUMNS`) with
    those columns added at their places, each row with the column's empty value; None when it is not such a one."""
    names = table.schema.names
    missing = [c for c in COLUMNS if c not in names]
    if not missing or set(missing) - set(ADDED_COLUMNS) or [c for c in COLUMNS if c in names] != names:
        return None
    for name in missing:
        at = list(COLUMNS).index(name)
        table = table.add_column(at, name, pa.array([ADDED_COLUMNS[name]] * table.num_rows, pa.string()))
    return table


class Manifest:
    """The manifest of one dataset in a workspace: ``<root>/datasets/<dataset>/manifest.parquet``."""

    def __init__(self, workspace: Workspace, dataset: str) -> None:
        self.workspace = workspace
        self.dataset = dataset
        self.path = workspace.manifest_path(dataset)

    def __repr__(self) -> str:
        return f"Manifest({self.path!r})"

    def exists(self) -> bool:
        return self.workspace.exists(self.path)

    def read(self) -> pa.Table:
        """All rows, in append order (an empty table with the schema when there is no manifest yet)."""
        if not self.exists():
            return empty_manifest()
        try:
            with self.workspace.fs.open(self.path, "rb") as fh:
                table = pq.read_table(fh)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ValueError(f"manifest {self.path}: cannot read Parquet ({exc})") from exc
        if table.schema.names != list(COLUMNS):
            table = _add_missing_columns(table) or table  # written by an earlier mmcaps
        if table.schema.names != list(COLUMNS):
            raise ValueError(f"manifest {self.path}: columns {table.schema.names}, expected {list(COLUMNS)}")
        try:
            return table.cast(MANIFEST_SCHEMA)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
            raise ValueError(f"manifest {self.path}: does not fit the schema ({exc})") from exc

    def append(self, rows: Sequence[dict[str, Any]] | pa.Table) -> pa.Table:
        """Append rows (dicts or a table with the schema) and rewrite the file atomically; returns the new table.

        Call this only after the shards that the rows name are in place.
        """
        new = rows if isinstance(rows, pa.Table) else rows_to_table(rows)
        if new.num_rows == 0:
            return self.read()
        new = new.select(list(COLUMNS)).cast(MANIFEST_SCHEMA)
        table = pa.concat_tables([self.read(), new])
        with self.workspace.atomic_open(self.path, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
        # The current view beside the history, for queries (DuckDB, pandas) that want what the dataset holds now.
        with self.workspace.atomic_open(self.current_path, "wb") as fh:
            pq.write_table(current_view(table), fh, compression="zstd")
        return table

    @property
    def current_path(self) -> str:
        return f"{self.path.rsplit('/', 1)[0]}/{CURRENT_FILE}"

    def current(self, extract_fp: str | None = None, status: str | None = None) -> pa.Table:
        """The current view (latest row per video and fingerprint), optionally for one fingerprint and status."""
        table = current_view(self.read())
        if extract_fp is not None:
            table = table.filter(pc.equal(table.column("extract_fingerprint"), extract_fp))
        if status is not None:
            table = table.filter(pc.equal(table.column("status"), status))
        return table

    def fingerprints(self) -> list[str]:
        """Extract fingerprints present, the one of the most recently appended row last."""
        fps = self.read().column("extract_fingerprint").to_pylist()
        order: dict[str, int] = {}
        for i, fp in enumerate(fps):
            order[fp] = i
        return sorted(order, key=order.__getitem__)
