"""Videos as an ingest source: plan which videos to extract, extract one (only the streams the store lacks).

::

    plan = plan_extract(source, dataset, cfg, ws)    # sha256 + manifest → jobs: new, changed, retried, ...
    rec = extract_one(job, extractor, ws)            # only the streams the store lacks; never raises
    summary = run_extract(source, dataset, cfg, ws)  # the driver (pipeline.ingest.driver.ingest) over Videos

Features are stored per stream and by content (:mod:`storage.features`): a video's ``rgb2d``, ``rgb3d`` and
``audio`` arrays (and those of the config's extra ``streams``: ``clip``, ``s3d``, ...) are keyed by its sha256 and
the stream's fingerprint, its ``text`` by the captions' digest and the text fingerprint, and shared by every dataset
that holds the video. So a video already extracted for another dataset costs no network pass, a new word2vec file
recomputes text only, and a stream added to an extracted dataset's config computes that stream only.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

import pipeline.extract as extract_lib  # its Extractor (torch) is loaded on first use, by attribute
from pipeline.extract.config import ExtractConfig
from pipeline.ingest.driver import Executor, ProgressFn, ingest
from pipeline.ingest.publish import DEFAULT_MAX_BYTES, DEFAULT_MAX_COUNT, write_extract_config
from pipeline.ingest.records import (
    ExtractJob,
    ExtractRecord,
    IngestPlan,
    IngestSummary,
    failed_record,
    one_line,
    utc_now,
)
from pipeline.ingest.sources import SourceLike, VideoSource, is_url, list_sources, local_copy, read_captions
from storage.features import STREAMS, FeatureStore, StreamArrays
from storage.hashing import CAPTION_PARTS, HashCache
from storage.manifest import Manifest
from storage.sample import Captions, captions_digest
from storage.workspace import Workspace

log = logging.getLogger(__name__)

# A local folder for calibrated backbones and converted word vectors shared by several workspaces (both are
# deterministic functions of their inputs); default: the workspace's own cache/.
CACHE_ENV = "MMCAPS_CACHE"


class Extractor(Protocol):
    """What ingesting needs from an extractor (``pipeline.extract.Extractor`` is one)."""

    config: Any  # an ExtractConfig, or anything with its stream_fingerprints()

    def extract_streams(self, video_path: str, captions: Captions, streams: Collection[str]) -> dict[str, StreamArrays]:
        """The asked streams of one video: arrays with what made them; ``text``'s meta holds no captions."""
        ...


ExtractorLike = Extractor | Callable[[], Extractor]


# -- plan --------------------------------------------------------------------------------------------------------
_LOCAL = LocalFileSystem()  # made once: fsspec's instance cache costs a tokenisation a call (a tenth of a plan)


