"""Prefect task runners by name, for the CLI's ``--runner``, ``--dask-address`` and ``--dask-cluster``.

A cluster users already have (Slurm, PBS, Kubernetes, a cloud) is named in a YAML file: the cluster class by its
dotted path, its keyword arguments, and optionally adaptive scaling, e.g. ::

    class: dask_jobqueue.SLURMCluster
    kwargs: {cores: 8, memory: 32GB, processes: 1, job_extra_directives: ["--gres=gpu:1"]}
    adapt: {minimum: 0, maximum: 10}

:func:`load_cluster_spec` checks it before any flow starts (the class is imported and its keyword arguments bound to
its signature); prefect_dask's ``DaskTaskRunner`` then starts the cluster when the flow starts and closes it after.

Prefect is imported when a runner is made, not with this module: the CLI checks its arguments before Prefect loads.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

GPU_RESOURCES = {"GPU": 1}  # what an extraction task asks of a Dask worker when it runs on CUDA
_SPEC_KEYS = ("class", "kwargs", "adapt")
_ADAPT_KEYS = ("minimum", "maximum", "minimum_cores", "maximum_cores", "minimum_memory", "maximum_memory",
               "interval", "wait_count", "target_duration")  # fmt: skip


@dataclass(frozen=True)
class ClusterSpec:
    """A Dask cluster to start for a flow: ``cluster_class`` (dotted path) called with ``kwargs``, then adapted
    between ``adapt``'s bounds when given. ``source`` is the file it came from (for messages)."""

    cluster_class: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    adapt: dict[str, Any] | None = None
    source: str = ""


def load_cluster_spec(path: str | os.PathLike[str]) -> ClusterSpec:
    """Read and check a ``--dask-cluster`` YAML file. Any problem raises ValueError, one line naming the file: not
    found, not YAML, not a mapping of ``class``/``kwargs``/``adapt``, a class that cannot be imported or is not
    callable, keyword arguments its signature refuses, an ``adapt`` key Dask does not know."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ValueError(f"{name}: cannot read the Dask cluster file ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{name}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("class"), str):
        raise ValueError(f"{name}: a Dask cluster file is a mapping with class: <module.Class> (kwargs:, adapt:)")
    unknown = sorted(set(data) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {unknown}; a Dask cluster file has {list(_SPEC_KEYS)}")
    kwargs, adapt = data.get("kwargs") or {}, data.get("adapt")
    if not isinstance(kwargs, dict) or (adapt is not None and not isinstance(adapt, dict)):
        raise ValueError(f"{name}: kwargs and adapt must be mappings (key: value)")
    if "asynchronous" in kwargs:
        raise ValueError(f"{name}: kwargs may not set asynchronous (Prefect manages it)")
    bad = sorted(set(adapt or {}) - set(_ADAPT_KEYS))
    if bad:
        raise ValueError(f"{name}: unknown adapt key(s) {bad}; Dask's adapt takes {list(_ADAPT_KEYS)}")
    _check_class(name, data["class"], kwargs)
    return ClusterSpec(data["class"], dict(kwargs), dict(adapt) if adapt is not None else None, name)


def _check_class(name: str, dotted: str, kwargs: dict[str, Any]) -> None:
    """Import ``dotted`` and bind ``kwargs`` to its signature (a class taking ``**kwargs`` accepts any)."""
    module, _, attr = dotted.rpartition(".")
    if not module:
        raise ValueError(f"{name}: class {dotted!r} is not a dotted path such as distributed.LocalCluster")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise ValueError(f"{name}: class {dotted!r} cannot be imported ({exc}; is its package installed?)") from exc
    except AttributeError as exc:
        raise ValueError(f"{name}: class {dotted!r} cannot be imported (module {module} has no {attr})") from exc
    from distributed.deploy import Cluster  # noqa: PLC0415  deferred: distributed, only for --dask-cluster

    if not callable(cls) or (isinstance(cls, type) and not issubclass(cls, Cluster)):
        raise ValueError(f"{name}: {dotted!r} is not a Dask cluster class (a distributed.deploy.Cluster)")
    try:
        inspect.signature(cls).bind_partial(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{name}: kwargs do not fit {dotted} ({exc})") from exc
    except ValueError:  # a signature inspect cannot read: the cluster class itself checks its arguments
        pass


def make_task_runner(
    runner: str = "threads",
    dask_address: str | None = None,
    dask_workers: int = 2,
    cluster: ClusterSpec | None = None,
) -> Any:
    """Threads (default), or Dask: an existing cluster by address, a cluster a :class:`ClusterSpec` describes, else a
    local cluster of ``dask_workers`` worker processes."""
    if runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner  # noqa: PLC0415  deferred: prefect

        return ThreadPoolTaskRunner(max_workers=2)
    if runner != "dask":
        raise ValueError(f"unknown task runner {runner!r}: use threads or dask")
    from prefect_dask import DaskTaskRunner  # noqa: PLC0415  deferred: dask, only for --runner dask

    if dask_address and cluster is not None:
        raise ValueError("give --dask-address or --dask-cluster, not both")
    if dask_address:
        return DaskTaskRunner(address=dask_address)
    if cluster is not None:
        kwargs = dict(cluster.kwargs)
        env = _worker_env()
        if env and kwargs.get("processes", True) and _is_local_cluster(cluster.cluster_class):
            kwargs.setdefault("env", env)  # worker processes of this machine; a batch system's jobs: README
        return DaskTaskRunner(cluster_class=cluster.cluster_class, cluster_kwargs=kwargs, adapt_kwargs=cluster.adapt)
    cluster_kwargs: dict[str, Any] = {
        "n_workers": dask_workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
    }
    env = _worker_env()
    if env:
        cluster_kwargs["env"] = env
    return DaskTaskRunner(cluster_kwargs=cluster_kwargs)


def _is_local_cluster(dotted: str) -> bool:
    from distributed import LocalCluster  # noqa: PLC0415  deferred: distributed, only for a Dask runner

    module, _, attr = dotted.rpartition(".")
    cls = getattr(importlib.import_module(module), attr)
    return isinstance(cls, type) and issubclass(cls, LocalCluster)


def _worker_env() -> dict[str, str]:
    """What local worker processes need to report to this Prefect API: a setting made in-process (a profile, a test
    harness) does not reach them through the environment, and without it each would start a temporary server of its
    own. Empty where no API is set. (Workers a batch system starts get it from the job's environment: README.)"""
    from prefect.settings import PREFECT_API_URL  # noqa: PLC0415  deferred: prefect

    api = PREFECT_API_URL.value()
    return {"PREFECT_API_URL": str(api)} if api else {}


def batch_resources(needs_gpu: bool) -> dict[str, float]:
    """The Dask resources each ingest batch asks for: one GPU when its work runs on CUDA, else none (workers are
    started with ``--resources GPU=1``, one per GPU, so a batch waits for a GPU worker and never shares one)."""
    return dict(GPU_RESOURCES) if needs_gpu else {}
