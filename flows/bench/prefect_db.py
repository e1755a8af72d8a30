"""Prefect at corpus size: what the ``import`` flow adds to Prefect's database per video, on a database of its own.

:func:`start` runs this module in a child process with its own ``PREFECT_HOME`` and SQLite database and Prefect's
embedded server (as ``make demo`` runs), whatever API the calling process uses, so a user's database never receives
benchmark runs and nothing else writes to the one measured. The child imports, one after another, a folder of ``n``
synthetic video_features files for each ``n`` asked (``bench import``'s files) through the real ``import`` flow,
videos per task run as the extract flow sizes its batches (:func:`pipeline.ingest.driver.auto_batch_size`), and after
each reads the database: bytes in use (pages less free pages, as a reader sees them, write-ahead log included) and
rows per table. A first flow over one video goes first and is not reported: it pays for the database's creation
and the flow's own row. Each reported row is what one import of ``n`` videos added: task runs, events (Prefect's and
the run's own), log lines, artifacts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flows.bench.import_ import word2vec_file, write_vfe_folder
from flows.ingest import import_flow, layout_to_dict
from pipeline.ingest.driver import auto_batch_size
from pipeline.ingest.importers import ImportConfig, VfeLayout

WARM_VIDEOS = 1
SECONDS = 2.0  # per synthetic video: the database does not see the arrays
TABLES = ("task_run", "flow_run", "events", "log", "artifact")


def child_env(work: Path) -> dict[str, str]:
    """The environment of the measuring process: a fresh PREFECT_HOME and SQLite database in ``work``, the embedded
    server (no PREFECT_API_URL), Prefect's console lines off."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL")}
    env["PREFECT_HOME"] = str(work / "prefect-home")
    env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{work / 'prefect.db'}"
    env["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "CRITICAL"
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # The server writes events in batches every 5 s by default; sooner here so that each import's rows are read
    # soon after it (what is written does not change).
    env["PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL"] = "0.5"
    return env


def start(work: Path, sizes: list[int], workers: int, largest_batch: int) -> subprocess.Popen:
    """Start the measuring process (module doc) for ``sizes``; :func:`finish` waits for its rows. ``workers`` and
    ``largest_batch`` size the task runs as the extract flow does."""
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "flows.bench.prefect_db", "--work", str(work), "--out", str(work / "rows.json")]
    cmd += ["--sizes", ",".join(map(str, sizes)), "--workers", str(workers), "--largest-batch", str(largest_batch)]
    with open(work / "log.txt", "wb") as log:  # the child writes to its own copy of the descriptor
        return subprocess.Popen(cmd, env=child_env(work), stdout=log, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, work: Path) -> list[dict[str, Any]]:
    """One row per size (module doc): ``videos``, ``batch``, ``task_runs``, ``db_bytes`` and the rows each table
    gained, ``seconds`` of the flow. Raises RuntimeError with the log's last lines if the process failed."""
    status = proc.wait()
    if status != 0:
        tail = "\n".join((work / "log.txt").read_text(encoding="utf-8", errors="replace").splitlines()[-20:])
        raise RuntimeError(f"the Prefect database measurement failed (status {status}):\n{tail}")
    return json.loads((work / "rows.json").read_text(encoding="utf-8"))


def database_state(path: Path) -> dict[str, int]:
    """Bytes in use in the SQLite database at ``path`` (read-only; a writer may be running), its rows per table and
    the flow runs completed (their events)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        pages, free, size = (
            con.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size")
        )
        state = {"db_bytes": (pages - free) * size}
        state.update({t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES})
        done = con.execute("SELECT count(*) FROM events WHERE event = 'prefect.flow-run.Completed'").fetchone()[0]
        return state | {"flows_completed": done}
    finally:
        con.close()


def _settled(path: Path, flows: int, timeout_s: float = 60.0) -> dict[str, int]:
    """The database once the events of ``flows`` completed flow runs are in and two reads 0.5 s apart agree (the
    server records events and log lines a moment after the flow returns)."""
    deadline, last = time.monotonic() + timeout_s, None
    while True:
        state = database_state(path)
        if state == last and state["flows_completed"] >= flows:
            return state
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path}: the database did not settle in {timeout_s:.0f} s (last read {state})")
        last = state
        time.sleep(0.5)


def _child(args: argparse.Namespace) -> None:
    work, db = Path(args.work), Path(args.work) / "prefect.db"
    cfg = ImportConfig(recipe={"text": {"word2vec": str(word2vec_file(work / "w2v.txt"))}}).resolved()
    rows, before = [], None
    for i, n in enumerate([WARM_VIDEOS, *(int(s) for s in args.sizes.split(","))]):
        folder = work / f"vfe-{i}"
        captions, _ = write_vfe_folder(folder, n, SECONDS)
        layout = VfeLayout(str(folder / "feature_2d"), str(folder / "feature_3d"))
        batch = auto_batch_size(n, args.workers, args.largest_batch)
        t0 = time.perf_counter()
        summary = import_flow(layout_to_dict(layout), f"prefect-db-{i}", cfg, str(captions), str(work / "ws"),
                              batch_size=batch)  # fmt: skip
        seconds = time.perf_counter() - t0
        assert summary.extracted == n and not summary.failed, str(summary)
        expected = math.ceil(n / batch)
        after = _settled(db, i + 1)
        if before is not None:
            row: dict[str, Any] = {"videos": n, "batch": batch, "seconds": seconds}
            row.update({k: after[k] - before[k] for k in after})
            row["task_runs"] = row.pop("task_run")
            assert row["task_runs"] == expected, (row, expected)
            rows.append(row)
        before = after
    Path(args.out).write_text(json.dumps(rows, indent=2), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sizes", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--largest-batch", type=int, default=32)
    _child(parser.parse_args(argv))


if __name__ == "__main__":
    main()
