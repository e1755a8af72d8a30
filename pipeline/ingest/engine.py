"""The incremental extraction engine: plan, extract one video, write shards and manifest, recover after a crash.

Steps, each usable on its own (the Prefect flow maps ``extract_one`` over the plan's jobs)::

    recover(workspace, dataset)                    # sweep temporaries, pack finished staging files of a crashed run
    plan = plan_extract(source, dataset, fp, ws)   # sha256 + manifest → jobs (new, changed, retried) and what is done
    rec = extract_one(job, extractor, ws, dataset) # one video → one staging tar (or a failed record); never raises
    write_dataset(records, ws, dataset)            # staging → shards (atomic rename) → manifest rows → staging deleted

Durability: every finished extraction is a complete file under ``datasets/<ds>/staging/<fp>/`` (written under a
temporary name, then renamed) before anything else happens; shards are renamed into place before the manifest
names them; staging files are deleted only after the manifest holds their rows. A crash at any point therefore
leaves either temporaries (deleted by the next run), staging files (packed by the next run, not extracted again)
or a shard that no manifest row names (ignored; reported by ``unreferenced_shards``).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from pipeline.ingest.sources import SourceLike, VideoSource, is_url, load_sources, local_copy
from storage.dataset import CONFIG_FILE
from storage.hashing import HashCache
from storage.manifest import Manifest
from storage.sample import VideoFeatures, captions_digest
from storage.shards import ShardWriter, iter_shard, write_shard
from storage.workspace import TMP_MARKER, Workspace, safe_name

log = logging.getLogger(__name__)

# A local folder for calibrated backbones and converted word vectors shared by several workspaces (both are
# deterministic functions of their inputs); default: the workspace's own cache/.
CACHE_ENV = "MMCAPS_CACHE"
FAILED_SUFFIX = ".failed.json"
DEFAULT_MAX_COUNT = 1000  # videos per shard
DEFAULT_MAX_BYTES = 512 << 20  # ~5 MB per HowTo100M video → ~100 videos per shard at this bound


class Extractor(Protocol):
    """What the engine needs from an extractor (``pipeline.extract.Extractor`` is one)."""

    config: Any  # has .fingerprint() and .to_yaml()

    def extract(self, video_path: str, captions: Any, video_id: str) -> VideoFeatures: ...


# -- records -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtractJob:
    """One video to extract. Small and picklable (Prefect passes it to workers)."""

    video_id: str
    source: str
    sha256: str
    size_bytes: int
    extract_fingerprint: str
    captions: Any = None  # Captions | None
    reason: str = "new"  # new | changed | retry | captions changed
    error: str = ""  # set at planning time when the video cannot be extracted at all (unreadable file, subtitle)

    @property
    def captions_sha256(self) -> str:
        return captions_digest(self.captions)


@dataclass
class ExtractRecord:
    """The outcome of one extraction: a manifest row to be, plus where the staged sample is."""

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
    extracted_at: str  # ISO-8601 UTC, microseconds; identifies this extraction (recovery matches on it)
    captions_sha256: str = ""  # captions_digest of the captions extracted with the video
    staging: str = ""  # path of the staging tar (ok) or failure note (failed)
    elapsed_s: float = 0.0

    @property
    def key(self) -> str:
        return safe_name(self.video_id, what="video id")

    def manifest_row(self, shard: str) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "source": self.source,
            "sha256": self.sha256,
            "size_bytes": int(self.size_bytes),
            "status": self.status,
            "error": self.error,
            "duration_s": float(self.duration_s),
            "has_audio": bool(self.has_audio),
            "n_captions": int(self.n_captions),
            "captions_sha256": self.captions_sha256,
            "shard": shard,
            "extract_fingerprint": self.extract_fingerprint,
            "extracted_at": self.extracted_at,
        }


@dataclass
class ExtractPlan:
    dataset: str
    extract_fingerprint: str
    jobs: list[ExtractJob]
    unchanged: list[str]  # video ids already extracted (ok) with the same bytes and fingerprint
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
    recovered: int  # finished extractions of a crashed run packed at start
    shards: list[str]  # shards written in this run
    videos: int  # ok videos in the dataset now
    hours: float
    captions: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [
            f"dataset {self.dataset} (extract fingerprint {self.extract_fingerprint}): "
            f"{self.extracted} extracted, {self.unchanged} unchanged, {len(self.failed)} failed"
            + (f", {self.recovered} recovered from an interrupted run" if self.recovered else "")
            + (f", {self.failed_before} failed before (not retried)" if self.failed_before else ""),
            f"now {self.videos} videos, {self.hours:.2f} h, {self.captions} captions; "
            f"{len(self.shards)} new shard(s); {self.seconds:.1f} s",
        ]
        lines += [f"  failed {vid}: {err}" for vid, err in self.failed]
        return "\n".join(lines)


# -- paths -------------------------------------------------------------------------------------------------------
def staging_dir(workspace: Workspace, dataset: str, extract_fp: str) -> str:
    return f"{workspace.dataset_dir(dataset)}/staging/{safe_name(extract_fp)}"


def _sha8(sha: str) -> str:
    return (sha or "0" * 8)[:8]


def staging_path(workspace: Workspace, dataset: str, extract_fp: str, video_id: str, sha256: str, *, ok: bool) -> str:
    name = f"{safe_name(video_id, what='video id')}-{_sha8(sha256)}"
    return f"{staging_dir(workspace, dataset, extract_fp)}/{name}{'.tar' if ok else FAILED_SUFFIX}"


def one_line(text: str, limit: int = 400) -> str:
    """Collapse whitespace to one line and cap its length (manifest errors are one line)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def utc_now() -> str:
    """Now, ISO-8601 UTC with microseconds (the ``extracted_at`` of a record; recovery matches on it)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


_now = utc_now  # kept for callers of the earlier private name


def new_run_id() -> str:
    """A sortable, unique run token for shard names: ``20240501T120000-1a2b3c``."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


