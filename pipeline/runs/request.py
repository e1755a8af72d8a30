"""What a training call will train: the datasets, the config and the run id, resolved from a request as ``mmcaps
train`` takes it (a preset and overrides for a new run; the run's own config and datasets to resume one).

Reads run files and manifests only (no torch), so a bad request fails in a second, before an orchestrator starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.runs.config import TrainConfig
from pipeline.runs.folder import RunFolder
from storage.dataset import open_dataset
from storage.workspace import Workspace


@dataclass(frozen=True)
class TrainRequest:
    """A resolved training request: ``pipeline.train.train(datasets, config, workspace, run_id=..., resume=...)``."""

    datasets: list[str]
    config: TrainConfig
    run_id: str | None  # None: derived from the config and the datasets' fingerprints
    resume: bool


def resolve_training(
    workspace: Workspace,
    *,
    datasets: Sequence[str] = (),
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    run_id: str | None = None,
    resume: str | None = None,
) -> TrainRequest:
    """The datasets, config and run id of a training call.

    A new run: ``preset`` (default ``demo``) with dotted ``overrides``. ``resume`` (a run id) continues that run:
    its own config.yaml with ``overrides`` (or ``preset`` when one is named) and its datasets unless ``datasets``
    names others; ``run_id``, when given too, must name the same run. Every dataset must exist in the workspace
    (ValueError or FileNotFoundError naming what is wrong).
    """
    overrides = dict(overrides or {})
    names = list(datasets)
    if resume:
        if run_id and run_id != resume:
            raise ValueError(f"resume {resume} and run id {run_id} name different runs")
        run_id = resume
        run = RunFolder(workspace, run_id)
        if preset:
            cfg = TrainConfig.from_preset(preset, overrides)
        else:
            cfg = run.train_config()
            cfg = cfg.with_updates(overrides) if overrides else cfg
        names = names or [d["name"] for d in run.info().get("datasets", [])]
    else:
        cfg = TrainConfig.from_preset(preset or "demo", overrides)
    if not names:
        raise ValueError("name at least one dataset to train on (--dataset)")
    for name in names:  # a missing dataset fails here, in a second
        open_dataset(workspace, name)
    return TrainRequest(names, cfg, run_id, bool(resume))
