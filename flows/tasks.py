"""Prefect tasks: each wraps one library call and returns a small JSON record (paths, hashes, counts).

Caching: every task's cache key is built from what changes its result — a video's sha256 and the extract
fingerprint; the datasets' manifest fingerprints and the train config; the model run, the eval dataset and the
eval config — and its record is persisted under ``<workspace>/cache/prefect``. Arrays never enter Prefect's
result store: features live in shards, models in run folders, metrics in eval folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import task
from prefect.filesystems import LocalFileSystem

from pipeline.extract import ExtractConfig
from pipeline.ingest import ExtractJob, ExtractRecord, discover_videos, extract_one, plan_extract, write_dataset
from pipeline.ingest.engine import default_extractor, staging_path, write_extract_config
from storage import Workspace
from storage.manifest import Manifest
from storage.sample import Captions, captions_digest

_EXTRACTORS: dict[tuple[str, str], Any] = {}
_EXTRACTOR_LOCK = threading.Lock()
_BLOCKS: dict[str, LocalFileSystem] = {}


class CorruptVideo(RuntimeError):
    """A video that cannot be decoded: retrying will not help."""


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (for cache keys)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def result_storage(ws: Workspace) -> LocalFileSystem | None:
    """A saved LocalFileSystem block under the workspace, so cache records live beside the artifacts.

    Prefect needs result storage blocks saved server-side; the block name derives from the path, so two
    workspaces never share cache records. Remote workspaces keep Prefect's default local result storage.
    """
    if not ws.is_local:
        return None
    from prefect.settings import PREFECT_API_URL

    base = str(Path(ws.cache_dir("prefect")))
    memo = f"{base}@{PREFECT_API_URL.value()}"  # a block saved in one API does not exist in another
    if memo not in _BLOCKS:
        Path(base).mkdir(parents=True, exist_ok=True)
        block = LocalFileSystem(basepath=base)
        block.save(f"mmcaps-results-{digest(base)[:12]}", overwrite=True)
        _BLOCKS[memo] = block
    return _BLOCKS[memo]


class _SerialExtractor:
    """An extractor shared by the threads of one process, one video at a time.

    The backbones already use every core through torch's intra-op threads; running two videos through them at
    once would only double the memory. Dask workers are processes and each holds its own.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.config = inner.config
        self.lock = threading.Lock()

    def extract(self, video_path: str, captions: Any, video_id: str) -> Any:
        with self.lock:
            return self.inner.extract(video_path, captions, video_id)


def shared_extractor(config: ExtractConfig, ws: Workspace) -> Any:
    """One extractor (backbones loaded once) per process, config and workspace."""
    key = (config.fingerprint(), ws.root)
    with _EXTRACTOR_LOCK:
        if key not in _EXTRACTORS:
            _EXTRACTORS[key] = _SerialExtractor(default_extractor(config, ws))
        return _EXTRACTORS[key]


