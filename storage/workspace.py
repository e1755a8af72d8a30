"""The workspace: one root folder (local path or fsspec URL) that holds every artifact mmcaps writes.

Layout (storage/README.md)::

    <root>/features/<stream>/<stream-fp>/<key[:2]>/<key>.json        a stream's entry by content: where a shard holds
                                                                      its array (storage.features); .npy until then
    <root>/datasets/<dataset>/manifest.parquet/part-<seq>-<tag>.parquet    every row, one immutable part per append
    <root>/datasets/<dataset>/current.parquet/part-<seq>-<tag>.parquet     the current view (storage.manifest)
    <root>/datasets/<dataset>/shards/<extract-fp>/<dataset>-<run>-<n:06d>.tar   (and .index.parquet: its entries)
    <root>/models/<run-id>/...                                        a training run (pipeline.runs.RunFolder)
    <root>/evals/<run-id>/<eval-dataset>/{metrics.json, per_query.parquet, report.html, *.png}
    <root>/cache/...

Names that come from users or data (dataset names, video ids, run ids) pass through :func:`safe_name`,
so none of them can address a path outside the root.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from storage.counting import url_to_fs

DEFAULT_ROOT = "./mmcaps-data"
ENV_ROOT = "MMCAPS_HOME"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
TMP_MARKER = ".tmp-"


def safe_name(name: str, *, what: str = "name") -> str:
    """Map ``name`` to ``[A-Za-z0-9_-]+`` (other characters become ``_``); never empty, never a path.

    >>> safe_name("../etc/passwd")
    '___etc_passwd'
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} must be a non-empty string, got {name!r}")
    return _UNSAFE.sub("_", name)


def resolve_root(root: str | os.PathLike[str] | None = None) -> str:
    """The workspace root: the argument, else ``$MMCAPS_HOME``, else ``./mmcaps-data`` (made absolute)."""
    chosen = str(root) if root is not None else os.environ.get(ENV_ROOT, DEFAULT_ROOT)
    if "://" in chosen and not chosen.startswith("file://"):
        return chosen.rstrip("/")
    if chosen.startswith("file://"):
        chosen = chosen[len("file://") :]
    return str(Path(chosen).expanduser().resolve())


class Workspace:
    """Paths and atomic writes under one root. Local by default; any fsspec URL (``s3://bucket/prefix``)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = resolve_root(root)
        self.fs, _ = url_to_fs(self.root)  # counted inside a storage.counting.count_requests block (bench, tests)
        self.is_local = "://" not in self.root

    def __repr__(self) -> str:
        return f"Workspace({self.root!r})"

    # -- layout ---------------------------------------------------------------------------------
    def join(self, *parts: str) -> str:
        """Join path parts under the root (parts are trusted layout names, not user input)."""
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    def dataset_dir(self, dataset: str) -> str:
        return self.join("datasets", safe_name(dataset, what="dataset name"))

    def manifest_path(self, dataset: str) -> str:
        return self.join("datasets", safe_name(dataset, what="dataset name"), "manifest.parquet")

    def shard_dir(self, dataset: str, extract_fp: str) -> str:
        return self.join("datasets", safe_name(dataset, what="dataset name"), "shards", safe_name(extract_fp))

    def model_dir(self, run_id: str) -> str:
        return self.join("models", safe_name(run_id, what="run id"))

    def eval_dir(self, run_id: str, eval_dataset: str, checkpoint: str = "final") -> str:
        """``evals/<run>/<name>/`` for the run's final.pt, ``evals/<run>/@<checkpoint>/<name>/`` for another one
        (``@`` cannot start a safe name, so a checkpoint folder never collides with a benchmark's)."""
        parts = ["evals", safe_name(run_id, what="run id")]
        if checkpoint != "final":
            parts.append("@" + safe_name(checkpoint, what="checkpoint"))
        return self.join(*parts, safe_name(eval_dataset, what="eval dataset"))

    def cache_dir(self, *parts: str) -> str:
        return self.join("cache", *[safe_name(p) for p in parts])

    def local_path(self, path: str) -> Path:
        """``path`` as a local :class:`Path`; raises for remote workspaces (for libraries that need files)."""
        if not self.is_local:
            raise ValueError(f"{path} is not on the local file system (workspace {self.root})")
        return Path(path)

    # -- writes ---------------------------------------------------------------------------------
    def makedirs(self, path: str) -> None:
        self.fs.makedirs(path, exist_ok=True)

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    @contextmanager
    def atomic_open(self, path: str, mode: str = "wb") -> Iterator[IO]:
        """Write to a temporary sibling, then rename onto ``path``; on error the temporary is removed.

        Readers never see a half-written file: they see the old file or the complete new one.
        """
        parent = path.rsplit("/", 1)[0]
        self.makedirs(parent)
        name = path.rsplit("/", 1)[1]
        tmp = f"{parent}/{TMP_MARKER}{uuid.uuid4().hex[:8]}-{name}"
        try:
            with self.fs.open(tmp, mode) as fh:
                yield fh
                if self.is_local:
                    fh.flush()
                    os.fsync(fh.fileno())
            if self.is_local:
                os.replace(tmp, path)  # atomic on POSIX, also over an existing file
            else:
                self.fs.mv(tmp, path)  # object stores publish an object only once it is whole
        except BaseException:
            try:
                if self.fs.exists(tmp):
                    self.fs.rm(tmp)
            finally:
                raise

    def write_bytes(self, path: str, data: bytes) -> None:
        with self.atomic_open(path, "wb") as fh:
            fh.write(data)

    def write_text(self, path: str, text: str) -> None:
        self.write_bytes(path, text.encode("utf-8"))

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open(path, "rb") as fh:
            return fh.read()

    def remove_temporaries(self, folder: str) -> list[str]:
        """Delete temporaries a crashed writer left in ``folder`` (recursively); return what was removed."""
        if not self.exists(folder):
            return []
        removed = []
        for path in self.fs.find(folder):
            if path.rsplit("/", 1)[-1].startswith(TMP_MARKER):
                self.fs.rm(path)
                removed.append(path)
        return removed
