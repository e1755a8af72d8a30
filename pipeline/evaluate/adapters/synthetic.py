"""The synthetic corpus's held-out split (``pipeline.synthetic``): retrieval on ``<split>/clips.csv`` and
CrossTask-format localisation on ``<split>/crosstask/``, videos in ``<split>/videos/``.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.evaluate.adapters.clips_csv import read_clips_csv
from pipeline.evaluate.adapters.crosstask import read_crosstask
from pipeline.evaluate.dataset import EvalDataset, ReadLog, index_videos, split_present


def load_synthetic(corpus_dir: str | Path, *, name: str = "synthetic", split: str = "eval") -> EvalDataset:
    base = Path(corpus_dir) / split
    clips_csv = base / "clips.csv"
    if not clips_csv.exists():
        raise FileNotFoundError(f"{clips_csv} does not exist (is {corpus_dir} a synthetic corpus?)")
    log = ReadLog()
    clips, queries = read_clips_csv(clips_csv, log)
    step_videos = read_crosstask(base / "crosstask", log) if (base / "crosstask").exists() else []
    needed = [c.video_id for c in clips] + [sv.video_id for sv in step_videos]
    present, missing = split_present(needed, index_videos(base / "videos"))
    return EvalDataset(
        name=name,
        kind="synthetic",
        source=str(base),
        video_dir=str(base / "videos"),
        log=log,
        videos=present,
        missing=missing,
        clips=clips,
        queries=queries,
        step_videos=step_videos,
        localisation="crosstask" if step_videos else None,
    )
