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
# workspace the tests create; see pipeline.ingest.engine.CACHE_ENV.
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
