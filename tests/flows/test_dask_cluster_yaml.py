"""Clusters users have: ``--dask-cluster FILE.yaml`` (a cluster class by dotted path, its keyword arguments, adaptive
bounds) checked before Prefect starts and run through prefect_dask, tested with ``distributed.LocalCluster``; and
extraction batches that ask Dask for ``GPU=1`` when their device is CUDA, tested on CPU workers where only one was
started with ``--resources GPU=1``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flows.cli import main
from flows.runners import ClusterSpec, load_cluster_spec, make_task_runner
from storage.manifest import Manifest
from storage.workspace import Workspace
from tests.flows.test_pipeline import _assert_same_dataset
from tests.pipeline.ingest.release_layouts import vfe_rows, write_captions, write_vfe, write_word2vec

REPO = Path(__file__).resolve().parents[2]

SLURM_EXAMPLE = """\
class: dask_jobqueue.SLURMCluster
kwargs:
  cores: 8
  processes: 1
  memory: 32GB
  walltime: "04:00:00"
  job_extra_directives: ["--gres=gpu:1"]
  worker_extra_args: ["--resources", "GPU=1"]
adapt: {minimum: 0, maximum: 10}
"""

LOCAL = """\
class: distributed.LocalCluster
kwargs: {n_workers: 2, threads_per_worker: 1, processes: true, dashboard_address: null}
adapt: {minimum: 2, maximum: 2}
"""


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("class: [unclosed", "not valid YAML"),
        ("- a list", "a mapping with class"),
        ("class: distributed.NoSuchCluster", "module distributed has no NoSuchCluster"),
        ("class: no_such_package.Cluster", "cannot be imported (No module named 'no_such_package'"),
        ("class: LocalCluster", "not a dotted path"),
        ("class: distributed.LocalCluster\nworkers: 3", "unknown key(s) ['workers']"),
        ("class: distributed.LocalCluster\nkwargs: [1, 2]", "kwargs and adapt must be mappings"),
        ("class: distributed.LocalCluster\nadapt: {minimum: 0, most: 4}", "unknown adapt key(s) ['most']"),
        ("class: distributed.LocalCluster\nkwargs: {asynchronous: true}", "may not set asynchronous"),
        ("class: logging.Formatter", "is not a Dask cluster class"),
        ("class: distributed.SpecCluster\nkwargs: {n_workers: 2}", "kwargs do not fit distributed.SpecCluster"),
    ],
)
def test_a_bad_cluster_file_is_one_line_naming_it(tmp_path, text, says):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_cluster_spec(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and says in message and "\n" not in message, message


def test_the_cli_refuses_a_bad_cluster_file_before_prefect_starts(tmp_path, capsys):
    path = tmp_path / "slurm.yaml"
    path.write_text(SLURM_EXAMPLE.replace("dask_jobqueue.SLURMCluster", "dask_jobqueue_missing.SLURMCluster"))
    argv = ["import", "--features-2d", str(tmp_path), "--features-3d", str(tmp_path), "--dataset", "d"]
    assert main([*argv, "--dask-cluster", str(path), "--workspace", str(tmp_path / "ws")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and str(path) in errors[0] and "dask_jobqueue_missing" in errors[0], errors
    assert not (tmp_path / "ws").exists()


def test_a_cluster_file_makes_prefect_dasks_runner(prefect_api, tmp_path):
    """The spec reaches DaskTaskRunner as cluster_class / cluster_kwargs / adapt_kwargs (a Slurm file is checked only
    where dask_jobqueue is installed; its shape is what README shows)."""
    from prefect.settings import PREFECT_API_URL

    path = tmp_path / "local.yaml"
    path.write_text(LOCAL)
    spec = load_cluster_spec(path)
    assert spec == ClusterSpec(
        "distributed.LocalCluster",
        {"n_workers": 2, "threads_per_worker": 1, "processes": True, "dashboard_address": None},
        {"minimum": 2, "maximum": 2},
        str(path),
    )
    runner = make_task_runner("dask", None, 2, spec)
    assert runner.cluster_class == "distributed.LocalCluster" and runner.adapt_kwargs == {"minimum": 2, "maximum": 2}
    # local worker processes are told this API; kwargs otherwise as the file says
    assert runner.cluster_kwargs == {**spec.kwargs, "env": {"PREFECT_API_URL": str(PREFECT_API_URL.value())}}
    with pytest.raises(ValueError, match="not both"):
        make_task_runner("dask", "tcp://127.0.0.1:1", 2, spec)
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        return
    slurm = tmp_path / "slurm.yaml"
    slurm.write_text(SLURM_EXAMPLE)
    assert load_cluster_spec(slurm).adapt == {"minimum": 0, "maximum": 10}


def _vfe_layout(root: Path, tmp_path: Path) -> list[str]:
    for i, n in enumerate((4, 5, 6)):
        write_vfe(root / "feature_2d" / f"v{i}", vfe_rows(n, i))
        write_vfe(root / "feature_3d" / f"v{i}", vfe_rows(int(np.ceil(n * 1.5)), 5 + i))
    captions = write_captions(
        tmp_path / "caption.json", {f"v{i}": [(0, 2, "add oil"), (2, 4, "chop")] for i in range(3)}
    )
    w2v = write_word2vec(tmp_path / "w.txt", ["add", "oil", "chop"])
    return ["--features-2d", str(root / "feature_2d"), "--features-3d", str(root / "feature_3d"),
            "--captions", str(captions), "--word2vec", str(w2v)]  # fmt: skip


def test_local_cluster_from_a_file_imports_as_the_threads_runner(prefect_api, tmp_path):
    """`mmcaps import --dask-cluster local.yaml` (distributed.LocalCluster through the same mechanism as a Slurm
    file: class, kwargs, adapt) gives the threads runner's manifest rows and array bytes."""
    args = _vfe_layout(tmp_path / "vfe", tmp_path)
    path = tmp_path / "local.yaml"
    path.write_text(LOCAL)
    ws = ["--workspace", str(tmp_path / "ws"), "--batch-size", "1"]
    assert main(["import", *args, "--dataset", "threads", *ws]) == 0
    assert main(["import", *args, "--dataset", "dask", "--dask-cluster", str(path), *ws]) == 0
    _assert_same_dataset(Workspace(tmp_path / "ws"), "threads", "dask")
    assert Manifest(Workspace(tmp_path / "ws"), "dask").read().num_rows == 3


