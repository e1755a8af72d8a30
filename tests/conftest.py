"""Shared fixtures: an isolated Prefect home and API, temporary workspaces, one small synthetic corpus.

Prefect reads its settings at import, so the isolation variables are set here, before any test module
imports prefect. Every test session gets a fresh PREFECT_HOME (its SQLite database, result storage and cache
records live there), so cache records never leak between sessions.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from flows.threads import apply_thread_settings

# `make test` runs the suite in two pytest-xdist workers: processes of their own, each with its own Prefect home and API
# (tests read "the task runs since t" and "the newest artifact named k" from it). What is the same for every worker
# and changes nothing is made in one folder they share: the first process to load this file (pytest-xdist's
# controller, or pytest alone) makes it, and the workers inherit its environment.
_SHARED_ENV = "MMCAPS_TEST_SHARED"
_MADE_SHARED = not os.environ.get(_SHARED_ENV)  # this process makes it (and removes it at the end)
_SHARED = Path(os.environ.get(_SHARED_ENV) or tempfile.mkdtemp(prefix="mmcaps-test-shared-"))
os.environ[_SHARED_ENV] = str(_SHARED)
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1… in a pytest-xdist worker; None otherwise
# Each process's own Prefect home, inside the shared folder so that one removal at the end takes everything.
_PREFECT_HOME = Path(tempfile.mkdtemp(prefix=f"prefect-{_WORKER or 'main'}-", dir=_SHARED))
os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(_PREFECT_HOME / "storage")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_LOGGING_TO_API_ENABLED"] = "false"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# Tests must never reach the network for weights.
os.environ["TORCH_HOME"] = str(_PREFECT_HOME / "torch-home")
os.environ.pop("MMCAPS_HOME", None)
# Calibrated random backbones (deterministic given arch and seed) are computed once and shared by every workspace the
# tests create, in both workers (written by atomic rename: two that race both write the same bytes); see
# pipeline.ingest.videos.CACHE_ENV.
_EXTRACT_CACHE = _SHARED / "extract-cache"
os.environ["MMCAPS_CACHE"] = str(_EXTRACT_CACHE)
os.environ["PREFECT_LOGGING_COLORS"] = "false"
# Nothing in the suite may decode with the host's ffmpeg (Debian's decodes audio to other lengths than the pinned
# build): an ffmpeg first on PATH that fails loudly. A test that asks for ``ffmpeg: system`` sets PATH itself.
_TRAP = _PREFECT_HOME / "host-ffmpeg-trap"
_TRAP.mkdir()
for _name in ("ffmpeg", "ffprobe"):
    (_TRAP / _name).write_text(f"#!/bin/sh\necho 'the host {_name} was called: use the pinned build' >&2\nexit 97\n")
    (_TRAP / _name).chmod(0o755)
os.environ["PATH"] = f"{_TRAP}{os.pathsep}{os.environ.get('PATH', '')}"
# The OpenMP wait settings `mmcaps` starts with (flows/threads.py), here before anything loads torch: the two workers
# and the demo's process share two cores, where libgomp's default spinning burns the time the others need. (A command
# run in-process sets them too, but after this process loaded torch: only later subprocesses would see them.)
apply_thread_settings()


def pytest_unconfigure(config: pytest.Config) -> None:
    """The process that made the shared folder removes it, with every worker's Prefect home and the backbone cache
    (400 MB), once the workers and their servers have stopped."""
    if _MADE_SHARED:
        shutil.rmtree(_SHARED, ignore_errors=True)


@pytest.fixture(autouse=True)
def _prefect_console_to_real_stderr():
    """Point Prefect's console log handlers at the process's real stderr (fd 2, which pytest captures anyway).

    Prefect binds them to ``sys.stderr`` as it is when logging is set up; inside a test using ``capsys`` that is a
    stream closed after the test, and every later log line would fail (recursively) on it.
    """
    import logging
    import sys

    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [
        logging.getLogger(),
        *[lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)],
    ]
    for lg in loggers:
        for handler in lg.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.stream = sys.__stderr__  # not setStream: it flushes the old, maybe closed, stream
                handler.console.file = sys.__stderr__
    yield


@pytest.fixture(scope="session")
def prefect_api():
    """A real Prefect API (temporary SQLite database) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def extract_cache() -> Path:
    """The session's cache folder for calibrated backbones and converted word vectors ($MMCAPS_CACHE)."""
    _EXTRACT_CACHE.mkdir(parents=True, exist_ok=True)
    return _EXTRACT_CACHE