def file_signature(paths: list[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime) per file: cheap, and changes when a file is added, removed or rewritten."""
    out = []
    for p in sorted(paths):
        try:
            st = os.stat(p)
            out.append((p, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((p, -1, -1))
    return out


def source_files(source: str | list[str], captions: str | None) -> list[str]:
    """Every file whose change can change a plan: the videos, subtitle files beside them, a captions file."""
    videos = discover_videos(source)
    extra = [captions] if captions else []
    for v in videos:
        if "://" in v:
            continue
        stem = os.path.splitext(v)[0]
        extra += [p for p in (f"{stem}.vtt", f"{stem}.en.vtt", f"{stem}.srt") if os.path.exists(p)]
    return videos + extra


# -- job and record (de)serialisation: Prefect stores JSON records ------------------------------------------------
def job_to_dict(job: ExtractJob) -> dict[str, Any]:
    data = asdict(job)
    data["captions"] = job.captions.to_json() if job.captions is not None else None
    return data


def job_from_dict(data: dict[str, Any]) -> ExtractJob:
    data = dict(data)
    if data.get("captions") is not None:
        data["captions"] = Captions.from_json(data["captions"])
    return ExtractJob(**data)


def record_from_dict(data: dict[str, Any]) -> ExtractRecord:
    return ExtractRecord(**data)


# -- cache keys ---------------------------------------------------------------------------------------------------
def _plan_key(context: Any, p: dict[str, Any]) -> str:
    """The source's files (path, size, mtime), the config and the options; not the manifest's contents.

    A plan is a function of the source and of what the dataset held when it was made; the jobs of a cached
    plan that a later run finds already in the manifest are dropped by the flow (:func:`pending_jobs`), so
    re-running an unchanged source is a cache hit even though the manifest changed since the plan was made.
    (After deleting a dataset's folder, run with ``--force``: a cached plan may predate some of its videos.)
    """
    return "plan-" + digest(
        p["dataset"],
        p["config"].fingerprint(),
        p["retry_failed"],
        file_signature(source_files(p["source"], p["captions"])),
    )


def pending_jobs(
    jobs: list[dict[str, Any]], root: str, dataset: str, retry_failed: bool
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Split a plan's jobs by what the manifest already answers (same video, bytes and fingerprint).

    Returns (jobs still to run, ids already extracted, ids that failed before and are not retried).
    """
    ws = Workspace(root)
    if not jobs or not ws.exists(ws.manifest_path(dataset)):
        return jobs, [], []
    status = {
        (r["video_id"], r["sha256"], r["extract_fingerprint"]): r["status"]
        for r in Manifest(ws, dataset).current().to_pylist()
    }
    todo, done, failed = [], [], []
    for job in jobs:
        known = status.get((job["video_id"], job["sha256"], job["extract_fingerprint"]))
        if known == "ok":
            done.append(job["video_id"])
        elif known is not None and not retry_failed:
            failed.append(job["video_id"])
        else:
            todo.append(job)
    return todo, done, failed


def _extract_key(context: Any, p: dict[str, Any]) -> str:
    job = p["job"]
    return "extract-" + digest(
        p["dataset"], job["video_id"], job["sha256"], job["extract_fingerprint"], job["captions"]
    )


def _write_key(context: Any, p: dict[str, Any]) -> str:
    records = sorted((r["video_id"], r["sha256"], r["status"], r["extracted_at"]) for r in p["records"])
    return "write-" + digest(p["dataset"], records)


def _no_retry_for_corrupt(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient failures (a killed process, a full disk); never a video that cannot be decoded."""
    try:
        state.result()
    except CorruptVideo:
        return False
    except Exception:
        return True
    return False


# -- extraction ---------------------------------------------------------------------------------------------------
@task(name="plan-extraction", cache_key_fn=_plan_key, persist_result=True, result_serializer="json")
def plan_task(
    source: str | list[str],
    dataset: str,
    config: ExtractConfig,
    root: str,
    captions: str | None,
    retry_failed: bool,
    rehash: bool = False,
) -> dict[str, Any]:
    """Compare the source with the manifest: the jobs to run (new, changed, retried) and what is done.

    ``rehash`` (the flows' ``force``) reads every source again instead of trusting remembered hashes.
    """
    ws = Workspace(root)
    write_extract_config(ws, dataset, config)
    plan = plan_extract(
        source, dataset, config.fingerprint(), ws, captions=captions, retry_failed=retry_failed, rehash=rehash
    )
    return {
        "jobs": [job_to_dict(j) for j in plan.jobs],
        "unchanged": plan.unchanged,
        "failed_before": plan.failed_before,
        "absent": plan.absent,
    }


@task(
    name="extract-video",
    task_run_name="extract-{job[video_id]}",
    cache_key_fn=_extract_key,
    persist_result=True,
    result_serializer="json",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=_no_retry_for_corrupt,
)
def extract_video_task(job: dict[str, Any], config: ExtractConfig, root: str, dataset: str) -> dict[str, Any]:
    """Extract one video into the dataset's staging area and return its record; a video that fails raises
    :class:`CorruptVideo` (its failure is staged too, so the manifest gets its row)."""
    ws = Workspace(root)
    record = extract_one(job_from_dict(job), shared_extractor(config, ws), ws, dataset)
    if record.status != "ok":
        raise CorruptVideo(record.error or f"{job['source']}: extraction failed")
    return asdict(record)


def failed_record(job: dict[str, Any], root: str, dataset: str, error: str) -> dict[str, Any]:
    """The staged failure of a video whose task failed (or a fresh one when nothing was staged)."""
    from pipeline.ingest.engine import one_line, record_from_staging

    ws = Workspace(root)
    path = staging_path(ws, dataset, job["extract_fingerprint"], job["video_id"], job["sha256"], ok=False)
    rec = record_from_staging(ws, path) if ws.exists(path) else None
    if rec is not None:
        return asdict(rec)
    from pipeline.ingest.engine import utc_now

    return asdict(
        ExtractRecord(
            video_id=job["video_id"],
            source=job["source"],
            sha256=job["sha256"],
            size_bytes=job["size_bytes"],
            status="failed",
            error=one_line(error),
            duration_s=0.0,
            has_audio=False,
            n_captions=len(job["captions"]["text"]) if job.get("captions") else 0,
            extract_fingerprint=job["extract_fingerprint"],
            extracted_at=utc_now(),
            captions_sha256=captions_digest(job.get("captions")),
        )
    )


def record_is_usable(record: dict[str, Any], root: str, dataset: str) -> bool:
    """A cached record is usable while its staging file exists or the manifest already holds it."""
    ws = Workspace(root)
    if record.get("staging") and ws.exists(record["staging"]):
        return True
    current = Manifest(ws, dataset).current(record["extract_fingerprint"]).to_pylist()
    return any(r["video_id"] == record["video_id"] and r["sha256"] == record["sha256"] for r in current)


@task(name="write-shards", cache_key_fn=_write_key, persist_result=True, result_serializer="json")
def write_task(records: list[dict[str, Any]], dataset: str, root: str, run_id: str) -> dict[str, Any]:
    """Pack staged samples into shards (atomic rename), then append the manifest rows, then drop the staging."""
    ws = Workspace(root)
    fresh = [record_from_dict(r) for r in records if _pending(ws, r)]
    shards = write_dataset(fresh, ws, dataset, run_id=run_id) if fresh else []
    return {"shards": shards, "rows": len(fresh)}


def _pending(ws: Workspace, record: dict[str, Any]) -> bool:
    """Not yet written: its staging file still exists, or it is a failure that never got one.

    A record whose staging file is gone was written by an earlier run (write deletes staging files only after
    the manifest holds their rows).
    """
    staging = record.get("staging") or ""
    return not staging or ws.exists(staging)


# -- training -----------------------------------------------------------------------------------------------------
def _train_key(context: Any, p: dict[str, Any]) -> str:
    from storage.dataset import open_dataset

    ws = Workspace(p["root"])
    fps = [open_dataset(ws, d).fingerprint for d in p["datasets"]]
    return "train-" + digest(p["config"].fingerprint(), list(p["datasets"]), fps, p["run_id"])


@task(name="train", cache_key_fn=_train_key, persist_result=True, result_serializer="json")
def train_task(
    datasets: list[str], config: Any, root: str, run_id: str | None, resume: bool, progress_key: str
) -> dict[str, Any]:
    """Train (or return the finished run with the same inputs); returns the run's id, folder and final losses."""
    from flows.artifacts import Progress
    from pipeline.train import train

    progress = Progress(progress_key, "training steps")

    def on_step(step: int, total: int, losses: dict[str, float]) -> None:
        progress.update(step, total)

    result = train(datasets, config, Workspace(root), run_id=run_id, resume=resume, progress=on_step)
    progress.update(1, 1)
    out = asdict(result)
    out["final_losses"] = {k: float(v) for k, v in result.final_losses.items()}
    return out


# -- evaluation ---------------------------------------------------------------------------------------------------
def _score_key(context: Any, p: dict[str, Any]) -> str:
    from pipeline.evaluate.run import eval_dataset_name
    from storage.dataset import open_dataset

    ws = Workspace(p["root"])
    final = f"{ws.model_dir(p['run_id'])}/final.pt"
    ckpt = file_signature([final]) if ws.is_local else []
    try:
        data_fp = open_dataset(ws, eval_dataset_name(p["name"])).fingerprint
    except (FileNotFoundError, ValueError):
        data_fp = ""
    return "score-" + digest(p["run_id"], ckpt, p["spec"], p["config"].fingerprint(), data_fp)


@task(name="score", cache_key_fn=_score_key, persist_result=True, result_serializer="json")
def score_task(run_id: str, spec: str, name: str, config: Any, root: str) -> dict[str, Any]:
    """Embed and score one extracted evaluation set, then write its figures and report.html."""
    from pipeline.evaluate.run import prepare, report, score

    ws = Workspace(root)
    dataset = prepare(spec, config)
    metrics = score(dataset, run_id, ws, config)
    metrics["report"] = report(run_id, dataset.name, ws, config)
    return metrics
