"""Deployments for a long-running service: scheduled re-scans of a video source, and training on new data.

``build_deployments`` returns Prefect ``RunnerDeployment`` objects:

* ``extract-<dataset>`` re-scans ``source`` on an interval or cron schedule; only new or changed videos are
  extracted (the extract flow is incremental).
* ``train-<dataset>`` has a trigger: it starts when an extract run of that dataset completes with new videos
  (the extract flow emits ``mmcaps.extract.completed`` for the dataset's resource only then).
* ``evaluate-<dataset>`` (when benchmarks are given) has a trigger too: it starts when a training run of that
  dataset completes (``mmcaps.train.completed``, related to the dataset) and evaluates that run, whose id the
  trigger passes from the event's payload.

Each deployment runs one flow run at a time (``concurrency_limit=1``): an extraction that outlasts the interval
makes the next scheduled one wait. ``mmcaps watch`` registers them (``apply``) and, unless ``--register-only``,
serves them in this process.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect.events import DeploymentEventTrigger

from flows.events import EXTRACT_EVENT, TRAIN_EVENT, dataset_resource
from flows.ingest import extract_flow
from flows.pipeline import evaluate_flow, train_flow
from pipeline.evaluate import EvalConfig
from pipeline.extract import ExtractConfig
from pipeline.train import TrainConfig


def build_deployments(
    *,
    source: str,
    dataset: str,
    workspace: str | None,
    interval_s: float | None = None,
    cron: str | None = None,
    captions: str | None = None,
    extract_config: ExtractConfig | None = None,
    train_config: TrainConfig | None = None,
    evaluate_on: list[str] | None = None,
    eval_config: EvalConfig | None = None,
) -> list[Any]:
    """The extraction deployment (scheduled), the training deployment (triggered by new videos) and, with
    ``evaluate_on`` (benchmark specs as ``mmcaps evaluate --on`` takes them), the evaluation deployment (triggered
    by a finished training run)."""
    if (interval_s is None) == (cron is None):
        raise ValueError("give exactly one schedule: an interval in seconds or a cron expression")
    extract_cfg = extract_config or ExtractConfig()
    train_cfg = train_config or TrainConfig.from_preset("demo")
    schedule = {"interval": timedelta(seconds=interval_s)} if interval_s is not None else {"cron": cron}
    extract = extract_flow.to_deployment(
        name=f"extract-{dataset}",
        description=f"re-scan {source} and extract new or changed videos into {dataset}",
        parameters={
            "source": source,
            "dataset": dataset,
            "config": extract_cfg.model_dump(mode="json"),
            "captions": captions,
            "workspace": workspace,
        },
        tags=["mmcaps", "extract"],
        # One run at a time: a re-scan that outlasts the interval makes the next one wait, never overlap (the
        # dataset's writer lock would refuse it anyway; this keeps it out of the failed runs).
        concurrency_limit=1,
        **schedule,
    )
    trigger = DeploymentEventTrigger(
        name=f"new videos in {dataset}",
        expect={EXTRACT_EVENT},
        match={"prefect.resource.id": dataset_resource(dataset)},
    )
    train = train_flow.to_deployment(
        name=f"train-{dataset}",
        description=f"train when an extraction adds videos to {dataset}",
        parameters={"datasets": [dataset], "config": train_cfg.model_dump(mode="json"), "workspace": workspace},
        triggers=[trigger],
        tags=["mmcaps", "train"],
        concurrency_limit=1,
    )
    if not evaluate_on:
        return [extract, train]
    trained = DeploymentEventTrigger(
        name=f"trained on {dataset}",
        expect={TRAIN_EVENT},
        match_related={"prefect.resource.id": dataset_resource(dataset), "prefect.resource.role": "dataset"},
        # the automation renders this from the triggering event: the run that just finished
        parameters={"run_id": "{{ event.payload.run_id }}"},
    )
    evaluate = evaluate_flow.to_deployment(
        name=f"evaluate-{dataset}",
        description=f"evaluate each run trained on {dataset} when its training completes",
        parameters={
            "specs": list(evaluate_on),
            "config": (eval_config or EvalConfig()).model_dump(mode="json"),
            "workspace": workspace,
        },
        triggers=[trained],
        tags=["mmcaps", "evaluate"],
        concurrency_limit=1,
    )
    return [extract, train, evaluate]