@pytest.fixture
def workspace(tmp_path):
    """An empty workspace in a temporary folder."""
    from storage import Workspace

    return Workspace(tmp_path / "ws")


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> Path:
    """One small synthetic corpus (train and eval splits), shared by every test that needs real videos."""
    from pipeline.synthetic import SynthConfig, generate_corpus

    out = tmp_path_factory.mktemp("synth")
    generate_corpus(out, SynthConfig.tiny())
    return out


class TrainedDemo:
    """What :func:`trained_demo` made: a workspace with datasets ``synthetic-train`` and ``eval-synthetic``, one
    finished run, and the corpus they came from."""

    def __init__(self, workspace: Path, corpus: Path, run_id: str, output: str, errors: str = "") -> None:
        self.workspace, self.corpus, self.run_id, self.output = workspace, corpus, run_id, output
        self.errors = errors  # what the demo wrote to stderr: progress lines, notes (Prefect's lines go elsewhere)

    def copy_dataset(self, source: str, name: str, *, drop: tuple[str, ...] = ()) -> str:
        """A new dataset ``name`` of the same workspace holding ``source``'s files, minus the videos in ``drop``
        (their manifest rows are left out; the shards are shared as copies). Returns ``name``."""
        import pyarrow.compute as pc

        src = self.workspace / "datasets" / source
        dst = self.workspace / "datasets" / name
        shutil.copytree(src, dst)
        if drop:  # the manifest and its current view are folders of parts: written anew without those rows
            from storage import Workspace
            from storage.manifest import Manifest

            manifest = Manifest(Workspace(self.workspace), name)
            table = manifest.read()
            keep = pc.invert(pc.is_in(table.column("video_id"), value_set=pa_array(list(drop))))
            for stale in (dst / "manifest.parquet", dst / "current.parquet"):
                if stale.is_dir():
                    shutil.rmtree(stale)
                else:
                    stale.unlink(missing_ok=True)
            manifest.append(table.filter(keep))
        return name

    def restore_videos(self, source: str, name: str, videos: tuple[str, ...]) -> None:
        """Append ``source``'s manifest rows of ``videos`` to dataset ``name`` (as an extraction run appends them)."""
        import pyarrow.compute as pc

        from storage import Workspace
        from storage.manifest import Manifest

        table = Manifest(Workspace(self.workspace), source).read()
        rows = table.filter(pc.is_in(table.column("video_id"), value_set=pa_array(list(videos))))
        Manifest(Workspace(self.workspace), name).append(rows)


def pa_array(values: list[str]):
    import pyarrow as pa

    return pa.array(values, pa.string())


