"""Prefect tasks: each wraps one library call and returns a small JSON record (paths, hashes, counts).

Caching: every task's cache key is built from what changes its result — a video's sha256 and the extract
fingerprint; the datasets' manifest fingerprints and the train config; the model run, the eval dataset and the
eval config — and its record is persisted under ``<workspace>/cache/prefect``. Arrays never enter Prefect's
result store: features live in shards, models in run folders, metrics in eval folders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import task

from flows import artifacts
from flows.artifacts import Progress, terminal_bar
from pipeline.evaluate.run import eval_dataset_name, report, score
from pipeline.extract import ExtractConfig
from pipeline.ingest import (
    ExtractJob,
    ExtractPlan,
    ExtractRecord,
    discover_videos,
    extract_one,
    plan_extract,
    write_dataset,
)
from pipeline.ingest.engine import default_extractor, write_extract_config
from pipeline.runs import RunFolder
from pipeline.train import train
from storage import Workspace
from storage.dataset import open_dataset
from storage.sample import captions_digest

_EXTRACTORS: dict[tuple[str, str], Any] = {}
_EXTRACTOR_LOCK = threading.Lock()


class CorruptVideo(RuntimeError):
    """A video that cannot be decoded: retrying will not help."""


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (for cache keys)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def result_storage(ws: Workspace) -> Path | None:
    """Where task records live: ``<workspace>/cache/prefect``, by path (Prefect makes an unsaved local file system
    of it), so cache records sit beside the artifacts they describe and two workspaces never share them. Remote
    workspaces keep Prefect's default local result storage."""
    if not ws.is_local:
        return None
    base = Path(ws.cache_dir("prefect"))
    base.mkdir(parents=True, exist_ok=True)
    return base


