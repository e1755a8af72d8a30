"""The events mmcaps flows emit, and the resources they name (deployment triggers match on them).

* ``mmcaps.extract.completed`` for ``mmcaps.dataset.<name>``: an extraction added or changed videos (the payload
  says how many). ``mmcaps watch``'s train deployment and ``docker/prefect.yaml``'s listen for it.
* ``mmcaps.train.completed`` for ``mmcaps.run.<run id>``, related to each training dataset's resource (role
  ``dataset``): a call trained a run to its end (a cached or already finished run emits nothing). The payload carries
  the run id, which the evaluation deployment's trigger passes on as its ``run_id`` parameter.

Kept free of Prefect and torch imports at module level, so that a torchrun rank can name them cheaply;
:func:`emit_train_completed` imports Prefect when it emits.
"""

from __future__ import annotations

from typing import Any

EXTRACT_EVENT = "mmcaps.extract.completed"
IMPORT_EVENT = "mmcaps.import.completed"  # as EXTRACT_EVENT, for feature files imported into a dataset
TRAIN_EVENT = "mmcaps.train.completed"


def dataset_resource(dataset: str) -> str:
    """The event resource id of a dataset."""
    return f"mmcaps.dataset.{dataset}"


def run_resource(run_id: str) -> str:
    """The event resource id of a training run."""
    return f"mmcaps.run.{run_id}"


def train_event_fields(result: dict[str, Any], datasets: list[str], workspace_root: str) -> dict[str, Any]:
    """The resource, related resources and payload of :data:`TRAIN_EVENT` for a training result (a dict with
    ``run_id``, ``run_dir``, ``steps``, ``final_checkpoint``)."""
    return {
        "resource": {"prefect.resource.id": run_resource(result["run_id"]), "mmcaps.workspace": workspace_root},
        "related": [{"prefect.resource.id": dataset_resource(d), "prefect.resource.role": "dataset"} for d in datasets],
        "payload": {
            "run_id": result["run_id"],
            "run_dir": result["run_dir"],
            "datasets": list(datasets),
            "steps": result["steps"],
            "final_checkpoint": result["final_checkpoint"],
        },
    }


def emit_train_completed(result: dict[str, Any], datasets: list[str], workspace_root: str) -> bool:
    """Emit :data:`TRAIN_EVENT` for a run that a call trained to its end (the train flow, and rank 0 of ``mmcaps
    train`` under torchrun); returns whether it was emitted.

    Inside a flow run the event goes to that run's API. Outside one it is emitted only when a Prefect API is
    configured: without one there is no deployment to trigger, and Prefect would start a throwaway server just to
    drop the event.
    """
    from prefect.context import FlowRunContext  # noqa: PLC0415  deferred: prefect
    from prefect.settings import PREFECT_API_URL  # noqa: PLC0415  deferred: prefect

    if FlowRunContext.get() is None and not PREFECT_API_URL.value():
        return False
    from prefect.events import emit_event  # noqa: PLC0415  deferred: prefect

    emit_event(event=TRAIN_EVENT, **train_event_fields(result, datasets, workspace_root))
    return True
