"""The one ingest driver: a source (videos to extract, or a layout of feature files to import) → a dataset.

Every run, whichever the source and wherever its jobs run, is the same sequence::

    with the dataset's writer lock:
        recover()                          # sweep a crashed writer's temporaries
        source.prepare() ; source.plan()   # the recipe beside the shards; jobs: new, changed, retried videos
        for record in run_jobs(executor)   # batches of jobs on the executor, at most 2 × workers in flight,
            publisher.add(record)          #   their records in job order; shards + manifest rows every max_count
        publisher.flush() ; summarise()

The executor is passed in: :class:`InlineExecutor` (a plain loop, the default), :class:`PoolExecutor` over any
``concurrent.futures``-style pool (a ``ThreadPoolExecutor``, a ``ProcessPoolExecutor``, a ``distributed.Client``),
or the Prefect task runner's (``flows.ingest.TaskExecutor``: threads or a Dask cluster). Records come back in job
order whatever the executor, so the same source gives the same shards, manifest rows and summary on each.
Memory stays bounded by the batches in flight and one shard's records, never by the size of the corpus.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from pipeline.ingest.publish import DEFAULT_MAX_BYTES, DEFAULT_MAX_COUNT, Publisher, recover, summarise
from pipeline.ingest.records import ExtractRecord, IngestPlan, IngestSummary, new_run_id
from storage.locks import dataset_lock
from storage.workspace import Workspace

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, ExtractRecord], None]  # (done, total, the record just done)


class Worker(Protocol):
    """Runs a batch of jobs where the executor puts it (a thread, a process, a Dask worker): picklable, small."""

    def run(self, jobs: Sequence[Any]) -> list[ExtractRecord]:
        """One record per job, in the jobs' order; a job that fails is a failed record, never an exception."""
        ...


class IngestSource(Protocol):
    """What the driver needs of a source (:class:`pipeline.ingest.videos.Videos` and
    :class:`pipeline.ingest.importers.FeatureFiles` are the two)."""

    kind: str  # "extract" | "import": the lock's owner, log lines and the summary's words
    batch_size: int  # the most jobs an executor gets at once (a video costs seconds, an import milliseconds)

    def prepare(self, workspace: Workspace, dataset: str) -> None:
        """Write what describes the run beside the dataset's shards (its recipe)."""
        ...

    def plan(self, workspace: Workspace, dataset: str, *, retry_failed: bool, rehash: bool) -> IngestPlan:
        """The jobs: what the source lists that the manifest lacks, changed, or (``retry_failed``) failed."""
        ...

    def worker(self, workspace: Workspace) -> Worker:
        """The worker that runs this source's jobs."""
        ...

    def failed(self, job: Any, error: str) -> ExtractRecord:
        """The failed record of a job whose batch never came back (its worker died, say)."""
        ...


class BatchFuture(Protocol):
    def result(self) -> list[ExtractRecord]: ...


class Executor(Protocol):
    """Runs batches of jobs; ``workers`` of them at once (the driver keeps twice that many in flight)."""

    workers: int

    def submit(self, worker: Worker, jobs: list[Any]) -> BatchFuture: ...


class _Done:
    def __init__(self, value: list[ExtractRecord]) -> None:
        self.value = value

    def result(self) -> list[ExtractRecord]:
        return self.value


class InlineExecutor:
    """Runs each batch at once, in the calling thread: the plain loop."""

    workers = 1

    def submit(self, worker: Worker, jobs: list[Any]) -> BatchFuture:
        return _Done(worker.run(jobs))


def run_batch(worker: Worker, jobs: list[Any]) -> list[ExtractRecord]:
    """``worker.run(jobs)``: a module-level function, so that process pools and Dask can pickle the call."""
    return worker.run(jobs)


class PoolExecutor:
    """Batches on a ``concurrent.futures``-style pool: anything with ``submit(fn, *args)`` returning a future with
    ``result()`` — ``ThreadPoolExecutor``, ``ProcessPoolExecutor``, ``distributed.Client``."""

    def __init__(self, pool: Any, workers: int | None = None) -> None:
        self.pool = pool
        self.workers = workers or _pool_workers(pool)
        # Dask deduplicates "pure" calls by their arguments' hash; a batch must run each time it is submitted.
        self._options = {"pure": False} if type(pool).__module__.startswith("distributed") else {}

    def submit(self, worker: Worker, jobs: list[Any]) -> BatchFuture:
        return self.pool.submit(run_batch, worker, jobs, **self._options)


