"""The incremental extraction engine: a source of videos → an extracted dataset (WebDataset shards + manifest).

Steps (each a plain function, so the Prefect flow can map and cache them): :func:`recover`, :func:`plan_extract`,
:func:`extract_one`, :func:`write_dataset`; :func:`run_extract` runs them in order. ``storage.dataset.open_dataset``
reads the result. See ``engine.py`` for the durability argument and ``sources.py`` for discovery and caption pairing.
"""

from pipeline.ingest.engine import (
    ExtractJob,
    ExtractPlan,
    ExtractRecord,
    ExtractSummary,
    extract_one,
    plan_extract,
    recover,
    run_extract,
    staging_dir,
    write_dataset,
    write_extract_config,
)
from pipeline.ingest.sources import VIDEO_EXTENSIONS, VideoSource, discover_videos, load_sources, video_id_for

__all__ = [
    "VIDEO_EXTENSIONS",
    "ExtractJob",
    "ExtractPlan",
    "ExtractRecord",
    "ExtractSummary",
    "VideoSource",
    "discover_videos",
    "extract_one",
    "load_sources",
    "plan_extract",
    "recover",
    "run_extract",
    "staging_dir",
    "video_id_for",
    "write_dataset",
    "write_extract_config",
]
