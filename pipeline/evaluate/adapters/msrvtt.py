"""MSR-VTT 1k-A text-to-video retrieval: ``MSRVTT_JSFUSION_test.csv`` (``key,vid_key,video_id,sentence``).

One row per test video (1000 rows in 1k-A): the whole video is the candidate, the sentence its query. Columns are
found by name, as the howto100m/AVLnet/CLIP4Clip loaders read them with pandas (``video_id``, ``sentence``), so
copies written with an extra index column read the same.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.evaluate.dataset import (
    AnnotationError,
    ClipRef,
    EvalDataset,
    Query,
    ReadLog,
    index_videos,
    split_present,
)

COLUMNS = ("key", "vid_key", "video_id", "sentence")  # the release's header
NEEDED = ("video_id", "sentence")


def load_msrvtt(csv_path: str | Path, videos: str | Path, *, name: str = "msrvtt") -> EvalDataset:
    """Whole-video clips and one query per row; videos absent from ``videos`` are listed as missing."""
    path = Path(csv_path)
    clips: list[ClipRef] = []
    queries: list[Query] = []
    clip_of: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        at = {name: i for i, name in enumerate(h.strip() for h in header or [])}
        if header is None or any(c not in at for c in NEEDED):
            raise AnnotationError(
                path, f"header must name {' and '.join(NEEDED)} (as {','.join(COLUMNS)}), got {header}", 1
            )
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise AnnotationError(path, f"expected {len(header)} fields, got {len(row)}", line)
            vid = row[at["video_id"]].strip()
            sentence = row[at["sentence"]].strip()
            if not vid or not sentence:
                raise AnnotationError(path, "empty video_id or sentence", line)
            if vid not in clip_of:
                clip_of[vid] = len(clips)
                clips.append(ClipRef(vid))
            queries.append(Query(sentence, clip_of[vid]))
    log = ReadLog()
    log.counts["rows"] = len(queries)
    if not queries:
        raise AnnotationError(path, "no rows")
    present, missing = split_present(clip_of, index_videos(videos))
    return EvalDataset(
        name=name,
        kind="msrvtt",
        source=str(path),
        video_dir=str(videos),
        videos=present,
        missing=missing,
        clips=clips,
        queries=queries,
        log=log,
    )
