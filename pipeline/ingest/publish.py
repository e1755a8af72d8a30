"""The writing end of an ingest run: stored features → samples → shards (atomic) → manifest rows, and the summary.

Durability: a video's arrays are in the feature store (each entry complete or absent) before its record exists;
shards are renamed into place before the manifest names them, and the manifest names them before a store entry does
(the entry's ``.npy`` is deleted only then: each array is stored once, in the shards). A crash leaves temporaries (swept by the next run's
:func:`recover`) and store entries that the next run reads instead of computing again; never a half shard that the
manifest names.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from pipeline.ingest.records import ExtractRecord, IngestPlan, IngestSummary, Tally, new_run_id
from storage.dataset import CONFIG_FILE, open_dataset
from storage.features import (
    STREAMS,
    EntryId,
    FeatureStore,
    Location,
    StreamArrays,
    index_rows,
    stream_order,
    write_index,
)
from storage.manifest import Manifest
from storage.sample import Captions, VideoFeatures
from storage.shards import ShardWriter
from storage.workspace import Workspace, safe_name

log = logging.getLogger(__name__)

DEFAULT_MAX_COUNT = 1000  # videos per shard, and per publication of shards and manifest rows
DEFAULT_MAX_BYTES = 512 << 20  # ~5 MB per HowTo100M video → ~100 videos per shard at this bound


class RecipeFile(Protocol):
    """What is written beside a dataset's shards as ``extract-config.yaml`` (``ExtractConfig`` is one)."""

    def fingerprint(self) -> str: ...

    def to_yaml(self) -> str: ...


def recover(workspace: Workspace, dataset: str) -> list[str]:
    """Sweep the temporaries a crashed writer left in the dataset's folder; returns what was removed. Call it with
    the dataset's writer lock held: a live writer's temporaries are its work in progress.

    Nothing else needs recovering: finished extractions are in the feature store, and the next plan lists their
    videos again, which then cost no computation.
    """
    root = workspace.dataset_dir(dataset)
    removed = workspace.remove_temporaries(root)
    if workspace.exists(f"{root}/staging"):
        log.warning(
            "%s/staging: finished extractions of an interrupted run of mmcaps before 0.2; they are not read "
            "(the feature store replaces them): delete the folder",
            root,
        )
    return removed


def write_text_once(workspace: Workspace, path: str, text: str) -> str:
    """Write ``text`` at ``path`` unless it holds it already (a re-run leaves the file's time alone)."""
    if not workspace.exists(path) or workspace.read_bytes(path).decode("utf-8") != text:
        workspace.write_text(path, text)
    return path


def write_extract_config(workspace: Workspace, dataset: str, config: RecipeFile) -> str:
    """Store the full extract config as YAML beside its shards (``shards/<fp>/extract-config.yaml``)."""
    path = f"{workspace.shard_dir(dataset, config.fingerprint())}/{CONFIG_FILE}"
    return write_text_once(workspace, path, config.to_yaml())


def _compose(record: ExtractRecord, store: FeatureStore) -> tuple[VideoFeatures, dict[str, StreamArrays]]:
    """The dataset sample of an ok record and the store entries it was composed from."""
    keys = record.store_keys()
    entries = {s: store.get(s, record.stream_fingerprints[s], keys[s]) for s in stream_order([*STREAMS, *keys])}
    text_meta = dict(entries["text"].meta)
    captions = Captions.from_json(text_meta.pop("captions", {}))
    metas = {s: e.meta for s, e in entries.items()}
    metas["text"] = text_meta
    identity = {
        "source": record.source,
        "sha256": record.sha256,
        "size_bytes": int(record.size_bytes),
        "extract_fingerprint": record.extract_fingerprint,
        "stream_fingerprints": dict(record.stream_fingerprints),
    }
    features = VideoFeatures.from_streams(
        video_id=record.video_id,
        captions=captions,
        arrays={s: e.array for s, e in entries.items()},
        metas=metas,
        identity=identity,
    )
    return features, entries


