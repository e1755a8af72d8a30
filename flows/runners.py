"""Prefect task runners by name, for the CLI's ``--runner`` and the flows that take one.

Prefect is imported when a runner is made, not with this module: the CLI checks its arguments before Prefect loads.
"""

from __future__ import annotations

from typing import Any


def make_task_runner(runner: str = "threads", dask_address: str | None = None, dask_workers: int = 2) -> Any:
    """Threads (default), or Dask: an existing cluster by address, else a local cluster of worker processes."""
    if runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner  # noqa: PLC0415  deferred: prefect

        return ThreadPoolTaskRunner(max_workers=2)
    if runner != "dask":
        raise ValueError(f"unknown task runner {runner!r}: use threads or dask")
    from prefect_dask import DaskTaskRunner  # noqa: PLC0415  deferred: dask, only for --runner dask

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    cluster_kwargs: dict[str, Any] = {
        "n_workers": dask_workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
    }
    from prefect.settings import PREFECT_API_URL  # noqa: PLC0415  deferred: prefect

    api = PREFECT_API_URL.value()
    if api:
        # Worker processes must report to this API; a setting made in-process (a profile, a test harness) does not
        # reach them through the environment, and without it each would start a temporary server of its own.
        cluster_kwargs["env"] = {"PREFECT_API_URL": str(api)}
    return DaskTaskRunner(cluster_kwargs=cluster_kwargs)