# -- plan --------------------------------------------------------------------------------------------------------
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
    extract_fp: str,
    workspace: Workspace,
    *,
    captions: str | os.PathLike[str] | None = None,
    retry_failed: bool = False,
    rehash: bool = False,
) -> ExtractPlan:
    """Compare the source with the manifest (by sha256, extract fingerprint, captions) and list the jobs.

    A video is a job when it is new, its bytes changed, its captions changed (their digest; the count alone for
    rows written before manifests had the digest), or (``retry_failed``) its last attempt failed. ``source`` is
    anything :func:`discover_videos` takes, or already loaded ``VideoSource``s. Hashes are remembered in the
    workspace by (path, size, modification time) so that a re-run reads only new or rewritten files
    (:class:`storage.hashing.HashCache`); ``rehash`` reads every file again.
    """
    if isinstance(source, (list, tuple)) and source and isinstance(source[0], VideoSource):
        videos = list(source)
    else:
        videos = load_sources(source, captions=captions)  # type: ignore[arg-type]
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
        jobs.append(ExtractJob(video.video_id, video.source, sha, size, extract_fp, video.captions, reason, error))
    hashes.save()
    listed = {v.video_id for v in videos}
    absent = [vid for vid in current if vid not in listed]
    return ExtractPlan(dataset, extract_fp, jobs, unchanged, failed_before, absent)


# -- extract one -------------------------------------------------------------------------------------------------
def _failed(job: ExtractJob, error: str, started: float, workspace: Workspace, dataset: str) -> ExtractRecord:
    record = ExtractRecord(
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
        extracted_at=_now(),
        captions_sha256=job.captions_sha256,
        elapsed_s=time.perf_counter() - started,
    )
    # The failure is staged too, so a crash before the manifest append does not make the next run try it again.
    record.staging = staging_path(workspace, dataset, job.extract_fingerprint, job.video_id, job.sha256, ok=False)
    workspace.write_text(record.staging, json.dumps(asdict(record), sort_keys=True))
    return record


