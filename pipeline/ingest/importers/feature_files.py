"""The import driver: a layout of per-video feature files → a dataset the trainer reads like an extracted one.

An import is a source whose videos are feature files. Its steps mirror the extraction engine's
(:mod:`pipeline.ingest.engine`), and the last ones are that engine's own::

    plan = plan_import(layout, dataset, cfg, ws, captions=...)   # files' sha256 + manifest → jobs
    jobs = pending_jobs(plan.jobs, ws, dataset, retry)            # the engine's: minus what the manifest got since
    rec = import_one(job, cfg, ws, extractor)                     # read + check → feature store; text as extraction
    shards = write_dataset(records, ws, dataset, run_id=...)      # the engine's: store → samples → shards → manifest
    summary = summarise(plan, records, shards, ws, started)       # the engine's ExtractSummary

A video's key is the sha256 of its files' sha256s (and of the listing's duration, when it gives one): there is no
video file. Its ``rgb2d``, ``rgb3d`` and ``audio`` entries go to the feature store under that key and the import's
stream fingerprints (:class:`~pipeline.importers.config.ImportConfig`), each entry's meta naming its file, that
file's sha256 and the layout; then :func:`pipeline.ingest.engine.extract_one` finds only text missing and computes
it from the captions with the recipe's word vectors — the extraction's own code path — and makes the record. So the
samples, shards and manifest rows are written by the one writer extraction uses, and ``open_dataset`` and training
read the result as they read an extracted dataset.

A video whose files fail a check (:mod:`~pipeline.ingest.importers.checks`) gets a failed row naming the file and
stores nothing; the others import. Re-running imports only new or changed videos (by sha256, remembered by path,
size and mtime in the workspace's hash cache) and captions.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec.implementations.local as local_fs

from pipeline.ingest.engine import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_COUNT,
    ExtractJob,
    Extractor,
    ExtractRecord,
    ExtractSummary,
    JobDict,
    default_extractor,
    extract_one,
    failed_record,
    new_run_id,
    one_line,
    pending_jobs,
    recover,
    summarise,
    write_dataset,
    write_extract_config,
)
from pipeline.ingest.importers.checks import ImportCheckError, read_video
from pipeline.ingest.importers.config import IMPORTER_VERSION, LAYOUT_NOTES, ImportConfig
from pipeline.ingest.importers.layouts import AnyLayout, ImportItem, discover
from storage.features import FeatureStore, StreamArrays
from storage.hashing import HashCache, sha256_bytes
from storage.locks import dataset_lock
from storage.manifest import Manifest
from storage.sample import Captions, captions_digest
from storage.workspace import Workspace

IMPORT_CONFIG_FILE = "import-config.yaml"  # the full ImportConfig, beside extract-config.yaml (the recipe)


def video_key(file_sha256: dict[str, str], duration_s: float | None) -> str:
    """A video's sha256: of its files' sha256s by stream and the listed duration (what its entries derive from)."""
    blob = json.dumps({"files": file_sha256, "duration_s": duration_s, "importer": IMPORTER_VERSION}, sort_keys=True)
    return sha256_bytes(blob.encode("utf-8"))


@dataclass(frozen=True)
class ImportJob(JobDict):
    """One video to import. Small and picklable (Prefect passes it to workers as a dict)."""

    video_id: str
    files: dict[str, str]  # stream -> path (rgb2d, rgb3d, audio when there is one)
    file_sha256: dict[str, str]
    sha256: str  # video_key(file_sha256, duration_s)
    size_bytes: int  # of the files together
    extract_fingerprint: str  # the import fingerprint (names the shard folder)
    stream_fingerprints: dict[str, str]
    captions: Captions | None = None
    duration_s: float | None = None
    reason: str = "new"  # new | changed | retry | captions changed
    error: str = ""

    @property
    def captions_sha256(self) -> str:
        return captions_digest(self.captions)

    def extract_job(self) -> ExtractJob:
        """The engine's job for this video: source its 2D file, key its sha256 (the store keys derive from it)."""
        return ExtractJob(
            video_id=self.video_id,
            source=self.files["rgb2d"],
            sha256=self.sha256,
            size_bytes=self.size_bytes,
            extract_fingerprint=self.extract_fingerprint,
            stream_fingerprints=dict(self.stream_fingerprints),
            captions=self.captions,
            reason=self.reason,
            error=self.error,
        )


@dataclass
class ImportPlan:
    """As :class:`pipeline.ingest.engine.ExtractPlan` (``summarise`` reads it), with import jobs."""

    dataset: str
    extract_fingerprint: str
    jobs: list[ImportJob]
    unchanged: list[str]
    failed_before: list[str]
    absent: list[str] = field(default_factory=list)
    layout: str = "vfe"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "jobs": [j.to_dict() for j in self.jobs]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportPlan:
        return cls(**{**data, "jobs": [ImportJob.from_dict(j) for j in data["jobs"]]})


