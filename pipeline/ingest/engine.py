"""The incremental extraction engine: plan, extract what the feature store lacks, write a dataset's shards and manifest.

Each step is one library call; :func:`run_extract` runs them in order, and the Prefect extract flow wraps each in a
task, adding only caching, retries, concurrency and artifacts. Both return the same :class:`ExtractSummary`::

    plan = plan_extract(source, dataset, cfg, ws)            # sha256 + manifest → jobs: new, changed, retried, ...
    jobs = pending_jobs(plan.jobs, ws, dataset, retry)       # minus what the manifest got since (a cached plan)
    rec = extract_one(job, extractor, ws)                    # only the streams the store lacks; never raises
    shards = write_dataset(records, ws, dataset, run_id=...) # store → samples → shards (atomic) → manifest rows
    summary = summarise(plan, records, shards, ws, started)

Features are stored per stream and by content (:mod:`storage.features`): a video's ``rgb2d``, ``rgb3d`` and
``audio`` arrays are keyed by its sha256 and the stream's fingerprint, its ``text`` by the captions' digest and the
text fingerprint, and shared by every dataset that holds the video. So a video already extracted for another
dataset costs no network pass, and a new word2vec file recomputes text only.

Durability: a video's arrays are in the store (each entry complete or absent) before its record exists; shards are
renamed into place before the manifest names them. A crash leaves temporaries (swept by the next run) and store
entries that the next run reads instead of computing again; never a half shard that the manifest names.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, Self

import numpy as np

from pipeline.extract.config import ExtractConfig
from pipeline.ingest.sources import SourceLike, VideoSource, is_url, load_sources, local_copy
from storage.dataset import CONFIG_FILE, open_dataset
from storage.features import STREAMS, FeatureStore, StreamArrays
from storage.hashing import HashCache
from storage.locks import dataset_lock
from storage.manifest import Manifest
from storage.sample import Captions, VideoFeatures, captions_digest
from storage.shards import ShardWriter
from storage.workspace import Workspace, safe_name

log = logging.getLogger(__name__)

# A local folder for calibrated backbones and converted word vectors shared by several workspaces (both are
# deterministic functions of their inputs); default: the workspace's own cache/.
CACHE_ENV = "MMCAPS_CACHE"
DEFAULT_MAX_COUNT = 1000  # videos per shard
DEFAULT_MAX_BYTES = 512 << 20  # ~5 MB per HowTo100M video → ~100 videos per shard at this bound


class StreamConfig(Protocol):
    """What the engine needs from a config: its fingerprint and its streams' (``ExtractConfig`` is one)."""

    def fingerprint(self) -> str: ...

    def stream_fingerprints(self) -> dict[str, str]: ...

    def to_yaml(self) -> str: ...


class Extractor(Protocol):
    """What the engine needs from an extractor (``pipeline.extract.Extractor`` is one)."""

    config: Any  # a StreamConfig

    def extract_streams(self, video_path: str, captions: Captions, streams: Collection[str]) -> dict[str, StreamArrays]:
        """The asked streams of one video: arrays with what made them; ``text``'s meta holds no captions."""
        ...


