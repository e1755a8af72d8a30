"""The Prefect flows: ``extract``, ``train``, ``evaluate``, ``pipeline`` (all three in order) and ``demo``.

Each flow reads top to bottom: plan, map the per-item task, write, publish artifacts. Parameters are the
pydantic configs, so the Prefect UI renders them as forms. Every task is cached on what changes its result
(see :mod:`flows.tasks`), so a re-run with nothing new is Cached throughout and one new video re-runs only its
extraction and the stages downstream of it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.events import emit_event
from prefect.task_runners import ThreadPoolTaskRunner

from flows import artifacts
from flows.events import EXTRACT_EVENT, TRAIN_EVENT, dataset_resource, train_event_fields
from flows.tasks import (
    extract_video_task,
    plan_from_dict,
    plan_task,
    result_storage,
    score_task,
    train_task,
    write_task,
)
from pipeline.evaluate import EvalConfig
from pipeline.evaluate.run import eval_dataset_name, prepare_all, run_extract_config
from pipeline.extract import ExtractConfig
from pipeline.extract.ffmpeg import ffmpeg_binary
from pipeline.ingest import (
    ExtractRecord,
    ExtractSummary,
    failed_record,
    pending_jobs,
    record_is_usable,
    recover,
    summarise,
)
from pipeline.ingest.engine import new_run_id
from pipeline.train import TrainConfig
from storage import Workspace
from storage.locks import dataset_lock


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # called outside a run
        return logging.getLogger("mmcaps.flows")


# -- extract ------------------------------------------------------------------------------------------------------
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
) -> ExtractSummary:
    """Extract the new or changed videos of ``source`` (folder, list file, URL or list of paths) into ``dataset``.

    The engine's steps (:mod:`pipeline.ingest.engine`), one task each: plan, extract each video (the streams the
    feature store lacks), write shards and manifest; returns the same :class:`ExtractSummary` as ``run_extract``.
    The dataset's writer lock is held throughout; a second run waits up to ``wait_s`` seconds, then refuses.
    """
    log = _logger()
    ws = Workspace(workspace)
    store = result_storage(ws)
    # auto made concrete here, once: every worker then extracts in the precision this run records.
    precision = config.resolve_precision()
    config = config.resolved()
    print(f"extract {dataset}: {precision.line()}; ffmpeg {ffmpeg_binary(config.ffmpeg).version}")
    stand_ins = config.stand_ins()  # said loudly: features made this way are not the paper's
    for line in stand_ins:
        log.warning("stand-in: %s", line)
    started = time.perf_counter()
    with dataset_lock(ws, dataset, owner=f"extract flow {dataset}", wait_s=wait_s):
        removed = recover(ws, dataset)
        if removed:
            log.info("removed %d temporaries of an interrupted run", len(removed))

        plan = plan_from_dict(
            plan_task.with_options(result_storage=store, refresh_cache=force)(
                source, dataset, config, ws.root, captions, retry_failed, force
            )
        )
        jobs, done_since, failed_since = pending_jobs(plan.jobs, ws, dataset, retry_failed)
        log.info("%s: %d to extract, %d unchanged", dataset, len(jobs), len(plan.unchanged) + len(done_since))

        extract = extract_video_task.with_options(result_storage=store, refresh_cache=force)
        progress = artifacts.Progress(artifacts.artifact_key("extract", dataset, "progress"), f"extracting {dataset}")
        futures = [extract.submit(job.to_dict(), config, ws.root) for job in jobs]
        bar = artifacts.terminal_bar(len(jobs), f"extract {dataset}")
        records: list[ExtractRecord] = []
        rows: list[dict[str, Any]] = []
        for done, (job, future) in enumerate(zip(jobs, futures, strict=True), start=1):
            future.wait()
            state = future.state
            if state.is_completed():
                record = ExtractRecord.from_dict(future.result())
                if not record_is_usable(record, ws):
                    # A cached record whose stored features are gone (the workspace was cleaned): extract again.
                    record = ExtractRecord.from_dict(
                        extract.with_options(refresh_cache=True)(job.to_dict(), config, ws.root)
                    )
                status = "cached" if state.name == "Cached" else ("stored" if not record.computed else "new")
            else:
                record = failed_record(job, state.message or "extraction failed")
                status = "failed"
            records.append(record)
            rows.append(
                {
                    "video": record.video_id,
                    "status": status,
                    "reason": job.reason,
                    "computed": ", ".join(record.computed),
                    "duration_s": round(record.duration_s, 2),
                    "captions": record.n_captions,
                    "error": record.error,
                }
            )
            progress.update(done, len(jobs))
            bar.update(1)
        bar.close()

        shards: list[str] = []
        if records:  # no work, no task: an unchanged source leaves nothing but cache hits
            shards = write_task.with_options(result_storage=store, refresh_cache=force)(
                [r.to_dict() for r in records], dataset, ws.root, new_run_id()
            )
        summary = summarise(
            plan, records, shards, ws, started, done_since=len(done_since), failed_since=len(failed_since)
        )
        progress.update(1, 1)
        artifacts.table(
            artifacts.artifact_key("extract", dataset),
            rows or [{"video": "(none)", "status": "nothing new", "reason": "", "error": ""}],
            f"extract {dataset}: {summary.extracted} new, {summary.unchanged} unchanged, {len(summary.failed)} failed; "
            f"dataset now {summary.videos} videos, {summary.hours:.2f} h, {summary.captions} captions"
            + "".join(f"; STAND-IN: {line}" for line in stand_ins),
        )
        for vid, err in summary.failed:
            log.warning("failed %s: %s", vid, err)
        if summary.extracted:
            emit_event(
                event=EXTRACT_EVENT,
                resource={"prefect.resource.id": dataset_resource(dataset), "mmcaps.workspace": ws.root},
                payload={"dataset": dataset, "new": summary.extracted, "videos": summary.videos},
            )
    return summary


# -- train --------------------------------------------------------------------------------------------------------
@flow(name="train", log_prints=True, validate_parameters=True)
def train_flow(
    datasets: list[str],
    config: TrainConfig = TrainConfig.from_preset("demo"),
    workspace: str | None = None,
    run_id: str | None = None,
    resume: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Train the capsule network on extracted datasets; returns the run id, folder and final losses.

    Cached on the train config's fingerprint and the datasets' manifest fingerprints: new data trains anew.
    """
    ws = Workspace(workspace)
    store = result_storage(ws)
    key = artifacts.artifact_key("train", *datasets)
    state = train_task.with_options(result_storage=store, refresh_cache=force)(
        list(datasets), config, ws.root, run_id, resume, f"{key}-progress", return_state=True
    )
    result = state.result()
    if not ws.exists(result["final_checkpoint"]):  # a cached record of a run folder since deleted
        state = train_task.with_options(result_storage=store, refresh_cache=True)(
            list(datasets), config, ws.root, run_id, resume, f"{key}-progress", return_state=True
        )
        result = state.result()
    if result.get("trained") and state.name != "Cached":
        # trained to its end by this call (a cached record keeps the first call's "trained"): an evaluation
        # deployment may be waiting for it
        emit_event(event=TRAIN_EVENT, **train_event_fields(result, list(datasets), ws.root))
    losses = result["final_losses"]
    artifacts.markdown(
        key,
        "\n".join(
            [
                f"### Training run `{result['run_id']}`",
                f"datasets: {', '.join(datasets)}; steps: {result['steps']}; folder: `{result['run_dir']}`",
                "",
                "| pair | final loss |",
                "|---|---:|",
                *[f"| {k} | {v:.4f} |" for k, v in losses.items()],
                "",
                f"curves: `{result['run_dir']}/curves.png`, metrics: `{result['run_dir']}/metrics.jsonl`",
            ]
        ),
        f"training {result['run_id']}",
    )
    return result