@dataclass(frozen=True)
class _RecipeFile:
    """What ``write_extract_config`` writes beside an imported dataset's shards: the recipe, under the import's
    fingerprint (the shard folder)."""

    config: ImportConfig

    def fingerprint(self) -> str:
        return self.config.fingerprint()

    def stream_fingerprints(self) -> dict[str, str]:
        return self.config.stream_fingerprints()

    def to_yaml(self) -> str:
        return self.config.recipe_yaml()


def write_import_config(workspace: Workspace, dataset: str, cfg: ImportConfig) -> str:
    """``extract-config.yaml`` (the recipe; evaluation and training read it as an extracted dataset's) and
    ``import-config.yaml`` (the whole ImportConfig) beside the shards; returns the folder."""
    write_extract_config(workspace, dataset, _RecipeFile(cfg))
    folder = workspace.shard_dir(dataset, cfg.fingerprint())
    path = f"{folder}/{IMPORT_CONFIG_FILE}"
    text = cfg.to_yaml()
    if not workspace.exists(path) or workspace.read_bytes(path).decode("utf-8") != text:
        workspace.write_text(path, text)
    return folder


def _reason(row: dict[str, Any] | None, sha: str, captions: Captions | None, retry_failed: bool) -> str | None:
    """Why a listed video is a job, or None when it is not (the rule of ``plan_extract``: new, changed bytes, a
    retried failure, changed captions); ``"failed before"`` for a failure not retried."""
    if row is None:
        return "new"
    if row["sha256"] != sha:
        return "changed"
    if row["status"] != "ok":
        return "retry" if retry_failed else "failed before"
    n_caps = len(captions) if captions is not None else 0
    if row["n_captions"] != n_caps or (row["captions_sha256"] and row["captions_sha256"] != captions_digest(captions)):
        return "captions changed"
    return None


def plan_import(
    layout: AnyLayout | Sequence[ImportItem],
    dataset: str,
    cfg: ImportConfig,
    workspace: Workspace,
    *,
    captions: str | os.PathLike[str] | None = None,
    retry_failed: bool = False,
    rehash: bool = False,
) -> ImportPlan:
    """Compare the layout's videos (their files' sha256, listed duration, captions) with the manifest; list the jobs.

    ``layout`` may also be already discovered items (:func:`~pipeline.ingest.importers.layouts.discover`).
    """
    if isinstance(layout, (list, tuple)):
        items = list(layout)
    else:
        if layout.name != cfg.layout:
            raise ValueError(f"the files are in the {layout.name} layout but the config imports {cfg.layout}")
        items = discover(layout, captions)
    fp, stream_fps = cfg.fingerprint(), cfg.stream_fingerprints()
    current = {r["video_id"]: r for r in Manifest(workspace, dataset).current(fp).to_pylist()}
    hashes = HashCache(workspace, read=not rehash)
    fs = local_fs.LocalFileSystem()
    jobs: list[ImportJob] = []
    unchanged: list[str] = []
    failed_before: list[str] = []
    for item in items:
        sha_size: dict[str, tuple[str, int]] = {}
        error = item.error
        for stream, path in item.files.items():
            if not os.path.isfile(path):
                continue
            try:
                sha_size[stream] = hashes.sha256(path, path, fs)
            except OSError as exc:  # unreadable: the video's failed row names the file
                error = error or one_line(f"{path}: cannot read ({exc})")
        file_sha = {s: sha for s, (sha, _) in sha_size.items()}
        sha = video_key(file_sha, item.duration_s)
        reason = _reason(current.get(item.video_id), sha, item.captions, retry_failed)
        if reason is None:
            unchanged.append(item.video_id)
            continue
        if reason == "failed before":
            failed_before.append(item.video_id)
            continue
        jobs.append(
            ImportJob(
                video_id=item.video_id,
                files=dict(item.files),
                file_sha256=file_sha,
                sha256=sha,
                size_bytes=sum(size for _, size in sha_size.values()),
                extract_fingerprint=fp,
                stream_fingerprints=stream_fps,
                captions=item.captions,
                duration_s=item.duration_s,
                reason=reason,
                error=error,
            )
        )
    hashes.save()
    listed = {i.video_id for i in items}
    absent = [vid for vid in current if vid not in listed]
    return ImportPlan(dataset, fp, jobs, unchanged, failed_before, absent, cfg.layout)


def _entries(job: ImportJob, cfg: ImportConfig) -> dict[str, StreamArrays]:
    """The checked arrays of one video as feature-store entries, each meta naming its file and what was done."""
    checked = read_video(
        job.files,
        avlnet=cfg.layout == "avlnet",
        duration_s=job.duration_s,
        tolerance_s=cfg.tolerance_s,
        tolerance_ratio=cfg.tolerance_ratio,
    )
    common = {"imported": cfg.layout, "layout": LAYOUT_NOTES[cfg.layout], "weights": f"imported:{cfg.layout}"}

    def meta(stream: str, **extra: Any) -> dict[str, Any]:
        source = job.files.get(stream, "")
        return {**common, "source": source, "source_sha256": job.file_sha256.get(stream, ""),
                "source_dtype": checked.source_dtypes.get(stream, ""), **extra}  # fmt: skip

    probe = {"duration_s": checked.duration_s}  # what a sample's duration_s is read from (VideoFeatures.from_streams)
    audio_extra: dict[str, Any] = {"columns": int(checked.mel.shape[1])}
    if "audio" not in job.files:
        audio_extra["note"] = "no audio file: an empty [40, 0] mel, has_audio false"
    if checked.padding_removed:
        audio_extra["padding_columns_removed"] = checked.padding_removed
    return {
        "rgb2d": StreamArrays(checked.rgb2d, meta("rgb2d", rows=int(checked.rgb2d.shape[0]), probe=probe)),
        "rgb3d": StreamArrays(checked.rgb3d, meta("rgb3d", rows=int(checked.rgb3d.shape[0]), probe=probe)),
        "audio": StreamArrays(checked.mel, meta("audio", probe=probe, **audio_extra)),
    }