# -- records -----------------------------------------------------------------------------------------------------
class JobDict:
    """``to_dict``/``from_dict`` of a job dataclass with a ``captions`` field: plain JSON for Prefect to pass (the
    captions as :meth:`Captions.to_json`)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)  # type: ignore[call-overload]
        data["captions"] = self.captions.to_json() if self.captions is not None else None  # type: ignore[attr-defined]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        data = dict(data)
        if data.get("captions") is not None:
            data["captions"] = Captions.from_json(data["captions"])
        return cls(**data)


@dataclass(frozen=True)
class ExtractJob(JobDict):
    """One video to extract. Small and picklable (Prefect passes it to workers)."""

    video_id: str
    source: str
    sha256: str
    size_bytes: int
    extract_fingerprint: str
    stream_fingerprints: dict[str, str]
    captions: Captions | None = None
    reason: str = "new"  # new | changed | retry | captions changed
    error: str = ""  # set at planning time when the video cannot be extracted at all (an unreadable file)
    warning: str = ""  # a problem that keeps the video (its subtitle file could not be read: no captions)

    @property
    def captions_sha256(self) -> str:
        return captions_digest(self.captions)

    def store_keys(self) -> dict[str, str]:
        """The feature store key of each stream: the file's sha256, the captions' digest for text."""
        return {s: (self.captions_sha256 if s == "text" else self.sha256) for s in STREAMS}


@dataclass
class ExtractRecord:
    """The outcome of one extraction: a manifest row to be. Its arrays are in the feature store."""

    video_id: str
    source: str
    sha256: str
    size_bytes: int
    status: str  # ok | failed
    error: str
    duration_s: float
    has_audio: bool
    n_captions: int
    extract_fingerprint: str
    extracted_at: str  # ISO-8601 UTC, microseconds
    captions_sha256: str = ""  # captions_digest of the captions extracted with the video
    stream_fingerprints: dict[str, str] = field(default_factory=dict)
    computed: list[str] = field(default_factory=list)  # the streams this extraction computed (the rest were stored)
    elapsed_s: float = 0.0
    warning: str = ""  # one line: what did not stop the video (captions not read)

    @property
    def key(self) -> str:
        return safe_name(self.video_id, what="video id")

    def store_keys(self) -> dict[str, str]:
        return {s: (self.captions_sha256 if s == "text" else self.sha256) for s in STREAMS}

    def manifest_row(self, shard: str) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "source": self.source,
            "sha256": self.sha256,
            "size_bytes": int(self.size_bytes),
            "status": self.status,
            "error": self.error,
            "warning": self.warning,
            "duration_s": float(self.duration_s),
            "has_audio": bool(self.has_audio),
            "n_captions": int(self.n_captions),
            "captions_sha256": self.captions_sha256,
            "shard": shard,
            "extract_fingerprint": self.extract_fingerprint,
            "extracted_at": self.extracted_at,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExtractRecord:
        return cls(**data)


@dataclass
class ExtractPlan:
    dataset: str
    extract_fingerprint: str
    jobs: list[ExtractJob]
    unchanged: list[str]  # video ids already extracted (ok) with the same bytes, captions and fingerprint
    failed_before: list[str]  # ids whose last attempt failed and that are not retried (retry_failed is off)
    absent: list[str] = field(default_factory=list)  # ids in the manifest that the source no longer lists


@dataclass
class ExtractSummary:
    """What a run did (this run's counts) and what the dataset now holds (for its fingerprint)."""

    dataset: str
    extract_fingerprint: str
    extracted: int  # videos extracted ok in this run
    unchanged: int  # videos skipped because the manifest already has them
    failed: list[tuple[str, str]]  # (video_id, error) of this run's failures
    failed_before: int  # earlier failures not retried
    reused: int  # of the extracted videos, those whose every stream came from the feature store
    shards: list[str]  # shards written in this run
    videos: int  # ok videos in the dataset now
    hours: float
    captions: int
    seconds: float
    dataset_fingerprint: str = ""  # names the dataset's content (training run ids derive from it)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [
            f"dataset {self.dataset} (extract fingerprint {self.extract_fingerprint}): "
            f"{self.extracted} extracted"
            + (f" ({self.reused} wholly from stored features)" if self.reused else "")
            + f", {self.unchanged} unchanged, {len(self.failed)} failed"
            + (f", {self.failed_before} failed before (not retried)" if self.failed_before else ""),
            f"now {self.videos} videos, {self.hours:.2f} h, {self.captions} captions; "
            f"{len(self.shards)} new shard(s); {self.seconds:.1f} s",
        ]
        lines += [f"  failed {vid}: {err}" for vid, err in self.failed]
        return "\n".join(lines)