def _file(source: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(source) if is_url(source) else (_LOCAL, source)


def _stat(source: str, hashes: HashCache) -> tuple[str, int, str]:
    """(sha256, size, error) of a source; error is set (and sha empty) when it cannot be read."""
    try:
        fs, path = _file(source)
        sha, size = hashes.sha256(source, path, fs)
        return sha, size, ""
    except (OSError, ValueError) as exc:
        return "", 0, one_line(f"{source}: cannot read ({exc})")


def caption_summary(captions: Captions | None) -> tuple[int, str]:
    """(number of captions, :func:`storage.sample.captions_digest`): what a manifest row records of captions."""
    return (len(captions) if captions is not None else 0), captions_digest(captions)


def _caption_summary(video: VideoSource, cache: HashCache) -> tuple[int, str]:
    """:func:`caption_summary` of a video's captions; a subtitle file's is remembered by its (size, stamp), so a
    no-change plan stats each subtitle and reads none."""
    if not video.subtitle_unread:
        return caption_summary(video.captions)

    def read() -> str:
        count, digest = caption_summary(read_captions(video).captions)
        return f"{count}:{digest}"

    try:
        fs, path = _file(video.caption_source)
        value, _ = cache.remember(video.caption_source, path, fs, read)
    except OSError:  # gone since the listing: read_captions says so in the job's warning
        value = read()
    count, _, digest = value.partition(":")
    return int(count), digest


def job_reason(row: dict[str, Any] | None, sha: str, captions: tuple[int, str], retry_failed: bool) -> str | None:
    """Why a listed video is a job — new, changed (bytes), retry, captions changed (their digest; the count alone
    for rows written before manifests had the digest) — or None when it is not; ``"failed before"`` for a failure
    that is not retried. ``captions`` is the listed captions' :func:`caption_summary`. One rule for videos and
    feature files."""
    if row is None:
        return "new"
    if row["sha256"] != sha:
        return "changed"
    if row["status"] != "ok":
        return "retry" if retry_failed else "failed before"
    n_caps, digest = captions
    if row["n_captions"] != n_caps or (row["captions_sha256"] and row["captions_sha256"] != digest):
        return "captions changed"
    return None


def plan_extract(
    source: SourceLike | Sequence[VideoSource],
    dataset: str,
    config: Any,
    workspace: Workspace,
    *,
    captions: str | os.PathLike[str] | None = None,
    retry_failed: bool = False,
    rehash: bool = False,
) -> IngestPlan:
    """Compare the source with the manifest (by sha256, extract fingerprint, captions) and list the jobs.

    ``source`` is anything :func:`pipeline.ingest.sources.discover_videos` takes, or already loaded
    ``VideoSource``s. Hashes are remembered in the workspace by (path, size, modification time) so that a re-run
    reads only new or rewritten files (:class:`storage.hashing.HashCache`), and so are subtitle files' caption
    summaries: a no-change plan is a listing and one stat a file. ``rehash`` reads every file again.
    """
    if isinstance(source, (list, tuple)) and source and isinstance(source[0], VideoSource):
        videos = list(source)
    else:
        videos = list_sources(source, captions=captions)  # type: ignore[arg-type]
    extract_fp, stream_fps = config.fingerprint(), config.stream_fingerprints()
    current = {r["video_id"]: r for r in Manifest(workspace, dataset).current(extract_fp).to_pylist()}
    plan = IngestPlan(dataset, extract_fp, jobs=[], unchanged=[], failed_before=[])
    hashes = HashCache(workspace, read=not rehash)
    summaries = HashCache(workspace, read=not rehash, kind=CAPTION_PARTS)
    for video in videos:
        sha, size, error = _stat(video.source, hashes)
        reason = job_reason(current.get(video.video_id), sha, _caption_summary(video, summaries), retry_failed)
        if plan.admits(video.video_id, reason):
            video = read_captions(video)
            plan.jobs.append(
                ExtractJob(
                    video.video_id, video.source, sha, size, extract_fp, stream_fps, video.captions, str(reason),
                    error or video.error, video.warning,
                )
            )  # fmt: skip
    summaries.save()
    hashes.save()
    listed = {v.video_id for v in videos}
    plan.absent = [vid for vid in current if vid not in listed]
    return plan


# -- extract one -------------------------------------------------------------------------------------------------
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


def _compute_missing(job: ExtractJob, extractor: ExtractorLike, store: FeatureStore, missing: list[str]) -> None:
    """Run the extractor for the ``missing`` streams of one video and put them in the store."""
    keys = job.store_keys()
    captions = job.captions if job.captions is not None else Captions()
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


def extract_one(job: ExtractJob, extractor: ExtractorLike, workspace: Workspace) -> ExtractRecord:
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
    try:
        missing = store.missing(job.stream_fingerprints, keys)
        if missing:
            _compute_missing(job, extractor, store, missing)
        metas = {s: store.meta(s, job.stream_fingerprints[s], keys[s]) for s in STREAMS}
    except Exception as exc:  # any failure of one video is that video's failed row, never the run's end
        message = str(exc) or type(exc).__name__
        if os.path.basename(job.source) not in message:
            message = f"{job.source}: {message}"
        return failed_record(job, message, started)
    probe = metas["rgb2d"].get("probe") or metas["audio"].get("probe") or {}
    return ExtractRecord(
        video_id=job.video_id,
        source=job.source,
        sha256=job.sha256,
        size_bytes=job.size_bytes,
        status="ok",
        error="",
        duration_s=float(probe.get("duration_s") or 0.0),
        has_audio=int(metas["audio"].get("columns") or 0) > 0,
        n_captions=len(job.captions) if job.captions is not None else 0,
        extract_fingerprint=job.extract_fingerprint,
        extracted_at=utc_now(),
        captions_sha256=job.captions_sha256,
        stream_fingerprints=dict(job.stream_fingerprints),
        computed=list(missing),
        elapsed_s=time.perf_counter() - started,
        warning=job.warning,
    )


# -- the extractor a worker process uses -----------------------------------------------------------------------
class SerialExtractor:
    """An extractor shared by the threads of one process, one video at a time.

    The backbones already use every core through torch's intra-op threads; running two videos through them at
    once would only double the memory. Process pools and Dask workers hold one each.
    """

    def __init__(self, inner: Extractor) -> None:
        self.inner = inner
        self.config = inner.config
        self.lock = threading.Lock()

    def extract_streams(self, video_path: str, captions: Captions, streams: Collection[str]) -> dict[str, StreamArrays]:
        with self.lock:
            return self.inner.extract_streams(video_path, captions, streams)


def cache_dir_for(workspace: Workspace) -> str | None:
    """Where converted word vectors and calibrated backbones are kept: ``$MMCAPS_CACHE``, else a local workspace's
    ``cache/`` (a remote workspace keeps none: each process converts once)."""
    return os.environ.get(CACHE_ENV) or (workspace.cache_dir() if workspace.is_local else None)


def default_extractor(config: Any, workspace: Workspace) -> Extractor:
    """A new ``pipeline.extract.Extractor`` for ``config`` with the workspace's cache (loads the backbones)."""
    return extract_lib.Extractor(config, cache_dir=cache_dir_for(workspace))


_BUILDING = threading.Lock()


@functools.lru_cache(maxsize=4)
def _process_extractor(config_json: str, cache_dir: str | None) -> SerialExtractor:
    return SerialExtractor(extract_lib.Extractor(ExtractConfig.model_validate_json(config_json), cache_dir=cache_dir))


def process_extractor(config: ExtractConfig, workspace: Workspace) -> Extractor:
    """This process's one extractor for ``config`` (backbones loaded once, shared by its threads one video at a
    time): what a worker uses, whichever executor runs it."""
    # One builder at a time: lru_cache alone lets two threads that miss together build two extractors, which then
    # run side by side and write the same calibration files of the cache at once.
    with _BUILDING:
        return _process_extractor(config.model_dump_json(), cache_dir_for(workspace))


# -- the source --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoWorker:
    """Extracts batches of video jobs wherever an executor runs them (picklable: the config and the workspace's
    root; ``extractor`` only for in-process executors, where a caller brings its own)."""

    config: ExtractConfig
    root: str
    extractor: Extractor | None = field(default=None, compare=False)

    def run(self, jobs: Sequence[ExtractJob]) -> list[ExtractRecord]:
        ws = Workspace(self.root)
        extractor: ExtractorLike = self.extractor or functools.partial(process_extractor, self.config, ws)
        return [extract_one(job, extractor, ws) for job in jobs]


@dataclass
class Videos:
    """A source of videos to extract (for :func:`pipeline.ingest.driver.ingest`): a folder, a list file, a URL, a
    list of paths or loaded ``VideoSource``s, with its captions and the extract config (``auto`` precision made
    concrete here, once, so every worker extracts in the precision the run records)."""

    source: SourceLike | Sequence[VideoSource]
    config: Any = field(default_factory=ExtractConfig)
    captions: str | os.PathLike[str] | None = None
    extractor: Extractor | None = None  # an extractor of this process to use instead of loading one
    kind: str = "extract"
    batch_size: int = 32

    def __post_init__(self) -> None:
        if hasattr(self.config, "resolved"):
            log.info("extract: %s", self.config.resolve_precision().line())
            self.config = self.config.resolved()
        if self.extractor is not None and self.extractor.config.fingerprint() != self.config.fingerprint():
            raise ValueError(
                f"extractor config fingerprint {self.extractor.config.fingerprint()} differs from the run's "
                f"{self.config.fingerprint()}"
            )

    def prepare(self, workspace: Workspace, dataset: str) -> None:
        write_extract_config(workspace, dataset, self.config)

    def plan(self, workspace: Workspace, dataset: str, *, retry_failed: bool, rehash: bool) -> IngestPlan:
        return plan_extract(
            self.source, dataset, self.config, workspace, captions=self.captions, retry_failed=retry_failed,
            rehash=rehash,
        )  # fmt: skip

    def worker(self, workspace: Workspace) -> VideoWorker:
        return VideoWorker(self.config, workspace.root, self.extractor)

    def failed(self, job: ExtractJob, error: str) -> ExtractRecord:
        return failed_record(job, error)


def run_extract(
    source: SourceLike,
    dataset: str,
    cfg: Any = None,
    workspace: Workspace | None = None,
    *,
    captions: str | os.PathLike[str] | None = None,
    retry_failed: bool = False,
    extractor: Extractor | None = None,
    progress: ProgressFn | None = None,
    max_count: int = DEFAULT_MAX_COUNT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    run_id: str | None = None,
    rehash: bool = False,
    wait_s: float = 0.0,
    executor: Executor | None = None,
) -> IngestSummary:
    """Extract what is new or changed in ``source`` into ``dataset``: :func:`~pipeline.ingest.driver.ingest` over
    :class:`Videos` (see it for the lock, publication every ``max_count`` videos and ``rehash``).

    ``cfg`` is the ExtractConfig (default ``ExtractConfig()``, or ``extractor.config`` when an extractor is given).
    The default extractor is loaded only when a video needs computing, so a run over stored features loads no
    backbone. ``executor`` runs the jobs (default: in this thread).
    """
    if cfg is None:
        cfg = extractor.config if extractor is not None else ExtractConfig()
    return ingest(
        Videos(source, cfg, captions, extractor),
        dataset,
        workspace if workspace is not None else Workspace(),
        executor=executor,
        retry_failed=retry_failed,
        rehash=rehash,
        max_count=max_count,
        max_bytes=max_bytes,
        run_id=run_id,
        wait_s=wait_s,
        progress=progress,
    )