# -- evaluate -----------------------------------------------------------------------------------------------------
@flow(name="evaluate", log_prints=True, validate_parameters=True)
def evaluate_flow(
    run_id: str,
    specs: list[str],
    config: EvalConfig = EvalConfig(),
    workspace: str | None = None,
    force: bool = False,
    checkpoint: str = "final",
) -> dict[str, dict[str, Any]]:
    """Evaluate checkpoint ``checkpoint`` (final, best, step-N) of a trained run zero-shot on each benchmark spec
    (``KIND=ANNOTATIONS:VIDEO_DIR`` or ``synthetic=CORPUS_DIR``): extract its videos the way the run's training data
    was extracted (same cache), score, and write metrics, tables, figures and ``report.html`` (under
    ``evals/<run>/@<checkpoint>/`` for a checkpoint other than final). Returns ``{name: metrics}``."""
    log = _logger()
    ws = Workspace(workspace)
    store = result_storage(ws)
    extract_cfg = run_extract_config(ws, run_id)
    out: dict[str, dict[str, Any]] = {}
    for spec, dataset in zip(specs, prepare_all(specs, config), strict=True):
        if dataset.missing:
            log.warning("%s: %d videos missing from the folder", dataset.name, len(dataset.missing))
        paths = sorted(str(p) for p in dataset.videos.values())
        if paths:
            extract_flow(paths, eval_dataset_name(dataset.name), extract_cfg, None, ws.root, False, force)
        metrics = score_task.with_options(result_storage=store, refresh_cache=force)(
            run_id, spec, dataset, config, ws.root, checkpoint
        )
        out[dataset.name] = metrics
        of = run_id if checkpoint == "final" else f"{run_id} ({checkpoint})"
        key = artifacts.artifact_key("eval", run_id, *([] if checkpoint == "final" else [checkpoint]), dataset.name)
        rows = artifacts.metric_rows(dataset.name, metrics)
        artifacts.table(key, rows, f"{dataset.name}: metrics of run {of}, chance beside")
        artifacts.markdown(
            f"{key}-summary",
            artifacts.metrics_markdown(f"{dataset.name} — run {of}", rows, metrics.get("report")),
            "",
        )
        if metrics.get("report"):
            artifacts.link(f"{key}-report", metrics["report"], f"report for {dataset.name}")
    return out


