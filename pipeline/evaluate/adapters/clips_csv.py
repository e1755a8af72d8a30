"""Your own retrieval set: a CSV ``video_id,start,end,text`` (header required); each row is a query.

Rows with the same ``(video_id, start, end)`` share one candidate clip. ``end`` may be empty for "to the end
of the video".
"""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.evaluate.dataset import (
    AnnotationError,
    ClipRef,
    EvalDataset,
    Query,
    check_span,
    index_videos,
    parse_float,
    split_present,
)

COLUMNS = ("video_id", "start", "end", "text")


def read_clips_csv(csv_path: str | Path) -> tuple[list[ClipRef], list[Query]]:
    """Candidate clips and queries of a ``video_id,start,end,text`` CSV; errors name the file and line."""
    path = Path(csv_path)
    clips: list[ClipRef] = []
    queries: list[Query] = []
    clip_of: dict[ClipRef, int] = {}
    with path.open(newline="", encoding="utf-8") as fh:
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
            if end is not None:
                check_span(start, end, path=path, line=line)
            elif start < 0:
                raise AnnotationError(path, f"start {start} < 0", line)
            clip = ClipRef(vid, start, end)
            if clip not in clip_of:
                clip_of[clip] = len(clips)
                clips.append(clip)
            queries.append(Query(text, clip_of[clip]))
    if not queries:
        raise AnnotationError(path, "no rows")
    return clips, queries


def load_clips_csv(csv_path: str | Path, videos: str | Path, *, name: str = "csv") -> EvalDataset:
    clips, queries = read_clips_csv(csv_path)
    present, missing = split_present((c.video_id for c in clips), index_videos(videos))
    return EvalDataset(
        name=name, kind="csv", source=str(csv_path), videos=present, missing=missing, clips=clips, queries=queries
    )
