"""The ``extract`` and ``import`` flows: the one ingest driver (:func:`pipeline.ingest.ingest`) with the flow's task
runner as its executor — one ``ingest-batch`` task run per batch of videos, on threads or a Dask cluster — and the
run's table, progress and event in Prefect.

Both read top to bottom: describe the run, ingest (plan → batches → shards and manifest rows every ``shard_videos``
videos → summary), publish the table artifact and the event. The plain library call (``run_extract``/``run_import``)
runs the same driver in a loop, so both give the same dataset and the same :class:`~pipeline.ingest.IngestSummary`.
Caching is the feature store's: a video whose streams are stored costs no computation, and an unchanged source plans
no job and starts no task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.task_runners import ThreadPoolTaskRunner

from flows import artifacts, progress
from flows.events import EXTRACT_EVENT, IMPORT_EVENT, dataset_resource
from flows.runners import batch_resources
from pipeline.extract import ExtractConfig
from pipeline.extract.ffmpeg import ffmpeg_binary
from pipeline.ingest import ExtractRecord, IngestSource, IngestSummary, Videos, Worker, ingest
from pipeline.ingest.importers import FeatureFiles, ImportConfig
from pipeline.ingest.importers.layouts import AnyLayout, AvlnetLayout, VfeLayout
from pipeline.ingest.publish import DEFAULT_MAX_COUNT
from storage import Workspace

MAX_TABLE_ROWS = 1000  # rows of a run's table artifact (every failure is shown; the rest up to this)


# -- the executor --------------------------------------------------------------------------------------------------
@task(name="ingest-batch", cache_policy=NONE, retries=2, retry_delay_seconds=1)
def ingest_batch_task(worker: Worker, jobs: list[Any]) -> list[ExtractRecord]:
    """``worker.run(jobs)``: a batch of videos extracted or imported; a video that fails is a failed record, so a
    retry means the worker itself died (a killed process, a lost Dask worker)."""
    return worker.run(jobs)


def runner_workers(runner: Any) -> int:
    """How many batches a task runner runs at once: a thread pool's threads, a Dask cluster's worker threads."""
    client = getattr(runner, "_client", None)
    if client is not None:
        return max(1, sum(client.nthreads().values()))
    return max(1, int(getattr(runner, "_max_workers", None) or 2))


class TaskExecutor:
    """The running flow's task runner as the driver's executor: each batch an ``ingest-batch`` task run named after
    its first video (``extract-<video>``, ``extract-<video>-and-7-more``)."""

    def __init__(self, kind: str, resources: dict[str, float] | None = None) -> None:
        context = FlowRunContext.get()
        self.kind = kind
        self.workers = runner_workers(context.task_runner if context is not None else None)
        self.resources = resources or {}  # Dask worker resources each batch needs (flows.runners.batch_resources)

    def submit(self, worker: Worker, jobs: list[Any]) -> Any:
        more = f"-and-{len(jobs) - 1}-more" if len(jobs) > 1 else ""
        task = ingest_batch_task.with_options(task_run_name=f"{self.kind}-{jobs[0].video_id}{more}")
        if not self.resources:
            return task.submit(worker, jobs)
        import dask  # noqa: PLC0415  deferred: dask, only when batches ask for worker resources

        # prefect_dask passes no resources of its own; distributed's Client.submit merges these annotations (threads
        # runners ignore them).
        with dask.annotate(resources=self.resources):
            return task.submit(worker, jobs)


# -- what a run shows ----------------------------------------------------------------------------------------------
class RunReport:
    """A run's progress (artifact and terminal bar, as videos come back) and its table artifact (at the end)."""

    def __init__(self, kind: str, dataset: str) -> None:
        self.kind, self.dataset = kind, dataset
        self.progress = artifacts.Progress(artifacts.artifact_key(kind, dataset, "progress"), f"{kind} {dataset}")
        self.bar = progress.extraction(kind, dataset)  # the terminal's line: done/total, ok/failed, rate, ETA
        self.rows: list[dict[str, Any]] = []
        self.failed_rows: list[dict[str, Any]] = []
        self.hidden = 0

    def __call__(self, done: int, total: int, record: ExtractRecord) -> None:
        self.bar(done, total, record)
        self.progress.update(done, total)
        row = {
            "video": record.video_id,
            "status": _status(record),
            "computed": ", ".join(record.computed),
            "duration_s": round(record.duration_s, 2),
            "has_audio": record.has_audio,
            "captions": record.n_captions,
            "error": record.error,
        }
        if row["status"] == "failed":
            self.failed_rows.append(row)
        elif len(self.rows) < MAX_TABLE_ROWS:
            self.rows.append(row)
        else:
            self.hidden += 1

    def publish(self, summary: IngestSummary, notes: Sequence[str] = ()) -> None:
        self.bar.close()
        self.progress.update(1, 1)
        shown = self.failed_rows + self.rows[: max(0, MAX_TABLE_ROWS - len(self.failed_rows))]
        more = self.hidden + len(self.rows) - (len(shown) - len(self.failed_rows))
        done = "imported" if self.kind == "import" else "extracted"
        artifacts.table(
            artifacts.artifact_key(self.kind, self.dataset),
            shown or [{"video": "(none)", "status": "nothing new", "error": ""}],
            f"{self.kind} {self.dataset}: {summary.extracted} {done}, {summary.unchanged} unchanged, "
            f"{len(summary.failed)} failed{f' ({more} ok rows not shown)' if more else ''}; dataset now "
            f"{summary.videos} videos, {summary.hours:.2f} h, {summary.captions} captions"
            + "".join(f"; {note}" for note in notes),
        )