# -- pipeline -----------------------------------------------------------------------------------------------------
@flow(name="pipeline", log_prints=True, validate_parameters=True)
def pipeline_flow(
    source: str,
    dataset: str,
    specs: list[str],
    extract: ExtractConfig = ExtractConfig(),
    train: TrainConfig = TrainConfig.from_preset("demo"),
    evaluate: EvalConfig = EvalConfig(),
    captions: str | None = None,
    workspace: str | None = None,
    force: bool = False,
    runner: Literal["threads", "dask"] = "threads",
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Extract the training source, train, extract the evaluation sets, evaluate — in order, cached throughout.

    ``runner`` picks where per-video extraction runs: threads in this process, or Dask (``dask_address`` of an
    existing cluster, else a local cluster).
    """
    extract_runner = make_task_runner(runner, dask_address)
    extracted = extract_flow.with_options(task_runner=extract_runner)(
        source, dataset, extract, captions, workspace, False, force
    )
    if not extracted.videos:
        raise ValueError(f"{source}: no video could be extracted; see the extract run's table")
    trained = train_flow([dataset], train, workspace, None, False, force)
    metrics = evaluate_flow(trained["run_id"], specs, evaluate, workspace, force) if specs else {}
    return {"extract": extracted, "train": trained, "evaluate": metrics}


@flow(name="demo", log_prints=True, validate_parameters=True)
def demo_flow(
    corpus_dir: str,
    workspace: str | None = None,
    preset: str = "demo",
    synth_preset: str = "demo",
    precision: Literal["auto", "fp32", "bf16"] = "auto",
    force: bool = False,
    train_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Generate the synthetic narrated corpus, then run the whole pipeline on it with the demo preset."""
    from pipeline.synthetic import SynthConfig, generate_corpus

    synth = SynthConfig.tiny() if synth_preset == "tiny" else SynthConfig.demo()
    corpus = generate_corpus(Path(corpus_dir), synth)
    extract_cfg = ExtractConfig.model_validate({"precision": precision, "text": {"word2vec": str(corpus.word2vec)}})
    return pipeline_flow(
        str(corpus.train.videos_dir),
        "synthetic-train",
        [f"synthetic={corpus.root}"],
        extract_cfg,
        TrainConfig.from_preset(preset, train_overrides),
        EvalConfig(),
        str(corpus.train.caption_json),
        workspace,
        force,
    )


def make_task_runner(runner: str = "threads", dask_address: str | None = None, dask_workers: int = 2) -> Any:
    """Threads (default), or Dask: an existing cluster by address, else a local cluster of worker processes."""
    if runner == "threads":
        return ThreadPoolTaskRunner(max_workers=2)
    if runner != "dask":
        raise ValueError(f"unknown task runner {runner!r}: use threads or dask")
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    from prefect.settings import PREFECT_API_URL

    cluster_kwargs: dict[str, Any] = {
        "n_workers": dask_workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
    }
    api = PREFECT_API_URL.value()
    if api:
        # Worker processes must report to this API; a setting made in-process (a profile, a test harness) does not
        # reach them through the environment, and without it each would start a temporary server of its own.
        cluster_kwargs["env"] = {"PREFECT_API_URL": str(api)}
    return DaskTaskRunner(cluster_kwargs=cluster_kwargs)


__all__ = ["demo_flow", "evaluate_flow", "extract_flow", "make_task_runner", "pipeline_flow", "train_flow"]
