"""The ``index`` flow: embed a dataset's clips with a run's model into ``<run>/index/<dataset>/`` (pipeline.search).

It reads top to bottom: plan (which videos have no embedded part yet), one ``index-videos`` task per group of
videos, one ``merge-index`` task, artifacts. Each task wraps one library call of :mod:`pipeline.search.build` and is
cached on what changes its result — a group on the parts key (checkpoint sha256, extraction, clip plan) and its
videos' sha256; the merge on the index fingerprint (parts key, dataset content, IndexConfig) — so a re-run with
nothing new is Cached throughout, and one new video runs one group task and the merge.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow, get_run_logger, task

from flows import artifacts
from flows.progress import StageProgress
from flows.tasks import digest, result_storage
from pipeline.runs import RunFolder
from pipeline.search.build import IndexPlan, embed_videos, merge_index, plan_index
from pipeline.search.config import IndexConfig
from pipeline.search.layout import IndexFolder
from storage import Workspace


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # called outside a run
        return logging.getLogger("mmcaps.flows.search")


def _embed_key(context: Any, p: dict[str, Any]) -> str:
    return "index-embed-" + digest(p["parts_key"], sorted((v["video_id"], v["sha256"]) for v in p["videos"]))


def _merge_key(context: Any, p: dict[str, Any]) -> str:
    return "index-merge-" + digest(p["run_id"], p["dataset"], p["fingerprint"])


@task(
    name="index-videos",
    task_run_name="index-{videos[0][video_id]}+{label}",
    cache_key_fn=_embed_key,
    persist_result=True,
    result_serializer="json",
    retries=1,
    retry_delay_seconds=1,
)
def embed_task(
    run_id: str, dataset: str, config: IndexConfig, root: str, parts_key: str, videos: list[dict[str, str]], label: str
) -> list[dict[str, Any]]:
    """Embed one group of videos; one part file per video (records: video_id, sha256, part, clips)."""
    return embed_videos(RunFolder(Workspace(root), run_id), dataset, config, videos)


@task(name="merge-index", cache_key_fn=_merge_key, persist_result=True, result_serializer="json")
def merge_task(run_id: str, dataset: str, config: IndexConfig, root: str, fingerprint: str, force: bool) -> dict:
    """Write the generation ``fingerprint`` (matrices, clip table, capsules, approximate index) and switch to it."""
    return merge_index(RunFolder(Workspace(root), run_id), dataset, config, force=force).to_json()


def _parts_exist(ws: Workspace, records: list[dict[str, Any]]) -> bool:
    return all(ws.exists(r["part"]) for r in records)


def _index_is(ws: Workspace, run_id: str, dataset: str, fingerprint: str) -> bool:
    folder = IndexFolder(RunFolder(ws, run_id), dataset)
    try:
        return folder.info().get("fingerprint") == fingerprint and ws.exists(
            f"{folder.generation_dir(fingerprint)}/clips.parquet"
        )
    except (FileNotFoundError, ValueError):
        return False


@flow(name="index", log_prints=True, validate_parameters=True)
def index_flow(
    run_id: str,
    dataset: str,
    config: IndexConfig = IndexConfig(),
    workspace: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Index ``dataset`` with run ``run_id``: clip embeddings per modality and capsule activations, built
    incrementally (only videos without a part are embedded). Returns the IndexSummary as a dict."""
    log = _logger()
    ws = Workspace(workspace)
    store = result_storage(ws)
    plan = plan_index(RunFolder(ws, run_id), dataset, config, force=force)
    for note in plan.notes:
        log.warning(note)
    print(
        f"index {dataset} with run {run_id} ({plan.checkpoint}, sha256 {plan.checkpoint_sha256[:12]}): "
        f"{plan.videos} videos, {plan.pending} to embed in {len(plan.groups)} tasks, {plan.embedded} already embedded"
    )
    progress = artifacts.Progress(artifacts.artifact_key("index", run_id, dataset, "progress"), f"indexing {dataset}")
    rows = _embed_groups(plan, config, ws, store, force, progress)
    summary = _merge(plan, config, ws, store, force)
    progress.update(1, 1)
    _publish(run_id, dataset, rows, summary)
    summary["embedded_now"] = sum(r["status"] == "new" for r in rows)
    return summary


