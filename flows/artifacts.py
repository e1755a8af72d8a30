"""Artifacts that flows leave in the Prefect UI: progress, run tables, metrics and report links.

Keys must match ``[a-z0-9-]`` (Prefect's rule); :func:`artifact_key` builds them from user names.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from tqdm import tqdm

_NOT_KEY = re.compile(r"[^a-z0-9-]+")


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The running flow's or task's logger (its lines reach the UI), or a plain one outside a run."""
    try:
        return get_run_logger()
    except Exception:  # called outside a run
        return logging.getLogger("mmcaps.flows")


def artifact_key(*parts: str) -> str:
    """``artifact_key("extract", "My_Videos")`` → ``"extract-my-videos"``."""
    raw = "-".join(p for p in parts if p)
    return _NOT_KEY.sub("-", raw.lower()).strip("-")[:100] or "mmcaps"


class Progress:
    """A progress artifact that a long task updates as it goes (0-100 %).

    Each sent update is an API call, a database row and an event, so they are rationed: an update is sent when the
    whole percent changes, or when ``min_interval_s`` passed since the last one sent and the value changed; the end
    (done == total) always. A run sends at most 101 + its seconds / ``min_interval_s`` updates whatever its number
    of videos or steps (it sent one per video: 1.22 M for HowTo100M; one per training step)."""

    def __init__(
        self, key: str, description: str, min_interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.artifact_id: UUID | None = None
        self.min_interval_s, self.clock = min_interval_s, clock
        self.sent = 0  # updates sent to the API
        self._last: tuple[float, float] | None = None  # (progress, clock) of the last update sent
        try:
            self.artifact_id = create_progress_artifact(progress=0.0, key=key, description=description)
        except Exception:  # progress is a courtesy; never fail a run because the UI is unreachable
            self.artifact_id = None

    def update(self, done: float, total: float) -> None:
        if self.artifact_id is None or total <= 0:
            return
        value, now = round(100.0 * min(done / total, 1.0), 1), self.clock()
        if self._last is not None:
            last, at = self._last
            due = int(value) != int(last) or value >= 100.0 or now - at >= self.min_interval_s
            if value == last or not due:
                return
        self._last = (value, now)
        self.sent += 1
        with contextlib.suppress(Exception):
            update_progress_artifact(self.artifact_id, progress=value)


def terminal_bar(total: int, desc: str, unit: str = "video") -> Any:
    """A tqdm bar on stderr (done / total, rate, ETA), or one that draws nothing when stderr is not a terminal."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not sys.stderr.isatty(), dynamic_ncols=True, leave=False)


def table(key: str, rows: Sequence[dict[str, Any]], description: str) -> None:
    """A table artifact; every row is a dict of plain values."""
    clean = [{k: ("" if v is None else v) for k, v in row.items()} for row in rows]
    create_table_artifact(key=key, table=clean or [{"note": "nothing to show"}], description=description)


def markdown(key: str, text: str, description: str) -> None:
    create_markdown_artifact(key=key, markdown=text, description=description)


def link(key: str, path: str | Path, description: str) -> None:
    """Where a file is: a link for web addresses; for a local file its path as text to copy, since a browser showing
    the Prefect UI over http will not follow a ``file://`` link."""
    target = str(path)
    if target.startswith(("http://", "https://")):
        create_link_artifact(key=key, link=target, link_text=target, description=description)
        return
    where = target if "://" in target else str(Path(target).resolve())
    create_markdown_artifact(key=key, markdown=f"{description}: `{where}`", description=description)


def metrics_markdown(title: str, rows: list[dict[str, Any]], report: str | None) -> str:
    """A Markdown table of each metric under both protocols with chance beside (what a random ranking or placement
    gets): ``strict`` counts every listed query, ``reference`` only the present videos (the paper's tables)."""
    header = "| task | modality | metric | strict | chance | reference | chance |"
    lines = [f"### {title}", "", header, "|---|---|---|---:|---:|---:|---:|"]
    lines += [
        f"| {r['task']} | {r['modality']} | {r['metric']} | {r['value']} | {r['chance']} | "
        f"{r.get('reference', '')} | {r.get('reference_chance', '')} |"
        for r in rows
    ]
    if report:
        lines += ["", f"report: `{report}`"]
    return "\n".join(lines)
