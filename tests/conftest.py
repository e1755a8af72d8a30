"""Shared fixtures: an isolated Prefect home and API, temporary workspaces, one small synthetic corpus.

Prefect reads its settings at import, so the isolation variables are set here, before any test module
imports prefect. Every test session gets a fresh PREFECT_HOME (its SQLite database, result storage and cache
records live there), so cache records never leak between sessions.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="mmcaps-test-prefect-"))
os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(_PREFECT_HOME / "storage")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_LOGGING_TO_API_ENABLED"] = "false"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# Tests must never reach the network for weights.
os.environ["TORCH_HOME"] = str(_PREFECT_HOME / "torch-home")
os.environ.pop("MMCAPS_HOME", None)
# Calibrated random backbones (deterministic given arch and seed) are computed once per session and shared by every
# workspace the tests create; see pipeline.ingest.videos.CACHE_ENV.
_EXTRACT_CACHE = _PREFECT_HOME / "extract-cache"
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

    def __init__(self, workspace: Path, corpus: Path, run_id: str, output: str) -> None:
        self.workspace, self.corpus, self.run_id, self.output = workspace, corpus, run_id, output

    def copy_dataset(self, source: str, name: str, *, drop: tuple[str, ...] = ()) -> str:
        """A new dataset ``name`` of the same workspace holding ``source``'s files, minus the videos in ``drop``
        (their manifest rows are left out; the shards are shared as copies). Returns ``name``."""
        import shutil

        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        src = self.workspace / "datasets" / source
        dst = self.workspace / "datasets" / name
        shutil.copytree(src, dst)
        if drop:
            table = pq.read_table(dst / "manifest.parquet")
            keep = pc.invert(pc.is_in(table.column("video_id"), value_set=pa_array(list(drop))))
            pq.write_table(table.filter(keep), dst / "manifest.parquet")
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


@pytest.fixture(scope="session")
def trained_demo(prefect_api, synth_corpus, tmp_path_factory) -> TrainedDemo:
    """``mmcaps demo --size tiny`` once per session (the demo preset's 400 steps), on its own copy of the tiny corpus.

    400 steps, not fewer: at 150 the tiny model's held-out retrieval was above chance by a binomial test on
    AVX-512 BF16 features but not on fp32 ones (text->video+audio R@10 0.67 vs chance 0.42 over 24 queries, p 0.012);
    at 400, 0.75 (p 0.001).

    For tests that need a trained model and extracted datasets without changing them (search, the app): they may add
    datasets and write under the run's ``index/``, never retrain or change the demo's datasets. Tests that do
    (tests/flows/test_pipeline.py) keep their own run.
    """
    import contextlib
    import io
    import shutil

    from flows.cli import main

    root = tmp_path_factory.mktemp("trained-demo")
    corpus = root / "corpus"
    shutil.copytree(synth_corpus, corpus)
    argv = [
        "demo",
        "--size",
        "tiny",
        "--workspace",
        str(root / "ws"),
        "--corpus",
        str(corpus),
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    (run_dir,) = (root / "ws" / "models").iterdir()
    return TrainedDemo(root / "ws", corpus, run_dir.name, out.getvalue())
