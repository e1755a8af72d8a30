"""YouCook2 text-to-clip retrieval: ``youcookii_annotations_trainval.json``, validation subset.

The file is ``{"database": {video_id: {"subset": "training" | "validation", "annotations": [{"segment":
[start, end], "sentence": str, ...}, ...], ...}}}``. Every annotated segment of a validation video is one
candidate clip and its sentence the query (about 3.5k clips, as in Miech et al. 2019 and the paper).
"""

from __future__ import annotations

import json
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
    split_present,
)


def _entry_error(path: Path, where: str, problem: str) -> AnnotationError:
    return AnnotationError(path, f"entry {where}: {problem}")


def load_youcook2(
    annotations: str | Path, videos: str | Path, *, name: str = "youcook2", subset: str = "validation"
) -> EvalDataset:
    """Clips and queries of the ``subset`` videos; videos absent from ``videos`` are listed as missing."""
    path = Path(annotations)
    log = ReadLog(facts={"rules": {"clip_spans": CLIP_SPAN_RULE}})
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise AnnotationError(path, f"not valid JSON ({exc.msg}, column {exc.colno})", exc.lineno) from None
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise AnnotationError(path, 'top level must be an object with a "database" object')
    clips: list[ClipRef] = []
    queries: list[Query] = []
    for vid, entry in database.items():
        if not isinstance(entry, dict) or "subset" not in entry:
            raise _entry_error(path, f"database.{vid}", 'needs an object with "subset" and "annotations"')
        if entry["subset"] != subset:
            continue
        anns = entry.get("annotations")
        if not isinstance(anns, list):
            raise _entry_error(path, f"database.{vid}.annotations", "must be a list")
        for i, ann in enumerate(anns):
            where = f"database.{vid}.annotations[{i}]"
            try:
                start, end = (float(x) for x in ann["segment"])
                sentence = str(ann["sentence"]).strip()
            except (KeyError, TypeError, ValueError):
                raise _entry_error(path, where, 'needs "segment": [start, end] numbers and "sentence"') from None
            if not sentence:
                raise _entry_error(path, where, "empty sentence")
            log.counts["segments"] += 1
            if not clip_span_ok(start, end, log=log, path=f"{path} entry {where}", line=None):
                continue
            queries.append(Query(sentence, len(clips)))
            clips.append(ClipRef(vid, start, end))
    if not queries:
        raise AnnotationError(path, f"no annotated videos in subset {subset!r}")
    present, missing = split_present((c.video_id for c in clips), index_videos(videos))
    return EvalDataset(
        name=name,
        kind="youcook2",
        source=str(path),
        video_dir=str(videos),
        videos=present,
        missing=missing,
        clips=clips,
        queries=queries,
        log=log,
    )
