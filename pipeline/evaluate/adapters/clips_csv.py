"""Your own retrieval set: a CSV ``video_id,start,end,text`` (header required); each row is a query.

Rows with the same ``(video_id, start, end)`` share one candidate clip. ``end`` may be empty for "to the end
of the video". Spans follow :data:`pipeline.evaluate.dataset.CLIP_SPAN_RULE` (zero-length, reversed or negative
spans are dropped with a warning naming the line).
"""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.evaluate.dataset import (
    CLIP_SPAN_RULE,
    AnnotationError,
    ClipRef,
    EvalDataset,
    Query,
    ReadLog,
    clip_span_ok,
    index_videos,
    parse_float,
    split_present,
)

COLUMNS = ("video_id", "start", "end", "text")


def read_clips_csv(csv_path: str | Path, log: ReadLog | None = None) -> tuple[list[ClipRef], list[Query]]:
    """Candidate clips and queries of a ``video_id,start,end,text`` CSV; errors and warnings name the line."""
    path = Path(csv_path)
    log = log if log is not None else ReadLog()
    log.facts.setdefault("rules", {})["clip_spans"] = CLIP_SPAN_RULE
    clips: list[ClipRef] = []
    queries: list[Query] = []
    clip_of: dict[ClipRef, int] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != list(COLUMNS):
            raise AnnotationError(path, f"header must be {','.join(COLUMNS)}, got {header}", 1)
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(COLUMNS):
                raise AnnotationError(path, f"expected {len(COLUMNS)} fields, got {len(row)}", line)
            vid, start_s, end_s, text = (c.strip() for c in row)
            if not vid or not text:
                raise AnnotationError(path, "empty video_id or text", line)
            start = parse_float(start_s, path=path, line=line, what="start")
            end = None if end_s == "" else parse_float(end_s, path=path, line=line, what="end")
            log.counts["rows"] += 1
            if not clip_span_ok(start, end, log=log, path=path, line=line):
                continue
            clip = ClipRef(vid, start, end)
            if clip not in clip_of:
                clip_of[clip] = len(clips)
                clips.append(clip)
            queries.append(Query(text, clip_of[clip]))
    if not queries:
        raise AnnotationError(path, "no usable rows")
    return clips, queries


def load_clips_csv(csv_path: str | Path, videos: str | Path, *, name: str = "csv") -> EvalDataset:
    log = ReadLog()
    clips, queries = read_clips_csv(csv_path, log)
    present, missing = split_present((c.video_id for c in clips), index_videos(videos))
    return EvalDataset(
        name=name,
        kind="csv",
        source=str(csv_path),
        video_dir=str(videos),
        videos=present,
        missing=missing,
        clips=clips,
        queries=queries,
        log=log,
    )