@contextlib.contextmanager
def _cluster(folder: Path, workers: list[list[str]]):
    """``dask scheduler`` and one ``dask worker`` per entry of ``workers`` (its extra arguments), on 127.0.0.1, as
    tests/conftest.py's dask_cluster starts them. Yields the scheduler's address."""
    from distributed import Client
    from prefect.settings import PREFECT_API_URL

    dask = str(Path(sys.executable).with_name("dask"))
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    scheduler_file = folder / "scheduler.json"
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(scheduler_file)], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not scheduler_file.exists():
            assert procs[0].poll() is None and time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.1)
        for i, extra in enumerate(workers):
            procs.append(subprocess.Popen(
                [dask, "worker", "--scheduler-file", str(scheduler_file), "--host", "127.0.0.1", "--nthreads", "1",
                 "--no-dashboard", "--name", f"w{i}", "--local-directory", str(folder / f"w{i}"), *extra],
                env=env, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address, timeout=60) as client:
            client.wait_for_workers(len(workers), timeout=120)
        yield address
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _executed(address: str) -> dict[str, int]:
    """Tasks each worker has run, by worker name."""
    from distributed import Client

    with Client(address, timeout=60) as client:
        counts = client.run(lambda dask_worker: (dask_worker.name, dask_worker.state.executed_count))
    return dict(counts.values())


def test_gpu_extraction_batches_run_only_on_gpu_workers(prefect_api, synth_corpus, extract_cache, tmp_path):
    """Extraction on CUDA asks each batch for GPU=1: on a cluster of two CPU workers where only w1 was started with
    `--resources GPU=1`, every batch runs on w1 (forced with gpu_tasks=True here: these workers have no CUDA).

    The videos are extracted first on threads in this process, so the cluster's batches find their streams in the
    feature store (no backbone loads in a worker) and give the same dataset."""
    from flows.ingest import extract_flow
    from pipeline.extract import ExtractConfig

    src = tmp_path / "src"
    src.mkdir()
    for name in ("train-0000", "train-0001"):
        shutil.copy(synth_corpus / "train" / "videos" / f"{name}.mp4", src / f"{name}.mp4")
    cfg = ExtractConfig().with_updates({"max_seconds": 1, "text.word2vec": str(synth_corpus / "word2vec.bin")})
    captions, ws = str(synth_corpus / "train" / "caption.json"), str(tmp_path / "ws")
    first = extract_flow(str(src), "threads", cfg, captions, ws)
    assert first.extracted == 2 and not first.failed, first
    with _cluster(tmp_path, [[], ["--resources", "GPU=1"]]) as address:
        before = _executed(address)
        flow = extract_flow.with_options(task_runner=make_task_runner("dask", address))
        summary = flow(str(src), "gpu", cfg, captions, ws, videos_per_task=1, gpu_tasks=True)
        after = _executed(address)
    assert summary.extracted == 2 and not summary.failed, summary
    ran = {name: after[name] - before[name] for name in after}
    assert ran == {"w0": 0, "w1": 2}, ran  # two batches of one video, both on the GPU worker
    assert sorted(Manifest(Workspace(ws), "gpu").read().column("video_id").to_pylist()) == ["train-0000", "train-0001"]
