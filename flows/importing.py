"""The ``import`` flow: public per-video feature files → a dataset, as the extract flow makes one from videos.

It reads top to bottom like the extract flow: plan (cached on the layout's files), import the videos in batches
(one task per batch of ``batch_size`` videos, in the listing's order: an import costs milliseconds, a task more;
each cached on its videos' identities), write shards and manifest
with the extract flow's own task, publish a table and a progress bar. Each step is one library call of
:mod:`pipeline.ingest.importers` or :mod:`pipeline.ingest.engine`, so the flow and ``run_import`` give the same
dataset and the same :class:`~pipeline.ingest.engine.ExtractSummary`.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.events import emit_event
from prefect.task_runners import ThreadPoolTaskRunner

from flows import artifacts
from flows.tasks import _safe_key, file_signature, result_storage, shared_extractor, write_task
from pipeline.ingest.engine import (
    ExtractRecord,
    failed_record,
    new_run_id,
    pending_jobs,
    record_is_usable,
    recover,
    summarise,
)
from pipeline.ingest.importers import ImportConfig, ImportJob, ImportPlan, import_one, plan_import, write_import_config
from pipeline.ingest.importers.layouts import AnyLayout, AvlnetLayout, VfeLayout
from storage import Workspace
from storage.locks import dataset_lock
from storage.sample import captions_digest

IMPORT_EVENT = "mmcaps.import.completed"
MAX_TABLE_ROWS = 1000  # rows of the run's table artifact (every failure is shown; the rest up to this)


def layout_from_dict(data: dict[str, Any]) -> AnyLayout:
    """A layout from its fields and ``name`` (how the flow's parameters carry it)."""
    fields = {k: v for k, v in data.items() if k != "name"}
    if data.get("name") == "vfe":
        return VfeLayout(**fields)
    if data.get("name") == "avlnet":
        return AvlnetLayout(**fields)
    raise ValueError(f"unknown layout {data.get('name')!r} (vfe or avlnet)")


def layout_to_dict(layout: AnyLayout) -> dict[str, Any]:
    return {"name": layout.name, **{k: v for k, v in vars(layout).items() if k != "name"}}


def _layout_files(layout: dict[str, Any], captions: str | None) -> list[str]:
    """Every file whose change can change an import plan: the layout's folders' files, its listing, the captions."""
    out = [captions] if captions else []
    for path in layout_from_dict(layout).folders():
        if os.path.isdir(path):
            out += [os.path.join(d, f) for d, _, names in os.walk(path) for f in names]
        else:
            out.append(path)
    return out


def _plan_key(context: Any, p: dict[str, Any]) -> str:
    return _safe_key(
        "import-plan",
        lambda: (
            p["dataset"],
            p["config"].fingerprint(),
            p["retry_failed"],
            file_signature(_layout_files(p["layout"], p["captions"])),
        ),
    )


def _batch_key(context: Any, p: dict[str, Any]) -> str:
    return _safe_key(
        "import-batch",
        lambda: sorted((j["video_id"], j["sha256"], j["stream_fingerprints"], captions_digest(j["captions"]), j["error"])
                       for j in p["jobs"]),
    )  # fmt: skip


def _status(record: ExtractRecord, cached: bool) -> str:
    """failed | cached (the batch's record was reused) | stored (its arrays were in the store: at most its
    captions were encoded) | new."""
    if record.status == "failed":
        return "failed"
    if cached:
        return "cached"
    return "new" if set(record.computed) - {"text"} else "stored"


@task(name="plan-import", cache_key_fn=_plan_key, persist_result=True, result_serializer="json")
def plan_import_task(
    layout: dict[str, Any],
    dataset: str,
    config: ImportConfig,
    root: str,
    captions: str | None,
    retry_failed: bool,
    rehash: bool = False,
) -> dict[str, Any]:
    """:func:`pipeline.ingest.importers.plan_import` (and the recipe beside the shards)."""
    ws = Workspace(root)
    write_import_config(ws, dataset, config)
    plan = plan_import(layout_from_dict(layout), dataset, config, ws, captions=captions, retry_failed=retry_failed,
                       rehash=rehash)  # fmt: skip
    return plan.to_dict()


@task(
    name="import-videos",
    task_run_name="import-{jobs[0][video_id]}-and-{n_more}-more",
    cache_key_fn=_batch_key,
    persist_result=True,
    result_serializer="json",
    retries=1,
    retry_delay_seconds=1,
)
def import_batch_task(jobs: list[dict[str, Any]], config: ImportConfig, root: str, n_more: int = 0) -> list[dict]:
    """:func:`pipeline.ingest.importers.import_one` for each job (captions encoded by the process's one text
    extractor); failures are records, not exceptions."""
    ws = Workspace(root)

    def extractor() -> Any:
        return shared_extractor(config.text_recipe(), ws)

    return [import_one(ImportJob.from_dict(j), config, ws, extractor).to_dict() for j in jobs]


@flow(name="import", log_prints=True, validate_parameters=True, task_runner=ThreadPoolTaskRunner(max_workers=2))
def import_flow(
    layout: dict[str, Any],
    dataset: str,
    config: ImportConfig = ImportConfig(),
    captions: str | None = None,
    workspace: str | None = None,
    retry_failed: bool = False,
    force: bool = False,
    batch_size: int = 256,
    wait_s: float = 0.0,
) -> Any:
    """Import the new or changed videos of ``layout`` (``layout_to_dict`` of a VfeLayout or AvlnetLayout) into
    ``dataset``; returns the same :class:`~pipeline.ingest.engine.ExtractSummary` as ``run_import``. The dataset's
    writer lock is held throughout; a second writer waits up to ``wait_s`` seconds, then refuses."""
    with dataset_lock(Workspace(workspace), dataset, owner=f"import flow {dataset}", wait_s=wait_s):
        return _import_locked(layout, dataset, config, captions, workspace, retry_failed, force, batch_size)


def _import_locked(
    layout: dict[str, Any],
    dataset: str,
    config: ImportConfig,
    captions: str | None,
    workspace: str | None,
    retry_failed: bool,
    force: bool,
    batch_size: int,
) -> Any:
    log = get_run_logger()
    ws = Workspace(workspace)
    store = result_storage(ws)
    config = config.resolved()
    started = time.perf_counter()
    removed = recover(ws, dataset)
    if removed:
        log.info("removed %d temporaries of an interrupted run", len(removed))
    plan = ImportPlan.from_dict(
        plan_import_task.with_options(result_storage=store, refresh_cache=force)(
            layout, dataset, config, ws.root, captions, retry_failed, force
        )
    )
    jobs, done_since, failed_since = pending_jobs(plan.jobs, ws, dataset, retry_failed)  # type: ignore[arg-type]
    print(
        f"import {dataset} ({config.layout}): {len(jobs)} to import, {len(plan.unchanged) + len(done_since)} unchanged"
    )

    run = import_batch_task.with_options(result_storage=store, refresh_cache=force)
    progress = artifacts.Progress(artifacts.artifact_key("import", dataset, "progress"), f"importing {dataset}")
    batches = [jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)]
    records: list[ExtractRecord] = []
    rows: list[dict[str, Any]] = []
    for batch in batches:
        # One batch after another: records keep the listing's order, which the shards then follow (run_import's),
        # whatever the runner. Reading files and hashing leave little for a second thread on the same disk.
        future = run.submit([j.to_dict() for j in batch], config, ws.root, len(batch) - 1)
        future.wait()
        state = future.state
        if state.is_completed():
            got = [ExtractRecord.from_dict(r) for r in future.result()]
            if not all(record_is_usable(r, ws) for r in got):  # a cached batch whose stored features are gone
                got = [ExtractRecord.from_dict(r) for r in
                       run.with_options(refresh_cache=True)([j.to_dict() for j in batch], config, ws.root, len(batch) - 1)]  # fmt: skip
            cached = state.name == "Cached"
        else:
            got = [failed_record(j.extract_job(), state.message or "import failed") for j in batch]
            cached = False
        for job, record in zip(batch, got, strict=True):
            records.append(record)
            rows.append(
                {
                    "video": record.video_id,
                    "status": _status(record, cached),
                    "reason": job.reason,
                    "computed": ", ".join(record.computed),
                    "duration_s": round(record.duration_s, 2),
                    "has_audio": record.has_audio,
                    "captions": record.n_captions,
                    "error": record.error,
                }
            )
        progress.update(len(records), len(jobs))

    shards: list[str] = []
    if records:
        shards = write_task.with_options(result_storage=store, refresh_cache=force)(
            [r.to_dict() for r in records], dataset, ws.root, new_run_id()
        )
    summary = summarise(plan, records, shards, ws, started, done_since=len(done_since), failed_since=len(failed_since))  # type: ignore[arg-type]
    progress.update(1, 1)
    failed_rows = [r for r in rows if r["status"] == "failed"]
    shown = failed_rows + [r for r in rows if r["status"] != "failed"][: max(0, MAX_TABLE_ROWS - len(failed_rows))]
    more = len(rows) - len(shown)
    artifacts.table(
        artifacts.artifact_key("import", dataset),
        shown or [{"video": "(none)", "status": "nothing new", "reason": "", "error": ""}],
        f"import {dataset} ({config.layout}): {summary.extracted} new, {summary.unchanged} unchanged, "
        f"{len(summary.failed)} failed{f' ({more} ok rows not shown)' if more else ''}; dataset now {summary.videos} "
        f"videos, {summary.hours:.2f} h, {summary.captions} captions",
    )
    for vid, err in summary.failed:
        log.warning("failed %s: %s", vid, err)
    if summary.extracted:
        emit_event(
            event=IMPORT_EVENT,
            resource={"prefect.resource.id": f"mmcaps.dataset.{dataset}", "mmcaps.workspace": ws.root},
            payload={"dataset": dataset, "new": summary.extracted, "videos": summary.videos, "layout": config.layout},
        )
    return summary


__all__ = ["IMPORT_EVENT", "import_flow", "layout_from_dict", "layout_to_dict"]