def _pool_workers(pool: Any) -> int:
    if hasattr(pool, "nthreads"):  # distributed.Client: threads over all its workers
        return max(1, sum(pool.nthreads().values()))
    return max(1, int(getattr(pool, "_max_workers", 1) or 1))


def auto_batch_size(n_jobs: int, workers: int, largest: int) -> int:
    """Jobs per batch: at most ``largest``, and small enough that each worker gets about four batches (a short run
    still uses every worker; a long one makes ``n_jobs / largest`` task runs, not one per video)."""
    return max(1, min(largest, math.ceil(n_jobs / (4 * max(1, workers)))))


def run_jobs(
    executor: Executor,
    source: IngestSource,
    worker: Worker,
    jobs: Sequence[Any],
    batch_size: int,
) -> Iterator[ExtractRecord]:
    """The records of ``jobs``, in their order, from batches of ``batch_size`` on ``executor``: at most
    ``2 × executor.workers`` batches in flight, the oldest awaited first."""
    in_flight: deque[tuple[list[Any], BatchFuture]] = deque()
    limit = max(2, 2 * executor.workers)
    for start in range(0, len(jobs), batch_size):
        batch = list(jobs[start : start + batch_size])
        in_flight.append((batch, executor.submit(worker, batch)))
        if len(in_flight) >= limit:
            yield from _batch_records(source, *in_flight.popleft())
    while in_flight:
        yield from _batch_records(source, *in_flight.popleft())


def _batch_records(source: IngestSource, batch: list[Any], future: BatchFuture) -> list[ExtractRecord]:
    try:
        records = future.result()
    except Exception as exc:  # the batch's worker died or its task gave up: its videos fail, the run goes on
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        return [source.failed(job, f"{job.source}: {source.kind} worker failed ({reason})") for job in batch]
    if len(records) != len(batch):
        raise RuntimeError(f"a {source.kind} worker returned {len(records)} records for {len(batch)} jobs")
    return records


def ingest(
    source: IngestSource,
    dataset: str,
    workspace: Workspace,
    *,
    executor: Executor | None = None,
    retry_failed: bool = False,
    rehash: bool = False,
    max_count: int = DEFAULT_MAX_COUNT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    run_id: str | None = None,
    batch_size: int | None = None,
    wait_s: float = 0.0,
    progress: ProgressFn | None = None,
) -> IngestSummary:
    """Ingest what is new or changed in ``source`` into ``dataset``: the steps of the module doc, in order.

    The dataset's writer lock is held throughout (:func:`storage.locks.dataset_lock`): a second writer waits up to
    ``wait_s`` and then raises :class:`storage.locks.LockBusy` naming the first. Shards and manifest rows are
    published every ``max_count`` ok videos (and at the end). ``rehash`` reads every source file again instead of
    trusting the hashes remembered by size and mtime. ``batch_size`` (default :func:`auto_batch_size`) is the jobs
    per executor submission. ``progress(done, total, record)`` follows each video, in job order.
    """
    started = time.perf_counter()
    executor = executor if executor is not None else InlineExecutor()
    run_id = run_id or new_run_id()
    with dataset_lock(workspace, dataset, owner=f"{source.kind} {dataset}", wait_s=wait_s):
        removed = recover(workspace, dataset)
        if removed:
            log.info("%s: removed %d temporaries of an interrupted run", dataset, len(removed))
        source.prepare(workspace, dataset)
        plan = source.plan(workspace, dataset, retry_failed=retry_failed, rehash=rehash)
        total = len(plan.jobs)
        log.info("%s %s: %d to do, %d unchanged", source.kind, dataset, total, len(plan.unchanged))
        size = batch_size or auto_batch_size(total, executor.workers, source.batch_size)
        publisher = Publisher(workspace, dataset, run_id, max_count, max_bytes)
        records = run_jobs(executor, source, source.worker(workspace), plan.jobs, size)
        for done, record in enumerate(records, start=1):
            publisher.add(record)
            if record.status == "failed":  # INFO: the caller's summary names each failure once, at the end
                log.info("failed %s: %s", record.video_id, record.error)
            if progress is not None:
                progress(done, total, record)
        publisher.flush()
        return summarise(plan, publisher.tally, publisher.shards, workspace, started, source.kind)
