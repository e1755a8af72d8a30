"""Content hashes: streamed sha256 of files (local or fsspec) and stable fingerprints of tables.

The sha256 of a source video is what the manifest compares to decide whether a video changed; the table
fingerprint is what names a dataset's content (training run ids are derived from it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import fsspec
import pyarrow as pa

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