def compose_sample(record: ExtractRecord, workspace: Workspace) -> VideoFeatures:
    """The dataset sample of an ok record, from the feature store (the one place a sample is composed): arrays
    from the store's ``.npy`` files, or by ranged reads from the shards of the datasets that hold them."""
    return _compose(record, FeatureStore(workspace))[0]


def _relative(workspace: Workspace, dataset: str, path: str) -> str:
    return path[len(workspace.dataset_dir(dataset)) + 1 :]


def _next_index(workspace: Workspace, folder: str, prefix: str) -> int:
    if not workspace.exists(folder):
        return 0
    names = [p.rsplit("/", 1)[-1] for p in workspace.fs.ls(folder, detail=False)]
    return sum(1 for n in names if n.startswith(prefix + "-") and n.endswith(".tar"))


def _latest_in_video_order(records: Sequence[ExtractRecord]) -> dict[str, list[ExtractRecord]]:
    """The latest record per (video key, fingerprint), grouped by fingerprint, in video order.

    One video's two extractions cannot share a shard. Video order, not the order extractions finished (which
    concurrent workers make a matter of timing): the same records give the same shard and manifest bytes whichever
    executor ran them.
    """
    latest: dict[tuple[str, str], ExtractRecord] = {}
    for rec in sorted(records, key=lambda r: r.extracted_at):
        latest[(rec.key, rec.extract_fingerprint)] = rec
    by_fp: dict[str, list[ExtractRecord]] = {}
    for rec in sorted(latest.values(), key=lambda r: (r.key, r.extract_fingerprint)):
        by_fp.setdefault(rec.extract_fingerprint, []).append(rec)
    return by_fp


@dataclass
class _Written:
    """What writing one fingerprint's shards gave: the shards, the manifest rows of their videos, and the store
    entries whose ``.npy`` a shard now holds (to locate there once the manifest names the shard)."""

    shards: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    placed: dict[EntryId, Location] = field(default_factory=dict)


def _write_shards(
    ok: Sequence[ExtractRecord], store: FeatureStore, dataset: str, prefix: str, max_count: int, max_bytes: int
) -> _Written:
    """Compose the records' samples into new shards of their fingerprint's folder, each with its index beside it."""
    workspace = store.workspace
    folder = workspace.shard_dir(dataset, ok[0].extract_fingerprint)
    start = _next_index(workspace, folder, prefix)
    out = _Written()
    index: dict[str, list[dict[str, Any]]] = {}
    with ShardWriter(folder, prefix, max_count, max_bytes, workspace, start_index=start) as writer:
        for rec in ok:
            try:
                features, entries = _compose(rec, store)
                sample = features.to_sample()
            except (OSError, ValueError) as exc:
                log.warning("%s: %s; it will be extracted again next run", rec.video_id, exc)
                continue
            shard = writer.write(sample)
            out.rows.append(rec.manifest_row(_relative(workspace, dataset, shard)))
            # A member is the entry's .npy bytes when the entry's array is float16 (np.save of the same array).
            same = {s: rec.stream_fingerprints[s] for s, e in entries.items() if e.array.dtype == np.float16}
            keys = rec.store_keys()
            rows = index_rows(sample["__key__"], same, keys, writer.offsets)
            index.setdefault(shard, []).extend(rows)
            rel = shard[len(workspace.root) + 1 :]
            for row in rows:
                if entries[row["stream"]].at is None:  # still the store's own .npy: this shard will hold it
                    entry = (row["stream"], row["fingerprint"], row["entry"])
                    out.placed.setdefault(entry, Location(rel, row["offset"], row["size"]))
    for shard in writer.paths:  # published: a crash before its index leaves a shard that gc indexes from its headers
        write_index(workspace, shard, index.get(shard, []))
    out.shards = list(writer.paths)
    return out