def _embed_groups(
    plan: IndexPlan, config: IndexConfig, ws: Workspace, store: Any, force: bool, progress: artifacts.Progress
) -> list[dict[str, Any]]:
    """One ``index-videos`` task per group of the plan; a row per video (video, clips, status new or cached)."""
    embed = embed_task.with_options(result_storage=store, refresh_cache=force)
    rows: list[dict[str, Any]] = []
    terminal = StageProgress(f"index {plan.dataset}", sum(len(g) for g in plan.groups), unit="videos")
    for done, group in enumerate(plan.groups, start=1):
        label = f"{len(group) - 1}" if len(group) > 1 else "0"
        args = (plan.run_id, plan.dataset, config, ws.root, plan.parts_key, group, label)
        state = embed(*args, return_state=True)
        records = state.result()
        status = "cached" if state.name == "Cached" else "new"
        if not _parts_exist(ws, records):  # a cached record whose part files were deleted since
            records = embed.with_options(refresh_cache=True)(*args)
            status = "new"
        rows += [{"video": r["video_id"], "clips": r["clips"], "status": status} for r in records]
        progress.update(done, len(plan.groups))
        terminal.update(len(rows))
    terminal.close()
    return rows


def _merge(plan: IndexPlan, config: IndexConfig, ws: Workspace, store: Any, force: bool) -> dict[str, Any]:
    """The ``merge-index`` task: the IndexSummary as a dict (a cached one says that nothing was added now)."""
    merge = merge_task.with_options(result_storage=store, refresh_cache=force)
    margs = (plan.run_id, plan.dataset, config, ws.root, plan.fingerprint, force)
    state = merge(*margs, return_state=True)
    summary = state.result()
    if not _index_is(ws, plan.run_id, plan.dataset, plan.fingerprint):  # the cached generation was deleted since
        summary = merge.with_options(refresh_cache=True)(*margs)
    elif state.name == "Cached":  # the record is of the run that wrote this generation: nothing was added now
        summary.update(unchanged=True, new_videos=0, reused_videos=summary["videos"])
    return summary


def _publish(run_id: str, dataset: str, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """The flow's artifacts: a table of the videos embedded now, and the index's summary with its approximate
    indexes."""
    key = artifacts.artifact_key("index", run_id, dataset)
    artifacts.table(
        key,
        rows or [{"video": "(none)", "clips": 0, "status": "nothing new"}],
        f"index {dataset} of run {run_id}: {len(rows)} videos embedded now, {summary['videos']} videos and "
        f"{summary['clips']} clips in the index",
    )
    approx = [
        f"| {m} | {s['nlist']} | {s['nprobe']} | {s['recall']:.3f} | {s['ms_per_query']:.2f} | "
        f"{s['exact_ms_per_query']:.2f} |"
        for m, s in (summary.get("approximate") or {}).items()
    ]
    header = [
        "| modality | nlist | nprobe | recall@10 vs exact | ms/query | exact ms/query |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    table = [*header, *approx] if approx else ["exact search only (below approximate_min_clips)"]
    lines = [
        f"### Index `{dataset}` of run `{run_id}`",
        f"{summary['videos']} videos, {summary['clips']} clips, D={summary['dim']}, "
        f"{summary['capsules']} capsules, modalities {', '.join(summary['modalities'])}; "
        f"fingerprint `{summary['fingerprint']}`; folder `{summary['path']}`",
        "",
        *table,
    ]
    artifacts.markdown(f"{key}-summary", "\n".join(lines), f"index {dataset}")


__all__ = ["index_flow"]