DEMO_FIXTURE = "trained_demo"
DEMO_GROUP = "trained-demo"
_DEMO_WANTED = pytest.StashKey[bool]()
# The modules that use the trained demo, as the workers found them, for the controller's scheduler (which sees test
# ids only): both workers write the same list.
_DEMO_MODULES = _SHARED / "demo-modules.json"


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the tests around `mmcaps demo --size tiny`, the suite's dearest fixture (130-300 s): the modules that use
    it wait for it, so the demo runs in a process of its own beside other tests.

    Alone (plain ``pytest``): those modules run last, each whole, in their order; the demo starts at the first test.

    In pytest-xdist's workers (``--dist loadscope``, as `make test` runs them): the modules using the demo come first,
    in their order, then the others, largest first, so that the last work handed out is small; the controller's
    scheduler (:func:`pytest_xdist_make_scheduler`) hands them out."""
    demo = {_module(item.nodeid) for item in items if DEMO_FIXTURE in getattr(item, "fixturenames", ())}
    config.stash[_DEMO_WANTED] = bool(demo)
    if _WORKER is None:
        items.sort(key=lambda item: _module(item.nodeid) in demo)  # stable: the order within each group is kept
        return
    tmp = _DEMO_MODULES.with_name(f".{_WORKER}-{_DEMO_MODULES.name}")
    tmp.write_text(json.dumps(sorted(demo)))
    os.replace(tmp, _DEMO_MODULES)
    sizes = Counter(_module(item.nodeid) for item in items)

    def rank(item: pytest.Item) -> tuple[bool, int, str]:
        module = _module(item.nodeid)
        return (False, 0, "") if module in demo else (True, -sizes[module], module)

    items.sort(key=rank)  # both workers sort the same collection the same way, as pytest-xdist requires


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With ``--dist loadscope``: pytest-xdist's scheduling by module (a module's tests run in one worker, so its
    module fixtures are made once), except that the modules using the trained demo are one unit, first in the queue.

    The worker that takes that unit starts the demo, against its own Prefect API (those tests read the demo's flow
    runs, artifacts and events there), waits, and runs them one module after the other (they add datasets and
    indexes to the one demo workspace); the other worker meanwhile takes the other modules. (``--dist loadgroup``
    with ``xdist_group`` marks would say the same, but pytest-xdist 3.8 renames test ids in a way pytest 9 ignores.)
    """
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class DemoFirst(LoadScopeScheduling):
        demo: set[str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.demo is None:  # first asked once every worker's collection is in, after they wrote the list
                self.demo = set(json.loads(_DEMO_MODULES.read_text())) if _DEMO_MODULES.exists() else set()
            module = _module(nodeid)
            return DEMO_GROUP if module in self.demo else module

    return DemoFirst(config, log)


class _DemoProcess:
    """``mmcaps demo --size tiny`` running as a user runs it, in a process of its own, against the session's API."""

    def __init__(self, root: Path, corpus: Path) -> None:
        import subprocess
        import sys

        from prefect.settings import PREFECT_API_URL

        self.root, self.corpus = root, corpus
        argv = ["demo", "--size", "tiny", "--workspace", str(root / "ws"), "--corpus", str(corpus)]
        env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
        with open(root / "stdout.txt", "wb") as out, open(root / "stderr.txt", "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *argv], stdout=out, stderr=err, env=env,
                                         cwd=root)  # fmt: skip

    def result(self, timeout: float = 3600) -> TrainedDemo:
        status = self.proc.wait(timeout)
        out, err = ((self.root / f).read_text() for f in ("stdout.txt", "stderr.txt"))
        assert status == 0, f"mmcaps demo --size tiny exited {status}:\n{err[-4000:]}"
        (run_dir,) = (self.root / "ws" / "models").iterdir()
        return TrainedDemo(self.root / "ws", self.corpus, run_dir.name, out, err)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session", autouse=True)
def _demo_process(request, tmp_path_factory):
    """Starts the demo at the session's first test when a collected test will use it (see above), else nothing. In a
    pytest-xdist worker, nothing: there, :func:`trained_demo` starts it in the one worker that runs its tests."""
    if _WORKER is not None or not request.config.stash.get(_DEMO_WANTED, False):
        yield None
        return
    request.getfixturevalue("prefect_api")
    root = tmp_path_factory.mktemp("trained-demo")
    shutil.copytree(request.getfixturevalue("synth_corpus"), root / "corpus")
    demo = _DemoProcess(root, root / "corpus")
    yield demo
    demo.stop()


@pytest.fixture(scope="session")
def trained_demo(_demo_process, prefect_api, synth_corpus, tmp_path_factory) -> TrainedDemo:
    """``mmcaps demo --size tiny`` once per session (the demo preset's 400 steps), on its own copy of the tiny corpus,
    run as a user runs it: its own process, started beside the first tests (see ``pytest_collection_modifyitems``);
    in pytest-xdist, by the one worker that runs the tests using it, at the first of them, beside the other worker.

    400 steps, not fewer: at 150 the tiny model's held-out retrieval was above chance by a binomial test on
    AVX-512 BF16 features but not on fp32 ones (text->video+audio R@10 0.67 vs chance 0.42 over 24 queries, p 0.012);
    at 400, 0.75 (p 0.001).

    For tests that need a trained model and extracted datasets without changing them (search, the app): they may add
    datasets and write under the run's ``index/``, never retrain or change the demo's datasets. Tests that do
    (tests/flows/test_pipeline.py) keep their own run.
    """
    if _demo_process is not None:
        return _demo_process.result()
    root = tmp_path_factory.mktemp("trained-demo")
    shutil.copytree(synth_corpus, root / "corpus")
    demo = _DemoProcess(root, root / "corpus")
    try:
        return demo.result()
    finally:
        demo.stop()


class DaskProcesses:
    """What :func:`start_dask` started: the scheduler's address, and per worker name (``w0``, ``w1``…) its process
    (a ``dask worker`` with its nanny, in a process group of its own: ``os.killpg`` takes down the whole worker)."""

    def __init__(self, address: str, workers: dict) -> None:
        self.address, self.workers = address, workers


@contextlib.contextmanager
def start_dask(folder: Path, n_workers: int = 2, env: dict | None = None):
    """``dask scheduler`` and ``n_workers`` ``dask worker`` processes on 127.0.0.1 (one thread each), logs in
    ``folder``; yields a :class:`DaskProcesses`, and stops them all on exit."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from distributed import Client

    scheduler_file = folder / "scheduler.json"
    dask = str(Path(sys.executable).with_name("dask"))
    env = env or dict(os.environ)
    common = ["--no-dashboard"]
    logs = contextlib.ExitStack()

    def log(name: str):
        return logs.enter_context(open(folder / f"{name}.log", "wb"))  # each process's output, read on failure

    procs = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file", str(scheduler_file), *common],
            env=env, stdout=subprocess.DEVNULL, stderr=log("scheduler"), start_new_session=True,
        )
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not scheduler_file.exists():
            assert procs[0].poll() is None, (folder / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.1)
        for i in range(n_workers):
            procs.append(
                subprocess.Popen(
                    [dask, "worker", "--scheduler-file", str(scheduler_file), "--host", "127.0.0.1", "--nthreads", "1",
                     "--name", f"w{i}", "--local-directory", str(folder / f"w{i}"), *common],
                    env=env, stdout=subprocess.DEVNULL, stderr=log(f"worker{i}"),
                    start_new_session=True, cwd=Path(__file__).resolve().parents[1],
                )
            )  # fmt: skip
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:"), address
        with Client(address, timeout=60) as client:
            client.wait_for_workers(n_workers, timeout=120)
        yield DaskProcesses(address, {f"w{i}": proc for i, proc in enumerate(procs[1:])})
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
        logs.close()


@pytest.fixture(scope="session")
def dask_cluster(prefect_api, tmp_path_factory):
    """A real Dask cluster as README tells users to start one: ``dask scheduler`` and two ``dask worker`` processes,
    on 127.0.0.1, reporting their task runs to the session's Prefect API. Yields the scheduler's address."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    with start_dask(tmp_path_factory.mktemp("dask"), 2, env) as cluster:
        yield cluster.address


class S3Server:
    """What :func:`s3_server` started: ``moto_server`` on loopback, a bucket, and the canary secret it was given."""

    def __init__(self, endpoint: str, bucket: str, secret: str, log: Path) -> None:
        self.endpoint, self.bucket, self.secret, self.log = endpoint, bucket, secret, log

    def url(self, prefix: str) -> str:
        """``s3://<bucket>/<prefix>``: a workspace root on the server."""
        return f"s3://{self.bucket}/{prefix.strip('/')}"


@contextlib.contextmanager
def start_moto_server(folder: Path):
    """``moto_server`` on a free port of 127.0.0.1 (its log in ``folder``), answering; yields ``(endpoint, process)``
    (the process leads its own process group: a test may SIGSTOP it to play an outage) and stops it on exit."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    moto = str(Path(sys.executable).with_name("moto_server"))
    log = folder / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [moto, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"moto_server did not answer: {log.read_text()}"
                time.sleep(0.2)
        yield endpoint, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGCONT)  # a test that paused it may have failed before resuming it
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 API: ``moto_server`` as a separate process on 127.0.0.1, one bucket, credentials in the environment.

    s3fs (through botocore >= 1.31) reads ``AWS_ENDPOINT_URL`` from the environment, so ``Workspace("s3://…")`` and
    ``--workspace s3://…`` reach this server with no mmcaps code or option; the secret key is a canary that tests grep
    for in everything mmcaps writes or prints.
    """
    import secrets

    folder = tmp_path_factory.mktemp("s3")
    with start_moto_server(folder) as (endpoint, _proc):
        secret = f"mmcaps-canary-secret-{secrets.token_hex(12)}"
        env = {
            "AWS_ACCESS_KEY_ID": "mmcaps-test-key",
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            import s3fs

            bucket = "mmcaps-test"
            s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
            yield S3Server(endpoint, bucket, secret, folder / "moto.log")
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