def extract_one(job: ExtractJob, extractor: Extractor, workspace: Workspace, dataset: str) -> ExtractRecord:
    """Extract one video and stage its sample as ``staging/<fp>/<key>-<sha8>.tar`` (atomic); return its record.

    A video that cannot be extracted gives a record with status ``failed`` and a one-line error naming the file;
    this function does not raise for bad input (it does for a broken workspace or KeyboardInterrupt).
    """
    started = time.perf_counter()
    if job.error:
        return _failed(job, job.error, started, workspace, dataset)
    if job.size_bytes == 0:
        return _failed(job, f"{job.source}: empty file (0 bytes)", started, workspace, dataset)
    try:
        with local_copy(job.source) as local:
            feats = extractor.extract(local, job.captions, job.video_id)
        if not isinstance(feats, VideoFeatures):
            raise TypeError(f"extractor returned {type(feats).__name__}, not VideoFeatures")
        extracted_at = _now()
        duration = float(feats.meta.get("duration_s") or 0.0)
        feats.video_id = job.video_id
        feats.meta.update(
            video_id=job.video_id,
            source=job.source,
            sha256=job.sha256,
            size_bytes=job.size_bytes,
            extract_fingerprint=job.extract_fingerprint,
            extracted_at=extracted_at,
            duration_s=duration,
            has_audio=feats.has_audio,
            n_captions=len(feats.captions),
        )
        sample = feats.to_sample()
    except Exception as exc:  # any failure of one video is that video's failed row, never the run's end
        message = str(exc) or type(exc).__name__
        name = os.path.basename(job.source)
        if name not in message:
            message = f"{job.source}: {message}"
        return _failed(job, message, started, workspace, dataset)
    path = staging_path(workspace, dataset, job.extract_fingerprint, job.video_id, job.sha256, ok=True)
    write_shard(path, [sample], workspace)
    return ExtractRecord(
        video_id=job.video_id,
        source=job.source,
        sha256=job.sha256,
        size_bytes=job.size_bytes,
        status="ok",
        error="",
        duration_s=duration,
        has_audio=feats.has_audio,
        n_captions=len(feats.captions),
        extract_fingerprint=job.extract_fingerprint,
        extracted_at=extracted_at,
        captions_sha256=feats.captions.digest(),
        staging=path,
        elapsed_s=time.perf_counter() - started,
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
    """Pack staged samples into shards ``shards/<fp>/<dataset>-<run>-<n:06d>.tar``, then append the manifest rows
    (failed ones too), then delete the staging files; returns the shard paths written.

    A record whose staging file is gone or unreadable is left out (logged): the next run sees it as not done.
    """
    run_id = run_id or new_run_id()
    prefix = f"{safe_name(dataset, what='dataset name')}-{safe_name(run_id)}"
    # Keep the latest extraction per (key, fingerprint): two staged versions of one video cannot share a shard.
    latest: dict[tuple[str, str], ExtractRecord] = {}
    superseded: list[ExtractRecord] = []
    for rec in sorted(records, key=lambda r: r.extracted_at):
        pair = (rec.key, rec.extract_fingerprint)
        if pair in latest:
            superseded.append(latest[pair])
        latest[pair] = rec
    rows: list[dict[str, Any]] = []
    written: list[str] = []
    done: list[ExtractRecord] = []
    by_fp: dict[str, list[ExtractRecord]] = {}
    for rec in latest.values():
        by_fp.setdefault(rec.extract_fingerprint, []).append(rec)
    for fp, group in by_fp.items():
        ok = [r for r in group if r.status == "ok"]
        for rec in group:
            if rec.status != "ok":
                rows.append(rec.manifest_row(""))
                done.append(rec)
        if not ok:
            continue
        folder = workspace.shard_dir(dataset, fp)
        writer = ShardWriter(
            folder, prefix, max_count, max_bytes, workspace, start_index=_next_index(workspace, folder, prefix)
        )
        with writer:
            for rec in ok:
                try:
                    samples = list(iter_shard(rec.staging, workspace.fs))
                    if len(samples) != 1 or samples[0]["__key__"] != rec.key:
                        raise ValueError(f"staging file {rec.staging} does not hold exactly the sample {rec.key!r}")
                except (OSError, ValueError) as exc:
                    log.warning("%s: %s; it will be extracted again next run", rec.video_id, exc)
                    continue
                shard = writer.write(samples[0])
                rows.append(rec.manifest_row(_relative(workspace, dataset, shard)))
                done.append(rec)
        written += writer.paths
    Manifest(workspace, dataset).append(rows)  # only now, with every shard it names renamed into place
    for rec in done + superseded:
        if rec.staging and workspace.exists(rec.staging):
            workspace.fs.rm(rec.staging)
    return written


# -- recover -----------------------------------------------------------------------------------------------------
def record_from_staging(workspace: Workspace, path: str) -> ExtractRecord | None:
    """Rebuild the record of a staging file left by a crashed run (None when it is unreadable)."""
    try:
        if path.endswith(FAILED_SUFFIX):
            data = json.loads(workspace.read_bytes(path))
            data["staging"] = path
            return ExtractRecord(**data)
        samples = list(iter_shard(path, workspace.fs))
        meta = json.loads(samples[0]["meta.json"])
        return ExtractRecord(
            video_id=meta["video_id"],
            source=meta["source"],
            sha256=meta["sha256"],
            size_bytes=int(meta["size_bytes"]),
            status="ok",
            error="",
            duration_s=float(meta.get("duration_s") or 0.0),
            has_audio=bool(meta["has_audio"]),
            n_captions=int(meta["n_captions"]),
            extract_fingerprint=meta["extract_fingerprint"],
            extracted_at=meta["extracted_at"],
            captions_sha256=captions_digest(json.loads(samples[0]["captions.json"])),
            staging=path,
        )
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning("dropping unreadable staging file %s (%s)", path, exc)
        return None


_record_from_staging = record_from_staging  # kept for callers of the earlier private name


def recover(workspace: Workspace, dataset: str) -> tuple[list[str], int]:
    """Clean up after a crashed run: delete temporaries, pack finished staging files not yet in the manifest.

    Returns (temporaries removed, records recovered). Must not run while another run writes this dataset.
    """
    root = workspace.dataset_dir(dataset)
    removed = workspace.remove_temporaries(root)
    staging_root = f"{root}/staging"
    if not workspace.exists(staging_root):
        return removed, 0
    paths = sorted(
        workspace.fs.unstrip_protocol(p) if not workspace.is_local else p
        for p in workspace.fs.find(staging_root)
        if (p.endswith(".tar") or p.endswith(FAILED_SUFFIX)) and not p.rsplit("/", 1)[-1].startswith(TMP_MARKER)
    )
    if not paths:
        return removed, 0
    recorded = {
        (r["video_id"], r["sha256"], r["extract_fingerprint"], r["extracted_at"].isoformat(timespec="microseconds"))
        for r in Manifest(workspace, dataset).read().to_pylist()
    }
    pending: list[ExtractRecord] = []
    for path in paths:
        rec = record_from_staging(workspace, path)
        if rec is None:
            workspace.fs.rm(path)
            continue
        at = datetime.fromisoformat(rec.extracted_at).isoformat(timespec="microseconds")
        if (rec.video_id, rec.sha256, rec.extract_fingerprint, at) in recorded:
            workspace.fs.rm(path)  # the crash came after the manifest append: only the deletion was missing
            continue
        pending.append(rec)
    if pending:
        write_dataset(pending, workspace, dataset)
        log.info("recovered %d finished extraction(s) of an interrupted run of %s", len(pending), dataset)
    return removed, len(pending)


# -- run ---------------------------------------------------------------------------------------------------------
def write_extract_config(workspace: Workspace, dataset: str, config: Any) -> str:
    """Store the full extract config as YAML beside its shards (``shards/<fp>/extract-config.yaml``)."""
    path = f"{workspace.shard_dir(dataset, config.fingerprint())}/{CONFIG_FILE}"
    text = config.to_yaml()
    if not workspace.exists(path) or workspace.read_bytes(path).decode("utf-8") != text:
        workspace.write_text(path, text)
    return path


def default_extractor(config: Any, workspace: Workspace) -> Extractor:
    """``pipeline.extract.Extractor`` with the workspace cache (local workspaces) for converted vectors and weights."""
    from pipeline.extract import Extractor as LibraryExtractor

    cache = os.environ.get(CACHE_ENV) or (workspace.cache_dir() if workspace.is_local else None)
    return LibraryExtractor(config, cache_dir=cache)


def dataset_totals(workspace: Workspace, dataset: str, extract_fp: str) -> tuple[int, float, int]:
    """(videos, hours, captions) of the ok rows in the current view for one fingerprint."""
    ok = Manifest(workspace, dataset).current(extract_fp, status="ok")
    if ok.num_rows == 0:
        return 0, 0.0, 0
    hours = sum(ok.column("duration_s").to_pylist()) / 3600.0
    return ok.num_rows, hours, int(sum(ok.column("n_captions").to_pylist()))


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
) -> ExtractSummary:
    """Extract what is new or changed in ``source`` into ``dataset``; see the module doc for the steps.

    ``rehash`` reads every source file again instead of trusting the hashes remembered by size and mtime.

    ``cfg`` is the ExtractConfig (default ``ExtractConfig()``, or ``extractor.config`` when an extractor is given).
    The default extractor is built only when there is something to extract, so a no-change run loads no backbone.
    ``progress(done, total, record)`` is called after each video. Finished shards are published every
    ``max_count`` videos, so a long run's work becomes visible (and durable in shards) as it goes.
    """
    started = time.perf_counter()
    workspace = workspace if workspace is not None else Workspace()
    if cfg is None:
        if extractor is not None:
            cfg = extractor.config
        else:
            from pipeline.extract import ExtractConfig

            cfg = ExtractConfig()
    if hasattr(cfg, "resolved"):  # ExtractConfig: auto precision made concrete once, for the config file too
        log.info("extract %s: %s", dataset, cfg.resolve_precision().line())
        cfg = cfg.resolved()
    if extractor is not None and extractor.config.fingerprint() != cfg.fingerprint():
        raise ValueError(
            f"extractor config fingerprint {extractor.config.fingerprint()} differs from cfg {cfg.fingerprint()}"
        )
    fp = cfg.fingerprint()
    run_id = run_id or new_run_id()
    _, recovered = recover(workspace, dataset)
    plan = plan_extract(source, dataset, fp, workspace, captions=captions, retry_failed=retry_failed, rehash=rehash)
    write_extract_config(workspace, dataset, cfg)
    records: list[ExtractRecord] = []
    pending: list[ExtractRecord] = []
    shards: list[str] = []
    if plan.jobs and extractor is None:
        extractor = default_extractor(cfg, workspace)
    for i, job in enumerate(plan.jobs):
        rec = extract_one(job, extractor, workspace, dataset)  # type: ignore[arg-type]
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
    videos, hours, n_captions = dataset_totals(workspace, dataset, fp)
    return ExtractSummary(
        dataset=dataset,
        extract_fingerprint=fp,
        extracted=sum(r.status == "ok" for r in records),
        unchanged=len(plan.unchanged),
        failed=[(r.video_id, r.error) for r in records if r.status == "failed"],
        failed_before=len(plan.failed_before),
        recovered=recovered,
        shards=shards,
        videos=videos,
        hours=hours,
        captions=n_captions,
        seconds=time.perf_counter() - started,
    )
