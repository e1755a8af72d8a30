"""CrossTask zero-shot step localisation (Zhukov et al. 2019), in the release's own format.

``ROOT/tasks_primary.txt``: blocks of five lines (task id, title, URL, number of steps, comma-separated step
texts) separated by a blank line. ``ROOT/videos.csv``: ``task,vid,url`` rows (no header).
``ROOT/annotations/<task>_<vid>.csv``: ``step,start,end`` rows, steps numbered from 1, times in seconds.

As in the reference evaluation, a video counts when its task is a primary task and it has an annotation file;
every step of its task is placed (in the task's order), and the ground truth of step ``k`` is the union of
its annotated spans. Files are read as UTF-8 with or without a byte-order mark, LF or CRLF.

Spans follow :data:`SPAN_RULE`, which keeps every row Zhukov's ``data.py`` keeps (it never raises on a span);
a row whose step is outside the task's steps (where ``data.py`` would fail) is dropped with a warning.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from pipeline.evaluate.dataset import (
    AnnotationError,
    EvalDataset,
    ReadLog,
    StepVideo,
    index_videos,
    parse_float,
    split_present,
)

SPAN_RULE = (
    "a reversed span (end < start) marks nothing in Zhukov's data.py and is dropped; a zero-length span (end == "
    "start) is kept: for recall it covers the seconds floor(start) <= t < ceil(end) as in data.py (one second when "
    "the time is fractional, none when it is whole) and it has no extent for IoU/IoD; a negative start is clipped "
    "to 0; each is warned about with file:line"
)


@dataclass(frozen=True)
class CrossTaskTask:
    task_id: str
    title: str
    url: str
    steps: tuple[str, ...]


def read_tasks(path: str | Path) -> dict[str, CrossTaskTask]:
    """Parse ``tasks_primary.txt``; errors name the file and line."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    tasks: dict[str, CrossTaskTask] = {}
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        if i + 4 >= len(lines):
            raise AnnotationError(path, "incomplete task block (needs id, title, URL, step count, steps)", i + 1)
        task_id, title, url, count, steps_line = (s.strip() for s in lines[i : i + 5])
        try:
            n_steps = int(count)
        except ValueError:
            raise AnnotationError(path, f"number of steps is not an integer: {count!r}", i + 4) from None
        steps = tuple(s.strip() for s in steps_line.split(","))
        if len(steps) != n_steps or any(not s for s in steps):
            raise AnnotationError(path, f"task {task_id}: expected {n_steps} non-empty steps, got {len(steps)}", i + 5)
        if task_id in tasks:
            raise AnnotationError(path, f"task {task_id} appears twice", i + 1)
        tasks[task_id] = CrossTaskTask(task_id, title, url, steps)
        i += 5
    if not tasks:
        raise AnnotationError(path, "no tasks")
    return tasks


def read_videos_csv(path: str | Path) -> list[tuple[str, str]]:
    """``(task, vid)`` pairs of ``videos.csv``."""
    path = Path(path)
    out: list[tuple[str, str]] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 3 or not row[0].strip() or not row[1].strip():
                raise AnnotationError(path, f"expected task,vid,url, got {row}", reader.line_num)
            out.append((row[0].strip(), row[1].strip()))
    return out


def read_annotation(path: str | Path, n_steps: int, log: ReadLog | None = None) -> list[tuple[int, float, float]]:
    """``(step 1..n, start, end)`` rows of one ``<task>_<vid>.csv`` under :data:`SPAN_RULE`."""
    path = Path(path)
    log = log if log is not None else ReadLog()
    out: list[tuple[int, float, float]] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 3:
                raise AnnotationError(path, f"expected step,start,end, got {row}", line)
            try:
                step = int(row[0])
            except ValueError:
                raise AnnotationError(path, f"step is not an integer: {row[0]!r}", line) from None
            start = parse_float(row[1], path=path, line=line, what="start")
            end = parse_float(row[2], path=path, line=line, what="end")
            log.counts["spans"] += 1
            if not 1 <= step <= n_steps:
                log.counts["spans_step_out_of_range_dropped"] += 1
                log.warn(path, f"step {step} outside 1..{n_steps}: row dropped", line)
                continue
            if end < start:
                log.counts["spans_reversed_dropped"] += 1
                log.warn(path, f"reversed span [{start}, {end}] (end < start): dropped", line)
                continue
            if end == start:
                log.counts["spans_zero_length_kept"] += 1
                log.warn(path, f"zero-length span [{start}, {end}]: kept for recall, no extent for IoU/IoD", line)
            if start < 0:
                log.counts["spans_negative_start_clipped"] += 1
                log.warn(path, f"span [{start}, {end}] starts before 0: clipped to 0", line)
                start = 0.0
            out.append((step, start, end))
    return out


def read_crosstask(root: str | Path, log: ReadLog | None = None) -> list[StepVideo]:
    """Step videos of every annotated video of a primary task, in ``videos.csv`` order."""
    root = Path(root)
    log = log if log is not None else ReadLog()
    log.facts.setdefault("rules", {})["spans"] = SPAN_RULE
    for needed in ("tasks_primary.txt", "videos.csv", "annotations"):
        if not (root / needed).exists():
            raise FileNotFoundError(f"{root / needed} does not exist (CrossTask root needs {needed})")
    tasks = read_tasks(root / "tasks_primary.txt")
    out: list[StepVideo] = []
    seen: set[tuple[str, str]] = set()
    for task_id, vid in read_videos_csv(root / "videos.csv"):
        task = tasks.get(task_id)
        ann = root / "annotations" / f"{task_id}_{vid}.csv"
        if task is None or not ann.exists() or (task_id, vid) in seen:
            continue
        seen.add((task_id, vid))
        log.counts["annotation_files"] += 1
        rows = read_annotation(ann, len(task.steps), log)
        out.append(
            StepVideo(
                video_id=vid,
                task=task_id,
                steps=task.steps,
                labels=tuple(str(k + 1) for k in range(len(task.steps))),
                segments=tuple((str(step), start, end) for step, start, end in rows),
            )
        )
    if not out:
        raise AnnotationError(root / "videos.csv", "no video of a primary task has an annotation file")
    return out


def load_crosstask(root: str | Path, videos: str | Path, *, name: str = "crosstask") -> EvalDataset:
    log = ReadLog()
    step_videos = read_crosstask(root, log)
    present, missing = split_present((sv.video_id for sv in step_videos), index_videos(videos))
    return EvalDataset(
        name=name,
        kind="crosstask",
        source=str(root),
        video_dir=str(videos),
        log=log,
        videos=present,
        missing=missing,
        step_videos=step_videos,
        localisation="crosstask",
    )