def one_line(text: str, limit: int = 400) -> str:
    """Collapse whitespace to one line and cap its length (manifest errors are one line)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def utc_now() -> str:
    """Now, ISO-8601 UTC with microseconds (the ``extracted_at`` of a record)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def new_run_id() -> str:
    """A sortable, unique run token for shard names: ``20240501T120000-1a2b3c``."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


# -- prepare -----------------------------------------------------------------------------------------------------
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


def write_extract_config(workspace: Workspace, dataset: str, config: StreamConfig) -> str:
    """Store the full extract config as YAML beside its shards (``shards/<fp>/extract-config.yaml``)."""
    path = f"{workspace.shard_dir(dataset, config.fingerprint())}/{CONFIG_FILE}"
    text = config.to_yaml()
    if not workspace.exists(path) or workspace.read_bytes(path).decode("utf-8") != text:
        workspace.write_text(path, text)
    return path


def _stat(source: str, hashes: HashCache) -> tuple[str, int, str]:
    """(sha256, size, error) of a source; error is set (and sha empty) when it cannot be read."""
    try:
        if is_url(source):
            import fsspec

            fs, path = fsspec.core.url_to_fs(source)
        else:
            import fsspec.implementations.local as local

            fs, path = local.LocalFileSystem(), source
        sha, size = hashes.sha256(source, path, fs)
        return sha, size, ""
    except (OSError, ValueError) as exc:
        return "", 0, one_line(f"{source}: cannot read ({exc})")


def plan_extract(
    source: SourceLike | Sequence[VideoSource],
    dataset: str,
    config: StreamConfig,
    workspace: Workspace,
    *,
    captions: str | os.PathLike[str] | None = None,
    retry_failed: bool = False,
    rehash: bool = False,
) -> ExtractPlan:
    """Compare the source with the manifest (by sha256, extract fingerprint, captions) and list the jobs.

    A video is a job when it is new, its bytes changed, its captions changed (their digest; the count alone for
    rows written before manifests had the digest), or (``retry_failed``) its last attempt failed. ``source`` is
    anything :func:`pipeline.ingest.sources.discover_videos` takes, or already loaded ``VideoSource``s. Hashes are
    remembered in the workspace by (path, size, modification time) so that a re-run reads only new or rewritten
    files (:class:`storage.hashing.HashCache`); ``rehash`` reads every file again.
    """
    if isinstance(source, (list, tuple)) and source and isinstance(source[0], VideoSource):
        videos = list(source)
    else:
        videos = load_sources(source, captions=captions)  # type: ignore[arg-type]
    extract_fp, stream_fps = config.fingerprint(), config.stream_fingerprints()
    current = {r["video_id"]: r for r in Manifest(workspace, dataset).current(extract_fp).to_pylist()}
    jobs: list[ExtractJob] = []
    unchanged: list[str] = []
    failed_before: list[str] = []
    hashes = HashCache(workspace, read=not rehash)
    for video in videos:
        sha, size, error = _stat(video.source, hashes)
        n_caps = len(video.captions) if video.captions is not None else 0
        row = current.get(video.video_id)
        error = error or video.error
        if row is None:
            reason = "new"
        elif row["sha256"] != sha:
            reason = "changed"
        elif row["status"] != "ok":
            if not retry_failed:
                failed_before.append(video.video_id)
                continue
            reason = "retry"
        elif row["n_captions"] != n_caps or (
            row["captions_sha256"] and row["captions_sha256"] != captions_digest(video.captions)
        ):
            reason = "captions changed"
        else:
            unchanged.append(video.video_id)
            continue
        jobs.append(
            ExtractJob(
                video.video_id, video.source, sha, size, extract_fp, stream_fps, video.captions, reason, error,
                video.warning,
            )
        )  # fmt: skip
    hashes.save()
    listed = {v.video_id for v in videos}
    absent = [vid for vid in current if vid not in listed]
    return ExtractPlan(dataset, extract_fp, jobs, unchanged, failed_before, absent)


def pending_jobs(
    jobs: Sequence[ExtractJob], workspace: Workspace, dataset: str, retry_failed: bool
) -> tuple[list[ExtractJob], list[str], list[str]]:
    """Split a (possibly cached, older) plan's jobs by what the manifest answers now (same video, bytes, captions
    and fingerprint). Returns (jobs still to run, ids extracted since, ids that failed since and are not retried)."""
    if not jobs or not Manifest(workspace, dataset).exists():
        return list(jobs), [], []
    status = {
        (r["video_id"], r["sha256"], r["extract_fingerprint"], r["captions_sha256"]): r["status"]
        for r in Manifest(workspace, dataset).current().to_pylist()
    }
    todo, done, failed = [], [], []
    for job in jobs:
        known = status.get((job.video_id, job.sha256, job.extract_fingerprint, job.captions_sha256))
        if known == "ok":
            done.append(job.video_id)
        elif known is not None and not retry_failed:
            failed.append(job.video_id)
        else:
            todo.append(job)
    return todo, done, failed


# -- extract one -------------------------------------------------------------------------------------------------
def failed_record(job: ExtractJob, error: str, started: float | None = None) -> ExtractRecord:
    """The record of a video that could not be extracted (one line, naming the file)."""
    return ExtractRecord(
        video_id=job.video_id,
        source=job.source,
        sha256=job.sha256,
        size_bytes=job.size_bytes,
        status="failed",
        error=one_line(error),
        duration_s=0.0,
        has_audio=False,
        n_captions=len(job.captions) if job.captions is not None else 0,
        extract_fingerprint=job.extract_fingerprint,
        extracted_at=utc_now(),
        captions_sha256=job.captions_sha256,
        stream_fingerprints=dict(job.stream_fingerprints),
        elapsed_s=time.perf_counter() - started if started is not None else 0.0,
        warning=job.warning,
    )


def _check_streams(produced: dict[str, StreamArrays], wanted: Sequence[str], job: ExtractJob) -> None:
    missing = [s for s in wanted if s not in produced]
    if missing:
        raise TypeError(f"extractor returned no {missing} for {job.source}")
    for name in wanted:
        array = produced[name].array
        if not isinstance(array, np.ndarray) or array.ndim != 2:
            raise TypeError(f"extractor returned {name} of shape {getattr(array, 'shape', '?')}, not a 2-D array")
    if "text" in produced and produced["text"].array.shape[0] != len(job.captions or Captions()):
        raise ValueError(
            f"{job.source}: {produced['text'].array.shape[0]} text rows for {len(job.captions or [])} captions"
        )


def extract_one(job: ExtractJob, extractor: Extractor | Callable[[], Extractor], workspace: Workspace) -> ExtractRecord:
    """Compute the streams of one video that the feature store lacks, store them, return the video's record.

    ``extractor`` may be a zero-argument callable that makes one: it is called only when something must be
    computed. A video that cannot be extracted gives a record with status ``failed`` and a one-line error naming
    the file; this function does not raise for bad input (it does for a broken workspace or KeyboardInterrupt).
    """
    started = time.perf_counter()
    if job.error:
        return failed_record(job, job.error, started)
    if job.size_bytes == 0:
        return failed_record(job, f"{job.source}: empty file (0 bytes)", started)
    store = FeatureStore(workspace)
    keys = job.store_keys()
    captions = job.captions if job.captions is not None else Captions()
    try:
        missing = store.missing(job.stream_fingerprints, keys)
        if missing:
            ex = extractor if hasattr(extractor, "extract_streams") else extractor()  # type: ignore[operator]
            if set(missing) == {"text"}:  # captions only: the video is not read
                produced = ex.extract_streams(job.source, captions, missing)
            else:
                with local_copy(job.source) as local:
                    produced = ex.extract_streams(local, captions, missing)
            _check_streams(produced, missing, job)
            for name in missing:
                entry = produced[name]
                if name == "text":  # the text entry holds its input, so it describes itself
                    entry = StreamArrays(entry.array, {**entry.meta, "captions": captions.to_json()})
                store.put(name, job.stream_fingerprints[name], keys[name], entry)
        metas = {s: store.meta(s, job.stream_fingerprints[s], keys[s]) for s in STREAMS}
    except Exception as exc:  # any failure of one video is that video's failed row, never the run's end
        message = str(exc) or type(exc).__name__
        if os.path.basename(job.source) not in message:
            message = f"{job.source}: {message}"
        return failed_record(job, message, started)
    probe = (metas["rgb2d"].get("probe") or metas["audio"].get("probe") or {}) if metas else {}
    return ExtractRecord(
        video_id=job.video_id,
        source=job.source,
        sha256=job.sha256,
        size_bytes=job.size_bytes,
        status="ok",
        error="",
        duration_s=float(probe.get("duration_s") or 0.0),
        has_audio=int(metas["audio"].get("columns") or 0) > 0,
        n_captions=len(captions),
        extract_fingerprint=job.extract_fingerprint,
        extracted_at=utc_now(),
        captions_sha256=job.captions_sha256,
        stream_fingerprints=dict(job.stream_fingerprints),
        computed=list(missing),
        elapsed_s=time.perf_counter() - started,
        warning=job.warning,
    )


def record_is_usable(record: ExtractRecord, workspace: Workspace) -> bool:
    """A (cached) ok record is usable while the store still holds every stream it names."""
    if record.status != "ok":
        return True
    store = FeatureStore(workspace)
    return not store.missing(record.stream_fingerprints, record.store_keys())


def compose_sample(record: ExtractRecord, workspace: Workspace) -> VideoFeatures:
    """The dataset sample of an ok record, from the feature store (the one place a sample is composed)."""
    store = FeatureStore(workspace)
    keys = record.store_keys()
    entries = {s: store.get(s, record.stream_fingerprints[s], keys[s]) for s in STREAMS}
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
    return VideoFeatures.from_streams(
        video_id=record.video_id,
        captions=captions,
        arrays={s: e.array for s, e in entries.items()},
        metas=metas,
        identity=identity,
    )


# -- write -------------------------------------------------------------------------------------------------------
def _relative(workspace: Workspace, dataset: str, path: str) -> str:
    return path[len(workspace.dataset_dir(dataset)) + 1 :]


def _next_index(workspace: Workspace, folder: str, prefix: str) -> int:
    if not workspace.exists(folder):
        return 0
    names = [p.rsplit("/", 1)[-1] for p in workspace.fs.ls(folder, detail=False)]
    return sum(1 for n in names if n.startswith(prefix + "-") and n.endswith(".tar"))


def write_dataset(
    records: Sequence[ExtractRecord],
    workspace: Workspace,
    dataset: str,
    *,
    run_id: str | None = None,
    max_count: int = DEFAULT_MAX_COUNT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[str]:
    """Compose the ok records' samples from the store into shards ``shards/<fp>/<dataset>-<run>-<n:06d>.tar``, then
    append every record's manifest row (failed ones too); returns the shard paths written.

    The manifest names a shard only once it is renamed into place. A record whose store entries vanished is left
    out (logged): the next run sees its video as not done.
    """
    run_id = run_id or new_run_id()
    prefix = f"{safe_name(dataset, what='dataset name')}-{safe_name(run_id)}"
    # The latest record per (key, fingerprint): one video's two extractions cannot share a shard.
    latest: dict[tuple[str, str], ExtractRecord] = {}
    for rec in sorted(records, key=lambda r: r.extracted_at):
        latest[(rec.key, rec.extract_fingerprint)] = rec
    rows: list[dict[str, Any]] = []
    written: list[str] = []
    by_fp: dict[str, list[ExtractRecord]] = {}
    # In video order, not in the order extractions finished (which a flow's concurrent tasks make a matter of
    # timing): the same records give the same shard and manifest bytes whichever driver ran them.
    for rec in sorted(latest.values(), key=lambda r: (r.key, r.extract_fingerprint)):
        by_fp.setdefault(rec.extract_fingerprint, []).append(rec)
    for fp, group in by_fp.items():
        rows += [rec.manifest_row("") for rec in group if rec.status != "ok"]
        ok = [r for r in group if r.status == "ok"]
        if not ok:
            continue
        folder = workspace.shard_dir(dataset, fp)
        writer = ShardWriter(
            folder, prefix, max_count, max_bytes, workspace, start_index=_next_index(workspace, folder, prefix)
        )
        with writer:
            for rec in ok:
                try:
                    sample = compose_sample(rec, workspace).to_sample()
                except (OSError, ValueError) as exc:
                    log.warning("%s: %s; it will be extracted again next run", rec.video_id, exc)
                    continue
                shard = writer.write(sample)
                rows.append(rec.manifest_row(_relative(workspace, dataset, shard)))
        written += writer.paths
    Manifest(workspace, dataset).append(rows)  # only now, with every shard it names renamed into place
    return written


# -- summarise and run -------------------------------------------------------------------------------------------
def dataset_totals(workspace: Workspace, dataset: str, extract_fp: str) -> tuple[int, float, int]:
    """(videos, hours, captions) of the ok rows in the current view for one fingerprint."""
    ok = Manifest(workspace, dataset).current(extract_fp, status="ok")
    if ok.num_rows == 0:
        return 0, 0.0, 0
    hours = sum(ok.column("duration_s").to_pylist()) / 3600.0
    return ok.num_rows, hours, int(sum(ok.column("n_captions").to_pylist()))


def summarise(
    plan: ExtractPlan,
    records: Sequence[ExtractRecord],
    shards: Sequence[str],
    workspace: Workspace,
    started: float,
    *,
    done_since: int = 0,
    failed_since: int = 0,
) -> ExtractSummary:
    """What the run did and what the dataset holds now (``done_since``/``failed_since``: a cached plan's jobs that
    the manifest answered before this run got to them)."""
    videos, hours, n_captions = dataset_totals(workspace, plan.dataset, plan.extract_fingerprint)
    ok = [r for r in records if r.status == "ok"]
    return ExtractSummary(
        dataset=plan.dataset,
        extract_fingerprint=plan.extract_fingerprint,
        extracted=len(ok),
        unchanged=len(plan.unchanged) + done_since,
        failed=[(r.video_id, r.error) for r in records if r.status == "failed"],
        failed_before=len(plan.failed_before) + failed_since,
        reused=sum(not r.computed for r in ok),
        shards=list(shards),
        videos=videos,
        hours=hours,
        captions=n_captions,
        seconds=time.perf_counter() - started,
        dataset_fingerprint=open_dataset(workspace, plan.dataset, plan.extract_fingerprint).fingerprint
        if videos
        else "",
    )


def default_extractor(config: Any, workspace: Workspace) -> Extractor:
    """``pipeline.extract.Extractor`` with the workspace cache (local workspaces) for converted vectors and weights."""
    from pipeline.extract import Extractor as LibraryExtractor  # deferred: torch, for runs that extract nothing

    cache = os.environ.get(CACHE_ENV) or (workspace.cache_dir() if workspace.is_local else None)
    return LibraryExtractor(config, cache_dir=cache)


def run_extract(
    source: SourceLike,
    dataset: str,
    cfg: Any = None,
    workspace: Workspace | None = None,
    *,
    captions: str | os.PathLike[str] | None = None,
    retry_failed: bool = False,
    extractor: Extractor | None = None,
    progress: Callable[[int, int, ExtractRecord], None] | None = None,
    max_count: int = DEFAULT_MAX_COUNT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    run_id: str | None = None,
    rehash: bool = False,
    wait_s: float = 0.0,
) -> ExtractSummary:
    """Extract what is new or changed in ``source`` into ``dataset``: the steps of the module doc, in order.

    The dataset's writer lock is held throughout (:func:`storage.locks.dataset_lock`): a second run on the same
    dataset waits up to ``wait_s`` and then raises :class:`storage.locks.LockBusy` naming the first.

    ``cfg`` is the ExtractConfig (default ``ExtractConfig()``, or ``extractor.config`` when an extractor is given).
    The default extractor is made only when a video needs computing, so a run over stored features loads no
    backbone. ``progress(done, total, record)`` is called after each video. Shards are published every
    ``max_count`` videos, so a long run's work becomes visible as it goes. ``rehash`` reads every source file
    again instead of trusting the hashes remembered by size and mtime.
    """
    started = time.perf_counter()
    workspace = workspace if workspace is not None else Workspace()
    if cfg is None:
        if extractor is not None:
            cfg = extractor.config
        else:
            cfg = ExtractConfig()
    if hasattr(cfg, "resolved"):  # ExtractConfig: auto precision made concrete once, for the config file too
        log.info("extract %s: %s", dataset, cfg.resolve_precision().line())
        cfg = cfg.resolved()
    if extractor is not None and extractor.config.fingerprint() != cfg.fingerprint():
        raise ValueError(
            f"extractor config fingerprint {extractor.config.fingerprint()} differs from cfg {cfg.fingerprint()}"
        )
    run_id = run_id or new_run_id()
    with dataset_lock(workspace, dataset, owner=f"extract {dataset}", wait_s=wait_s):
        return _run_locked(
            source, dataset, cfg, workspace, captions, retry_failed, extractor, progress, max_count, max_bytes,
            run_id, rehash, started,
        )  # fmt: skip


def _run_locked(
    source: SourceLike,
    dataset: str,
    cfg: Any,
    workspace: Workspace,
    captions: str | os.PathLike[str] | None,
    retry_failed: bool,
    extractor: Extractor | None,
    progress: Callable[[int, int, ExtractRecord], None] | None,
    max_count: int,
    max_bytes: int,
    run_id: str,
    rehash: bool,
    started: float,
) -> ExtractSummary:
    recover(workspace, dataset)
    plan = plan_extract(source, dataset, cfg, workspace, captions=captions, retry_failed=retry_failed, rehash=rehash)
    write_extract_config(workspace, dataset, cfg)
    made: list[Extractor] = [extractor] if extractor is not None else []

    def make() -> Extractor:
        if not made:
            made.append(default_extractor(cfg, workspace))
        return made[0]

    records: list[ExtractRecord] = []
    pending: list[ExtractRecord] = []
    shards: list[str] = []
    for i, job in enumerate(plan.jobs):
        rec = extract_one(job, make, workspace)
        records.append(rec)
        pending.append(rec)
        if rec.status == "failed":
            log.warning("failed %s: %s", rec.video_id, rec.error)
        if progress is not None:
            progress(i + 1, len(plan.jobs), rec)
        if sum(r.status == "ok" for r in pending) >= max_count:
            shards += write_dataset(
                pending, workspace, dataset, run_id=run_id, max_count=max_count, max_bytes=max_bytes
            )
            pending = []
    if pending:
        shards += write_dataset(pending, workspace, dataset, run_id=run_id, max_count=max_count, max_bytes=max_bytes)
    return summarise(plan, records, shards, workspace, started)