def import_one(
    job: ImportJob, cfg: ImportConfig, workspace: Workspace, extractor: Extractor | Callable[[], Extractor]
) -> ExtractRecord:
    """Check one video's files and store its streams (those the store lacks), then let the engine's
    :func:`~pipeline.ingest.engine.extract_one` encode its captions and make its record. Never raises for bad
    input: a file that fails a check gives a failed record naming it, and nothing of the video is stored.

    ``extractor`` (or a zero-argument callable making one, called only when captions must be encoded) is an
    extractor of ``cfg.text_recipe()``: only its text path runs.
    """
    started = time.perf_counter()
    ejob = job.extract_job()
    if job.error:
        return failed_record(ejob, job.error, started)
    store = FeatureStore(workspace)
    keys = ejob.store_keys()
    missing = [s for s in store.missing(job.stream_fingerprints, keys) if s != "text"]
    if missing:
        try:
            entries = _entries(job, cfg)
        except ImportCheckError as exc:
            return failed_record(ejob, one_line(str(exc)), started)
        for stream in missing:
            store.put(stream, job.stream_fingerprints[stream], keys[stream], entries[stream])
    record = extract_one(ejob, extractor, workspace)
    record.computed = sorted(set(record.computed) | set(missing), key=list(job.stream_fingerprints).index)
    record.elapsed_s = time.perf_counter() - started
    return record


def run_import(
    layout: AnyLayout,
    dataset: str,
    cfg: ImportConfig | None = None,
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
    """Import what is new or changed in ``layout`` into ``dataset``: the steps of the module doc, in order.

    ``cfg`` defaults to ``ImportConfig(layout=layout.name)``. Word vectors load only when captions need encoding.
    Shards are published every ``max_count`` videos. The dataset's writer lock is held throughout (as
    ``run_extract`` holds it): a second writer waits up to ``wait_s``, then :class:`storage.locks.LockBusy`.
    """
    workspace = workspace if workspace is not None else Workspace()
    with dataset_lock(workspace, dataset, owner=f"import {dataset}", wait_s=wait_s):
        return _import_locked(
            layout, dataset, cfg, workspace, captions, retry_failed, extractor, progress, max_count, max_bytes,
            run_id, rehash,
        )  # fmt: skip


def _import_locked(
    layout: AnyLayout,
    dataset: str,
    cfg: ImportConfig | None,
    workspace: Workspace,
    captions: str | os.PathLike[str] | None,
    retry_failed: bool,
    extractor: Extractor | None,
    progress: Callable[[int, int, ExtractRecord], None] | None,
    max_count: int,
    max_bytes: int,
    run_id: str | None,
    rehash: bool,
) -> ExtractSummary:
    started = time.perf_counter()
    cfg = (cfg or ImportConfig(layout=layout.name)).resolved()
    run_id = run_id or new_run_id()
    recover(workspace, dataset)
    plan = plan_import(layout, dataset, cfg, workspace, captions=captions, retry_failed=retry_failed, rehash=rehash)
    write_import_config(workspace, dataset, cfg)
    jobs, done_since, failed_since = pending_jobs(plan.jobs, workspace, dataset, retry_failed)  # type: ignore[arg-type]
    made: list[Extractor] = [extractor] if extractor is not None else []

    def make() -> Extractor:
        if not made:
            made.append(default_extractor(cfg.text_recipe(), workspace))
        return made[0]

    records: list[ExtractRecord] = []
    pending: list[ExtractRecord] = []
    shards: list[str] = []
    for i, job in enumerate(jobs):
        rec = import_one(job, cfg, workspace, make)
        records.append(rec)
        pending.append(rec)
        if progress is not None:
            progress(i + 1, len(jobs), rec)
        if sum(r.status == "ok" for r in pending) >= max_count:
            shards += write_dataset(
                pending, workspace, dataset, run_id=run_id, max_count=max_count, max_bytes=max_bytes
            )
            pending = []
    if pending:
        shards += write_dataset(pending, workspace, dataset, run_id=run_id, max_count=max_count, max_bytes=max_bytes)
    return summarise(
        plan, records, shards, workspace, started, done_since=len(done_since), failed_since=len(failed_since)
    )  # type: ignore[arg-type]
