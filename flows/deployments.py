"""Deployments for a long-running service: scheduled re-scans of a video source, and training on new data.

``build_deployments`` returns Prefect ``RunnerDeployment`` objects:

* ``extract-<dataset>`` re-scans ``source`` on an interval or cron schedule; only new or changed videos are
  extracted (the extract flow is incremental).
* ``train-<dataset>`` has a trigger: it starts when an extract run of that dataset completes with new videos
  (the extract flow emits ``mmcaps.extract.completed`` for the dataset's resource only then).

Each deployment runs one flow run at a time (``concurrency_limit=1``): an extraction that outlasts the interval
makes the next scheduled one wait. ``mmcaps serve`` registers them (``apply``) and, unless ``--register-only``,
serves them in this process.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect.events import DeploymentEventTrigger

from flows.pipeline import EXTRACT_EVENT, dataset_resource, extract_flow, train_flow
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
) -> list[Any]:
    """The extraction deployment (scheduled) and the training deployment (triggered by new videos)."""
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
    return [extract, train]
