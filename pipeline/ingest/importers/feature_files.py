"""Feature files as an ingest source: a layout of per-video feature files → a dataset the trainer reads like an
extracted one.

An import is a source whose videos are feature files; the driver (:func:`pipeline.ingest.driver.ingest`) runs it as
it runs videos::

    plan = plan_import(layout, dataset, cfg, ws, captions=...)   # files' sha256 + manifest → jobs
    rec = import_one(job, cfg, ws, extractor)                     # read + check → feature store; text as extraction
    summary = run_import(layout, dataset, cfg, ws)                # the driver over FeatureFiles

A video's key is the sha256 of its files' sha256s (and of the listing's duration, when it gives one): there is no
video file. Its ``rgb2d``, ``rgb3d`` and ``audio`` entries go to the feature store under that key and the import's
stream fingerprints (:class:`~pipeline.ingest.importers.config.ImportConfig`), each entry's meta naming its file, that
file's sha256 and the layout; then :func:`pipeline.ingest.videos.extract_one` finds only text missing and computes
it from the captions with the recipe's word vectors — the extraction's own code path — and makes the record. So the
samples, shards and manifest rows are written by the one writer extraction uses, and ``open_dataset`` and training
read the result as they read an extracted dataset.

A video whose files fail a check (:mod:`~pipeline.ingest.importers.checks`) gets a failed row naming the file and
stores nothing; the others import. Re-running imports only new or changed videos (by sha256, remembered by path,
size and mtime in the workspace's hash cache) and captions.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from pipeline.ingest.driver import Executor, ProgressFn, ingest
from pipeline.ingest.importers.checks import ImportCheckError, read_video
from pipeline.ingest.importers.config import IMPORTER_VERSION, LAYOUT_NOTES, ImportConfig
from pipeline.ingest.importers.layouts import AnyLayout, ImportItem, discover
from pipeline.ingest.publish import DEFAULT_MAX_BYTES, DEFAULT_MAX_COUNT, write_extract_config, write_text_once
from pipeline.ingest.records import (
    ExtractJob,
    ExtractRecord,
    IngestPlan,
    IngestSummary,
    JobDict,
    failed_record,
    one_line,
)
from pipeline.ingest.videos import (
    Extractor,
    ExtractorLike,
    caption_summary,
    extract_one,
    job_reason,
    process_extractor,
)
from storage.features import FeatureStore, StreamArrays
from storage.hashing import HashCache, sha256_bytes
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
    write_text_once(workspace, f"{folder}/{IMPORT_CONFIG_FILE}", cfg.to_yaml())
    return folder


def plan_import(
    layout: AnyLayout | Sequence[ImportItem],
    dataset: str,
    cfg: ImportConfig,
    workspace: Workspace,
    *,
    captions: str | os.PathLike[str] | None = None,
    retry_failed: bool = False,
    rehash: bool = False,
) -> IngestPlan:
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
    plan = IngestPlan(dataset, fp, jobs=[], unchanged=[], failed_before=[])
    for item in items:
        file_sha, size, error = _hash_files(item, hashes)
        sha = video_key(file_sha, item.duration_s)
        reason = job_reason(current.get(item.video_id), sha, caption_summary(item.captions), retry_failed)
        if plan.admits(item.video_id, reason):
            plan.jobs.append(
                ImportJob(
                    video_id=item.video_id,
                    files=dict(item.files),
                    file_sha256=file_sha,
                    sha256=sha,
                    size_bytes=size,
                    extract_fingerprint=fp,
                    stream_fingerprints=stream_fps,
                    captions=item.captions,
                    duration_s=item.duration_s,
                    reason=str(reason),
                    error=error,
                )
            )
    hashes.save()
    listed = {i.video_id for i in items}
    plan.absent = [vid for vid in current if vid not in listed]
    return plan


def _hash_files(item: ImportItem, hashes: HashCache) -> tuple[dict[str, str], int, str]:
    """(sha256 per stream, total size, error) of one video's files; a missing file is left out (its check names it
    later), an unreadable one is the video's error."""
    fs = LocalFileSystem()
    file_sha: dict[str, str] = {}
    size, error = 0, item.error
    for stream, path in item.files.items():
        if not os.path.isfile(path):
            continue
        try:
            file_sha[stream], n = hashes.sha256(path, path, fs)
            size += n
        except OSError as exc:  # unreadable: the video's failed row names the file
            error = error or one_line(f"{path}: cannot read ({exc})")
    return file_sha, size, error


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