class _SerialExtractor:
    """An extractor shared by the threads of one process, one video at a time.

    The backbones already use every core through torch's intra-op threads; running two videos through them at
    once would only double the memory. Dask workers are processes and each holds its own.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.config = inner.config
        self.lock = threading.Lock()

    def extract_streams(self, video_path: str, captions: Any, streams: Any) -> Any:
        with self.lock:
            return self.inner.extract_streams(video_path, captions, streams)


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


# -- plans as JSON (Prefect stores JSON records) --------------------------------------------------------------------
def plan_to_dict(plan: ExtractPlan) -> dict[str, Any]:
    return {**asdict(plan), "jobs": [j.to_dict() for j in plan.jobs]}


def plan_from_dict(data: dict[str, Any]) -> ExtractPlan:
    return ExtractPlan(**{**data, "jobs": [ExtractJob.from_dict(j) for j in data["jobs"]]})


# -- cache keys: never raise (a key that cannot be computed means "do not cache this call") ----------------------------
def _safe_key(prefix: str, parts: Callable[[], tuple]) -> str:
    try:
        return f"{prefix}-" + digest(*parts())
    except Exception as exc:  # a key must never fail the task: run it uncached instead
        logging.getLogger(__name__).debug("no cache key for %s (%s); running uncached", prefix, exc)
        return f"{prefix}-uncached-{uuid.uuid4().hex}"


def _plan_key(context: Any, p: dict[str, Any]) -> str:
    """The source's files (path, size, mtime), the config and the options; not the manifest's contents.

    A plan is a function of the source and of what the dataset held when it was made; the jobs of a cached plan
    that a later run finds already in the manifest are dropped by :func:`pipeline.ingest.pending_jobs`, so
    re-running an unchanged source is a cache hit even though the manifest changed since the plan was made.
    (After deleting a dataset's folder, run with ``--force``: a cached plan may predate some of its videos.)
    """
    return _safe_key(
        "plan",
        lambda: (
            p["dataset"],
            p["config"].fingerprint(),
            p["retry_failed"],
            file_signature(source_files(p["source"], p["captions"])),
        ),
    )


def _extract_key(context: Any, p: dict[str, Any]) -> str:
    job = p["job"]
    return _safe_key(
        "extract",
        lambda: (job["video_id"], job["sha256"], job["stream_fingerprints"], captions_digest(job["captions"])),
    )


def _write_key(context: Any, p: dict[str, Any]) -> str:
    return _safe_key(
        "write",
        lambda: (
            p["dataset"],
            sorted((r["video_id"], r["sha256"], r["status"], r["extracted_at"]) for r in p["records"]),
        ),
    )


def _no_retry_for_corrupt(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient failures (a killed process, a full disk); never a video that cannot be decoded."""
    try:
        state.result()
    except CorruptVideo:
        return False
    except Exception:
        return True
    return False


# -- extraction: one task per engine step --------------------------------------------------------------------------
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
    """:func:`pipeline.ingest.plan_extract`; ``rehash`` (the flows' ``force``) reads every source again."""
    ws = Workspace(root)
    write_extract_config(ws, dataset, config)
    plan = plan_extract(source, dataset, config, ws, captions=captions, retry_failed=retry_failed, rehash=rehash)
    return plan_to_dict(plan)


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
def extract_video_task(job: dict[str, Any], config: ExtractConfig, root: str) -> dict[str, Any]:
    """:func:`pipeline.ingest.extract_one`: the streams the feature store lacks; a video that fails raises
    :class:`CorruptVideo` (the flow then writes its failed row)."""
    ws = Workspace(root)
    record = extract_one(ExtractJob.from_dict(job), lambda: shared_extractor(config, ws), ws)
    if record.status != "ok":
        raise CorruptVideo(record.error or f"{job['source']}: extraction failed")
    return record.to_dict()


@task(name="write-shards", cache_key_fn=_write_key, persist_result=True, result_serializer="json")
def write_task(records: list[dict[str, Any]], dataset: str, root: str, run_id: str) -> list[str]:
    """:func:`pipeline.ingest.write_dataset`: samples from the store into shards, then the manifest rows."""
    return write_dataset([ExtractRecord.from_dict(r) for r in records], Workspace(root), dataset, run_id=run_id)


# -- training -----------------------------------------------------------------------------------------------------
def _train_key(context: Any, p: dict[str, Any]) -> str:
    def parts() -> tuple:
        ws = Workspace(p["root"])
        fps = [open_dataset(ws, d).fingerprint for d in p["datasets"]]
        return p["config"].fingerprint(), list(p["datasets"]), fps, p["run_id"]

    return _safe_key("train", parts)


@task(name="train", cache_key_fn=_train_key, persist_result=True, result_serializer="json")
def train_task(
    datasets: list[str], config: Any, root: str, run_id: str | None, resume: bool, progress_key: str
) -> dict[str, Any]:
    """Train (or return the finished run with the same inputs); returns the run's id, folder and final losses."""
    progress = Progress(progress_key, "training steps")
    validated: list[dict[str, Any]] = []

    def on_step(step: int, total: int, losses: dict[str, float]) -> None:
        progress.update(step, total)

    def on_validation(step: int, results: dict[str, Any]) -> None:
        # One table for the run, rewritten with every validation so far (each write is a new artifact version).
        for name, metrics in results.items():
            for modality, table in (metrics.get("retrieval") or {}).items():
                validated.append(
                    {"step": step, "benchmark": name, "modality": modality}
                    | {k: table.get(k) for k in ("R@1", "R@5", "R@10", "median_rank")}
                )
        artifacts.table(f"{progress_key.removesuffix('-progress')}-validation", validated, "validation while training")

    result = train(
        datasets,
        config,
        Workspace(root),
        run_id=run_id,
        resume=resume,
        progress=on_step,
        on_validation=on_validation,
    )
    progress.update(1, 1)
    out = asdict(result)
    out["final_losses"] = {k: float(v) for k, v in result.final_losses.items()}
    return out


# -- evaluation ---------------------------------------------------------------------------------------------------
def _score_key(context: Any, p: dict[str, Any]) -> str:
    def parts() -> tuple:
        ws = Workspace(p["root"])
        which = p.get("checkpoint") or "final"
        path = RunFolder(ws, p["run_id"]).checkpoint_path(which)
        ckpt = file_signature([path]) if ws.is_local else []
        try:
            data_fp = open_dataset(ws, eval_dataset_name(p["dataset"].name)).fingerprint
        except (FileNotFoundError, KeyError, ValueError):
            data_fp = ""
        return p["run_id"], which, ckpt, p["spec"], p["config"].fingerprint(), data_fp

    return _safe_key("score", parts)


@task(name="score", cache_key_fn=_score_key, persist_result=True, result_serializer="json")
def score_task(
    run_id: str, spec: str, dataset: Any, config: Any, root: str, checkpoint: str = "final"
) -> dict[str, Any]:
    """Embed and score one extracted evaluation set (``dataset``: its prepared EvalDataset, ``spec`` what it was
    prepared from) with checkpoint ``checkpoint`` of the run, then write its figures and report.html."""
    ws = Workspace(root)
    bars: dict[str, Any] = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage) or bars.setdefault(stage, terminal_bar(total, f"{dataset.name}: {stage}", unit=""))
        bar.update(done - bar.n)

    try:
        metrics = score(dataset, run_id, ws, config, checkpoint=checkpoint, progress=on_progress)
    finally:
        for bar in bars.values():
            bar.close()
    metrics["report"] = report(run_id, dataset.name, ws, config, checkpoint=checkpoint)
    return metrics