def write_dataset(
    records: Sequence[ExtractRecord],
    workspace: Workspace,
    dataset: str,
    *,
    run_id: str | None = None,
    max_count: int = DEFAULT_MAX_COUNT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[str]:
    """Compose the ok records' samples from the store into shards ``shards/<fp>/<dataset>-<run>-<n:06d>.tar`` (each
    with its ``.index.parquet``), append every record's manifest row (failed ones too), then locate the store
    entries these shards now hold (their ``.npy`` files go: each array is stored once); returns the shard paths.

    The manifest names a shard only once it is renamed into place, and an entry names a shard only once the manifest
    does. A record whose store entries vanished is left out (logged): the next run sees its video as not done.
    """
    run_id = run_id or new_run_id()
    prefix = f"{safe_name(dataset, what='dataset name')}-{safe_name(run_id)}"
    store = FeatureStore(workspace)
    rows: list[dict[str, Any]] = []
    written: list[str] = []
    placed: dict[EntryId, Location] = {}
    for _fp, group in _latest_in_video_order(records).items():
        rows += [rec.manifest_row("") for rec in group if rec.status != "ok"]
        ok = [r for r in group if r.status == "ok"]
        if ok:
            out = _write_shards(ok, store, dataset, prefix, max_count, max_bytes)
            rows += out.rows
            written += out.shards
            placed.update({k: v for k, v in out.placed.items() if k not in placed})
    Manifest(workspace, dataset).append(rows)  # only now, with every shard it names renamed into place
    for (stream, fingerprint, key), at in placed.items():
        try:
            store.locate(stream, fingerprint, key, at)
        except OSError as exc:  # the entry keeps its .npy (gc locates it later): nothing is lost
            log.warning("feature store: %s entry %s not located in %s: %s", stream, key, at.shard, exc)
    return written


class Publisher:
    """Collects a run's records and publishes them — shards, then manifest rows — every ``max_count`` ok videos, so
    a run killed at video 900,000 keeps what it published before."""

    def __init__(self, workspace: Workspace, dataset: str, run_id: str, max_count: int, max_bytes: int) -> None:
        self.workspace, self.dataset, self.run_id = workspace, dataset, run_id
        self.max_count, self.max_bytes = max_count, max_bytes
        self.pending: list[ExtractRecord] = []
        self.shards: list[str] = []
        self.tally = Tally()

    def add(self, record: ExtractRecord) -> None:
        self.pending.append(record)
        self.tally.add(record)
        if sum(r.status == "ok" for r in self.pending) >= self.max_count:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.shards += write_dataset(
                self.pending,
                self.workspace,
                self.dataset,
                run_id=self.run_id,
                max_count=self.max_count,
                max_bytes=self.max_bytes,
            )
            self.pending = []


def dataset_totals(workspace: Workspace, dataset: str, extract_fp: str) -> tuple[int, float, int]:
    """(videos, hours, captions) of the ok rows in the current view for one fingerprint."""
    ok = Manifest(workspace, dataset).current(extract_fp, status="ok")
    if ok.num_rows == 0:
        return 0, 0.0, 0
    hours = sum(ok.column("duration_s").to_pylist()) / 3600.0
    return ok.num_rows, hours, int(sum(ok.column("n_captions").to_pylist()))


def summarise(
    plan: IngestPlan, tally: Tally, shards: Sequence[str], workspace: Workspace, started: float, kind: str = "extract"
) -> IngestSummary:
    """What the run did (``tally``) and what the dataset holds now."""
    videos, hours, n_captions = dataset_totals(workspace, plan.dataset, plan.extract_fingerprint)
    return IngestSummary(
        dataset=plan.dataset,
        extract_fingerprint=plan.extract_fingerprint,
        extracted=tally.ok,
        unchanged=len(plan.unchanged),
        failed=list(tally.failed),
        failed_before=len(plan.failed_before),
        reused=tally.reused,
        shards=list(shards),
        videos=videos,
        hours=hours,
        captions=n_captions,
        seconds=time.perf_counter() - started,
        dataset_fingerprint=open_dataset(workspace, plan.dataset, plan.extract_fingerprint).fingerprint
        if videos
        else "",
        kind=kind,
    )