def import_one(job: ImportJob, cfg: ImportConfig, workspace: Workspace, extractor: ExtractorLike) -> ExtractRecord:
    """Check one video's files and store its streams (those the store lacks), then let
    :func:`~pipeline.ingest.videos.extract_one` encode its captions and make its record. Never raises for bad
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

    return record


@dataclass(frozen=True)
class FeatureFileWorker:
    """Imports batches of jobs wherever an executor runs them (picklable; ``extractor``, of the config's text
    recipe, only for in-process executors)."""

    config: ImportConfig
    root: str
    extractor: Extractor | None = field(default=None, compare=False)

    def run(self, jobs: Sequence[ImportJob]) -> list[ExtractRecord]:
        ws = Workspace(self.root)
        extractor: ExtractorLike = self.extractor or functools.partial(process_extractor, self.config.text_recipe(), ws)
        return [import_one(job, self.config, ws, extractor) for job in jobs]


@dataclass
class FeatureFiles:
    """A layout of per-video feature files as a source for :func:`pipeline.ingest.driver.ingest` (``config``
    defaults to ``ImportConfig(layout=layout.name)``; word vectors load only when captions need encoding)."""

    layout: AnyLayout | Sequence[ImportItem]
    config: ImportConfig | None = None
    captions: str | os.PathLike[str] | None = None
    extractor: Extractor | None = None  # of config.text_recipe(), to use instead of loading one
    kind: str = "import"
    batch_size: int = 256  # an import costs milliseconds, a task run more

    def __post_init__(self) -> None:
        if self.config is None:
            if isinstance(self.layout, (list, tuple)):
                raise ValueError("importing discovered items needs their ImportConfig")
            self.config = ImportConfig(layout=self.layout.name)
        self.config = self.config.resolved()

    @property
    def cfg(self) -> ImportConfig:
        assert self.config is not None  # set in __post_init__
        return self.config

    def prepare(self, workspace: Workspace, dataset: str) -> None:
        write_import_config(workspace, dataset, self.cfg)

    def plan(self, workspace: Workspace, dataset: str, *, retry_failed: bool, rehash: bool) -> IngestPlan:
        return plan_import(
            self.layout, dataset, self.cfg, workspace, captions=self.captions, retry_failed=retry_failed, rehash=rehash
        )

    def worker(self, workspace: Workspace) -> FeatureFileWorker:
        return FeatureFileWorker(self.cfg, workspace.root, self.extractor)

    def failed(self, job: ImportJob, error: str) -> ExtractRecord:
        return failed_record(job.extract_job(), error)


def run_import(
    layout: AnyLayout,
    dataset: str,
    cfg: ImportConfig | None = None,
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
    batch_size: int | None = None,
) -> IngestSummary:
    """Import what is new or changed in ``layout`` into ``dataset``: :func:`~pipeline.ingest.driver.ingest` over
    :class:`FeatureFiles` (the lock, publication every ``max_count`` videos, ``rehash`` as for extraction)."""
    return ingest(
        FeatureFiles(layout, cfg, captions, extractor),
        dataset,
        workspace if workspace is not None else Workspace(),
        executor=executor,
        retry_failed=retry_failed,
        rehash=rehash,
        max_count=max_count,
        max_bytes=max_bytes,
        run_id=run_id,
        batch_size=batch_size,
        wait_s=wait_s,
        progress=progress,
    )
