"""Reading an extracted dataset (the current ok rows of one extract fingerprint, their shards, their samples);
deleting one (:func:`remove_dataset`, ``mmcaps rm``) and freeing the store's bytes that no dataset references
(:func:`collect_garbage`, ``mmcaps gc``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pyarrow as pa
import yaml

from storage.features import EntryId, FeatureStore, Location, index_shard, read_index, write_index
from storage.hashing import table_fingerprint
from storage.locks import LOCK_NAME, dataset_lock
from storage.manifest import Manifest
from storage.sample import VideoFeatures
from storage.shards import iter_shard
from storage.workspace import TMP_MARKER, Workspace, safe_name

CONFIG_FILE = "extract-config.yaml"  # the full extract config, beside the shards of its fingerprint

# What names a dataset's content: which videos, which bytes, which extraction, and the caption count (a caption
# change re-extracts a video with the same bytes).
FINGERPRINT_COLUMNS = ("video_id", "sha256", "extract_fingerprint", "n_captions", "captions_sha256")


class Dataset:
    """The ok videos of one dataset for one extract fingerprint (the manifest's current view).

    ``manifest``: pyarrow.Table of the current ok rows (schema ``MANIFEST_SCHEMA``); ``shards``: full paths of the
    shards that hold them; ``iter_videos()`` reads exactly those samples (an old version of a re-extracted video
    that still sits in an older shard is skipped).
    """

    def __init__(self, workspace: Workspace, name: str, extract_fp: str, manifest: pa.Table) -> None:
        self.workspace = workspace
        self.name = name
        self.extract_fp = extract_fp
        self.manifest = manifest
        self.dataset_dir = workspace.dataset_dir(name)
        shard_rel = manifest.column("shard").to_pylist()
        self.shards: list[str] = [f"{self.dataset_dir}/{s}" for s in dict.fromkeys(sorted(shard_rel))]

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, fp={self.extract_fp}, videos={self.num_videos}, shards={len(self.shards)})"

    @property
    def num_videos(self) -> int:
        return self.manifest.num_rows

    @property
    def hours(self) -> float:
        return float(sum(self.manifest.column("duration_s").to_pylist())) / 3600.0

    @property
    def video_ids(self) -> list[str]:
        return self.manifest.column("video_id").to_pylist()

    @cached_property
    def fingerprint(self) -> str:
        """A hash of the current ok rows' (video_id, sha256, extract fingerprint, caption count), order-free."""
        return table_fingerprint(self.manifest, FINGERPRINT_COLUMNS)

    @property
    def config_path(self) -> str:
        return f"{self.workspace.shard_dir(self.name, self.extract_fp)}/{CONFIG_FILE}"

    @cached_property
    def extract_config(self) -> dict[str, Any]:
        """The extract config stored beside the shards, as plain data (``ExtractConfig.model_validate`` reads it).

        Raises FileNotFoundError / ValueError naming the file when it is missing or not a YAML mapping.
        """
        try:
            data = yaml.safe_load(self.workspace.read_bytes(self.config_path).decode("utf-8")) or {}
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{self.config_path}: extract config missing") from exc
        except yaml.YAMLError as exc:
            raise ValueError(f"{self.config_path}: not valid YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{self.config_path}: not a YAML mapping")
        return data

    def iter_videos(self) -> Iterator[VideoFeatures]:
        """Decode every current ok video, shard by shard in file order. Errors name the shard and the member.

        Raises ValueError when a shard lacks a video the manifest places in it.
        """
        wanted: dict[str, dict[str, tuple[str, str]]] = {}
        for row in self.manifest.select(["video_id", "sha256", "shard"]).to_pylist():
            key = safe_name(row["video_id"], what="video id")
            wanted.setdefault(f"{self.dataset_dir}/{row['shard']}", {})[key] = (row["video_id"], row["sha256"])
        for shard in self.shards:
            expect = wanted[shard]
            seen = set()
            for raw in iter_shard(shard, self.workspace.fs):
                key = raw["__key__"]
                if key not in expect:
                    continue
                meta = json.loads(raw.get("meta.json", b"{}"))
                if meta.get("sha256") != expect[key][1]:
                    continue  # an older extraction of this video (its bytes changed since); the current one is elsewhere
                seen.add(key)
                yield VideoFeatures.from_sample(raw, where=f"shard {shard}")
            missing = sorted(set(expect) - seen)
            if missing:
                raise ValueError(f"shard {shard}: lacks videos the manifest places there: {missing[:5]}")


def unreferenced_shards(workspace: Workspace, dataset: str) -> list[str]:
    """Shards that no manifest row names (a run died between renaming a shard and appending the manifest)."""
    root = workspace.dataset_dir(dataset)
    if not workspace.exists(f"{root}/shards"):
        return []
    named = set(Manifest(workspace, dataset).read().column("shard").to_pylist())
    found = [p for p in workspace.fs.find(f"{root}/shards") if p.endswith(".tar")]
    stripped_root = workspace.fs._strip_protocol(root)
    return sorted(p for p in found if p[len(stripped_root) + 1 :] not in named)


def open_dataset(workspace: Workspace, name: str, extract_fp: str | None = None) -> Dataset:
    """Open dataset ``name``: the current ok rows of ``extract_fp`` (default: the fingerprint extracted last).

    Raises FileNotFoundError when the dataset has no manifest, KeyError when it has no rows for ``extract_fp``.
    """
    manifest = Manifest(workspace, name)
    if not manifest.exists():
        raise FileNotFoundError(f"dataset {name!r}: no manifest at {manifest.path} (run mmcaps extract first)")
    fps = manifest.fingerprints()
    if extract_fp is None:
        if not fps:
            raise KeyError(f"dataset {name!r}: the manifest is empty")
        extract_fp = fps[-1]
    elif extract_fp not in fps:
        raise KeyError(f"dataset {name!r}: no videos with extract fingerprint {extract_fp!r} (has {fps})")
    return Dataset(workspace, name, extract_fp, manifest.current(extract_fp, status="ok"))


def inspect_dataset(workspace: Workspace, name: str) -> dict[str, Any]:
    """Counts per extract fingerprint (current view): videos by status, hours, captions, shards and their bytes,
    the dataset fingerprint, and the failures with their errors. Plain JSON-able values, latest fingerprint last.
    """
    manifest = Manifest(workspace, name)
    if not manifest.exists():
        raise FileNotFoundError(f"dataset {name!r}: no manifest at {manifest.path} (run mmcaps extract first)")
    table = manifest.read()
    report: dict[str, Any] = {
        "dataset": name,
        "manifest": manifest.path,
        "rows": table.num_rows,
        "fingerprints": [],
        "unreferenced_shards": unreferenced_shards(workspace, name),
    }
    for fp in manifest.fingerprints():
        rows = manifest.current(fp).to_pylist()
        ok = [r for r in rows if r["status"] == "ok"]
        ds = Dataset(workspace, name, fp, manifest.current(fp, status="ok"))
        sizes = [workspace.fs.size(s) if workspace.exists(s) else 0 for s in ds.shards]
        report["fingerprints"].append(
            {
                "extract_fingerprint": fp,
                "ok": len(ok),
                "failed": sum(r["status"] == "failed" for r in rows),
                "skipped": sum(r["status"] == "skipped" for r in rows),
                "hours": sum(r["duration_s"] for r in ok) / 3600.0,
                "captions": sum(r["n_captions"] for r in ok),
                "with_audio": sum(bool(r["has_audio"]) for r in ok),
                "shards": len(ds.shards),
                "shard_bytes": int(sum(sizes)),
                "missing_shards": [s for s, n in zip(ds.shards, sizes, strict=True) if n == 0],
                "dataset_fingerprint": ds.fingerprint if ok else "",
                "failures": [(r["video_id"], r["error"]) for r in rows if r["status"] == "failed"],
                "warnings": [(r["video_id"], r["warning"]) for r in rows if r["warning"]],
                "extract_config": ds.extract_config if workspace.exists(ds.config_path) else {},
            }
        )
    return report


# -- deleting a dataset; collecting what no dataset references ------------------------------------------------------
def list_datasets(workspace: Workspace) -> list[str]:
    """The dataset folders of the workspace (``datasets/<name>/``), sorted."""
    root = workspace.join("datasets")
    if not workspace.exists(root):
        return []
    found = workspace.fs.ls(root, detail=True)
    names = (str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in found if e.get("type") == "directory")
    return sorted(n for n in names if n and safe_name(n) == n)


@contextmanager
def all_dataset_locks(workspace: Workspace, owner: str, wait_s: float = 0.0) -> Iterator[list[str]]:
    """Hold the writer lock of every dataset (sorted, so two holders never deadlock), listing again until no new
    dataset appeared; yields the names. Deleting arrays that any writer may be copying needs them all: a writer of
    dataset B composes its samples from dataset A's shards. Raises LockBusy naming a live writer (after ``wait_s``)."""
    with ExitStack() as stack:
        held: set[str] = set()
        while new := [n for n in list_datasets(workspace) if n not in held]:
            for name in new:
                stack.enter_context(dataset_lock(workspace, name, owner=owner, wait_s=wait_s))
                held.add(name)
        yield sorted(held)


def named_shards(workspace: Workspace, dataset: str) -> list[str]:
    """Full paths of the shards that the dataset's manifest names (any row, history included) and that exist."""
    manifest = Manifest(workspace, dataset)
    if not manifest.exists():
        return []
    named = set(manifest.read(columns=["shard"]).column("shard").to_pylist()) - {""}
    root = workspace.dataset_dir(dataset)
    return [p for p in sorted(f"{root}/{s}" for s in named) if workspace.exists(p)]


def shard_entries(workspace: Workspace, shard: str) -> list[dict[str, Any]]:
    """The store entries a shard holds: its index, or (a shard of an earlier mmcaps) what its headers say."""
    rows = read_index(workspace, shard)
    return rows if rows is not None else index_shard(workspace, shard)


def _holders(
    workspace: Workspace,
    datasets: Iterable[str],
    wanted: set[EntryId] | None,
    unindexed: list[str] | None = None,
    *,
    write: bool = False,
) -> dict[EntryId, Location]:
    """A shard location of each store entry (of ``wanted``, or all) that the named shards of ``datasets`` hold.
    Shards without an index (of an earlier mmcaps) are indexed from their headers: listed in ``unindexed`` when it
    is given, and their index written beside them when ``write``."""
    found: dict[EntryId, Location] = {}
    for name in datasets:
        for shard in named_shards(workspace, name):
            rows = read_index(workspace, shard)
            if rows is None:
                rows = index_shard(workspace, shard)
                if unindexed is not None:
                    unindexed.append(shard)
                if write:
                    write_index(workspace, shard, rows)
            rel = shard[len(workspace.root) + 1 :]
            for row in rows:
                entry = (row["stream"], row["fingerprint"], row["entry"])
                if wanted is None or entry in wanted:
                    found.setdefault(entry, Location(rel, int(row["offset"]), int(row["size"])))
    return found


def _size(workspace: Workspace, path: str) -> int:
    try:
        return int(workspace.fs.size(path))
    except FileNotFoundError:
        return 0


@dataclass
class Removal:
    """What ``remove_dataset`` deleted (or, with ``dry_run``, would delete)."""

    dataset: str
    files: list[str] = field(default_factory=list)  # the dataset's own files: shards, indexes, manifest parts...
    freed: list[EntryId] = field(default_factory=list)  # store entries that no other dataset holds: deleted
    moved: list[EntryId] = field(default_factory=list)  # entries now naming another dataset's copy of their array
    bytes_freed: int = 0
    dry_run: bool = False


def remove_dataset(workspace: Workspace, dataset: str, *, dry_run: bool = False, wait_s: float = 0.0) -> Removal:
    """Delete dataset ``dataset``: its folder, and the store entries whose arrays no other dataset holds; an entry
    another dataset's shards also hold is pointed at that copy. Holds every dataset's writer lock throughout.

    Raises FileNotFoundError when there is no such dataset, LockBusy when a writer is busy (after ``wait_s``).
    """
    root = workspace.dataset_dir(dataset)
    if not workspace.exists(root):
        raise FileNotFoundError(f"dataset {dataset!r}: no such dataset ({root})")
    report = Removal(safe_name(dataset, what="dataset name"), dry_run=dry_run)
    with all_dataset_locks(workspace, owner=f"rm {dataset}", wait_s=wait_s) as names:
        store = FeatureStore(workspace)
        files = [p for p in sorted(workspace.fs.find(root)) if p.rsplit("/", 1)[-1] != LOCK_NAME]
        held: set[EntryId] = set()
        for shard in (p for p in files if p.endswith(".tar") and TMP_MARKER not in p.rsplit("/", 1)[-1]):
            held |= {(r["stream"], r["fingerprint"], r["entry"]) for r in shard_entries(workspace, shard)}
        others = _holders(workspace, [n for n in names if n != report.dataset], held)
        mine = root[len(workspace.root) + 1 :] + "/"
        for entry in sorted(held):
            try:
                at = store.location(*entry)
            except FileNotFoundError:
                continue
            if at is not None and not at.shard.startswith(mine) and store.shard_exists(at.shard):
                continue  # it names another dataset's copy already
            if entry in others and (at is not None or store.holds_same(*entry, others[entry])):
                report.moved.append(entry)
                report.bytes_freed += _size(workspace, store.array_path(*entry))
                if not dry_run:
                    store.locate(*entry, others[entry])
            else:
                report.freed.append(entry)
                report.bytes_freed += _size(workspace, store.meta_path(*entry))
                report.bytes_freed += _size(workspace, store.array_path(*entry))
                if not dry_run:
                    store.forget(*entry)
        report.files = files
        report.bytes_freed += sum(_size(workspace, p) for p in files)
        if not dry_run and files:
            workspace.fs.rm(files)  # entries name none of them now; the lock file goes when it is released
    if not dry_run:
        _remove_empty_folders(workspace, root)
    return report


def _remove_empty_folders(workspace: Workspace, root: str) -> None:
    """Remove the folders left empty under ``root`` (and it): only empty ones, as a writer may have started since."""
    if not workspace.is_local:
        return  # an object store has no folders
    for folder, _, _ in sorted(os.walk(root), key=lambda w: -len(w[0])):
        with suppress(OSError):
            os.rmdir(folder)


@dataclass
class Collection:
    """What ``collect_garbage`` did (or, with ``dry_run``, would do)."""

    removed: list[tuple[str, str]] = field(default_factory=list)  # (path, why): files deleted
    located: list[EntryId] = field(default_factory=list)  # entries whose .npy a dataset's shard holds: .npy deleted
    moved: list[EntryId] = field(default_factory=list)  # entries whose shard is gone, now naming another copy
    indexed: list[str] = field(default_factory=list)  # shards (of an earlier mmcaps) given the index they lacked
    kept: int = 0  # entries kept: a live dataset holds them, or a run's extraction younger than the grace period
    bytes_freed: int = 0
    dry_run: bool = False


def _age_s(workspace: Workspace, path: str, now: float) -> float:
    try:
        return now - workspace.fs.modified(path).timestamp()
    except (FileNotFoundError, NotImplementedError):
        return 0.0


def collect_garbage(
    workspace: Workspace, *, dry_run: bool = False, grace_s: float = 86400.0, wait_s: float = 0.0
) -> Collection:
    """Free the store's bytes that no dataset needs, holding every dataset's writer lock:

    - an entry's ``.npy`` that a dataset's shard holds byte for byte (a store of an earlier mmcaps; a publication
      interrupted before it located its entries) is deleted and the entry names the shard;
    - an entry naming a shard that is gone names another dataset's copy, or is deleted when there is none;
    - an entry that no dataset holds (its ``.npy`` only) and a stray array or temporary are deleted once older than
      ``grace_s``: younger ones are a running or interrupted extraction's, which the next run publishes.

    Shards of an earlier mmcaps get the index they lack. ``dry_run`` changes nothing and reports the same.
    """
    report = Collection(dry_run=dry_run)
    now = time.time()
    with all_dataset_locks(workspace, owner="gc", wait_s=wait_s) as names:
        store = FeatureStore(workspace)
        holders = _holders(workspace, names, None, report.indexed, write=not dry_run)
        exts: dict[EntryId, set[str]] = {}
        for path, entry in store.files():
            if entry is None:
                if _age_s(workspace, path, now) > grace_s:
                    _drop(workspace, report, path, "not an entry (a temporary)")
                continue
            exts.setdefault(entry, set()).add(path.rsplit(".", 1)[-1])
        for entry, kinds in sorted(exts.items()):
            _collect_entry(store, entry, kinds, holders.get(entry), report, grace_s, now)
    return report


def _drop(workspace: Workspace, report: Collection, path: str, why: str) -> None:
    report.removed.append((path, why))
    report.bytes_freed += _size(workspace, path)
    if not report.dry_run:
        with suppress(FileNotFoundError):
            workspace.fs.rm(path)


def _collect_entry(
    store: FeatureStore,
    entry: EntryId,
    kinds: set[str],
    holder: Location | None,
    report: Collection,
    grace_s: float,
    now: float,
) -> None:
    """gc of one entry (see :func:`collect_garbage`); ``kinds`` are the files it has (``json``, ``npy``)."""
    ws, npy, meta = store.workspace, store.array_path(*entry), store.meta_path(*entry)
    if "json" not in kinds:  # an array whose entry was never written (a crash between the two writes)
        if _age_s(ws, npy, now) > grace_s:
            _drop(ws, report, npy, "an array without its entry")
        return
    at = store.location(*entry)
    if at is not None and store.shard_exists(at.shard):
        if "npy" in kinds:
            _drop(ws, report, npy, f"a copy of what {at.shard} holds")
        report.kept += 1
        return
    if holder is not None and (at is not None or store.holds_same(*entry, holder)):
        (report.moved if at is not None else report.located).append(entry)
        report.bytes_freed += _size(ws, npy)
        if not report.dry_run:
            store.locate(*entry, holder)
        report.kept += 1
        return
    if at is None and _age_s(ws, meta, now) <= grace_s:
        report.kept += 1  # a run's extraction that no shard holds yet
        return
    why = f"its shard {at.shard} is gone" if at is not None else "no dataset holds it"
    for path in (meta, npy) if "npy" in kinds else (meta,):
        _drop(ws, report, path, why)