def _status(record: ExtractRecord) -> str:
    """failed | stored (its arrays were in the store: at most its captions were encoded) | new."""
    if record.status == "failed":
        return "failed"
    return "new" if set(record.computed) - {"text"} else "stored"


def _ingest(
    source: IngestSource,
    dataset: str,
    workspace: str | None,
    *,
    retry_failed: bool,
    force: bool,
    wait_s: float,
    shard_videos: int,
    videos_per_task: int | None,
    event: str,
    notes: Sequence[str] = (),
    resources: dict[str, float] | None = None,
) -> IngestSummary:
    """The flows' common body: the driver on the flow's task runner, then the table artifact and the event."""
    ws = Workspace(workspace)
    report = RunReport(source.kind, dataset)
    summary = ingest(
        source,
        dataset,
        ws,
        executor=TaskExecutor(source.kind, resources),
        retry_failed=retry_failed,
        rehash=force,
        max_count=shard_videos,
        batch_size=videos_per_task,
        wait_s=wait_s,
        progress=report,
    )
    report.publish(summary, notes)
    log = artifacts.run_logger()
    for vid, err in summary.failed:  # the flow run's log in the UI; INFO, so the terminal says it once (the summary)
        log.info("failed %s: %s", vid, err)
    if summary.extracted:
        emit_event(
            event=event,
            resource={"prefect.resource.id": dataset_resource(dataset), "mmcaps.workspace": ws.root},
            payload={"dataset": dataset, "new": summary.extracted, "videos": summary.videos},
        )
    return summary


# -- the flows -----------------------------------------------------------------------------------------------------
@flow(name="extract", log_prints=True, validate_parameters=True, task_runner=ThreadPoolTaskRunner(max_workers=2))
def extract_flow(
    source: str | list[str],
    dataset: str,
    config: ExtractConfig = ExtractConfig(),
    captions: str | None = None,
    workspace: str | None = None,
    retry_failed: bool = False,
    force: bool = False,
    wait_s: float = 0.0,
    shard_videos: int = DEFAULT_MAX_COUNT,
    videos_per_task: int | None = None,
    gpu_tasks: bool | None = None,
) -> IngestSummary:
    """Extract the new or changed videos of ``source`` (folder, list file, URL or list of paths) into ``dataset``.

    Shards and manifest rows are published every ``shard_videos`` videos; ``videos_per_task`` videos make one task
    run (default: sized to the runner's workers). ``force`` reads every source file again. The dataset's writer lock
    is held throughout; a second run waits up to ``wait_s`` seconds, then refuses. ``gpu_tasks`` (default: whether
    ``config.device`` is CUDA) makes each task ask a Dask cluster for a worker with ``GPU=1`` among its resources.
    """
    videos = Videos(source, config, captions)
    print(f"extract {dataset}: {config.resolve_precision().line()}; ffmpeg {ffmpeg_binary(config.ffmpeg).version}")
    # Features made this way are not the paper's: the run's table artifact says so (notes) and the flow-run log;
    # on the terminal the command says it once, before the run (flows.commands._common.say_stand_ins).
    stand_ins = videos.config.stand_ins()
    for line in stand_ins:
        artifacts.run_logger().info("stand-in: %s", line)
    return _ingest(
        videos, dataset, workspace, retry_failed=retry_failed, force=force, wait_s=wait_s, shard_videos=shard_videos,
        videos_per_task=videos_per_task, event=EXTRACT_EVENT, notes=[f"STAND-IN: {line}" for line in stand_ins],
        resources=batch_resources(_needs_gpu(videos.config, gpu_tasks)),
    )  # fmt: skip


def _needs_gpu(config: ExtractConfig, gpu_tasks: bool | None) -> bool:
    """Whether extraction tasks run on CUDA: as asked, else when the config names a CUDA device (the device plan of
    a cluster of GPU workers passes ``gpu_tasks``)."""
    return gpu_tasks if gpu_tasks is not None else str(config.device or "").startswith("cuda")


def layout_from_dict(data: dict[str, Any]) -> AnyLayout:
    """A layout from its fields and ``name`` (how the import flow's parameters carry it)."""
    fields = {k: v for k, v in data.items() if k != "name"}
    if data.get("name") == "vfe":
        return VfeLayout(**fields)
    if data.get("name") == "avlnet":
        return AvlnetLayout(**fields)
    raise ValueError(f"unknown layout {data.get('name')!r} (vfe or avlnet)")


def layout_to_dict(layout: AnyLayout) -> dict[str, Any]:
    return {"name": layout.name, **{k: v for k, v in vars(layout).items() if k != "name"}}


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
    shard_videos: int = DEFAULT_MAX_COUNT,
) -> IngestSummary:
    """Import the new or changed videos of ``layout`` (``layout_to_dict`` of a VfeLayout or AvlnetLayout) into
    ``dataset``, ``batch_size`` videos a task run; otherwise as the extract flow."""
    files = FeatureFiles(layout_from_dict(layout), config, captions)
    print(f"import {dataset} ({files.cfg.layout})")
    return _ingest(
        files, dataset, workspace, retry_failed=retry_failed, force=force, wait_s=wait_s, shard_videos=shard_videos,
        videos_per_task=batch_size, event=IMPORT_EVENT,
    )  # fmt: skip


__all__ = ["extract_flow", "import_flow", "layout_from_dict", "layout_to_dict"]
