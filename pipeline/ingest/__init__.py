"""The incremental extraction engine: a source of videos → an extracted dataset (WebDataset shards + manifest).

Steps (each a plain function, so the Prefect flow can map and cache them): :func:`recover`, :func:`plan_extract`,
:func:`extract_one`, :func:`write_dataset`; :func:`run_extract` runs them in order. :func:`open_dataset` reads the
result. See ``engine.py`` for the durability argument and ``sources.py`` for discovery and caption pairing.
"""

from pipeline.ingest.dataset import FINGERPRINT_COLUMNS, Dataset, open_dataset
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
    unreferenced_shards,
    write_dataset,
    write_extract_config,
)
from pipeline.ingest.sources import VIDEO_EXTENSIONS, VideoSource, discover_videos, load_sources, video_id_for

__all__ = [
    "FINGERPRINT_COLUMNS",
    "VIDEO_EXTENSIONS",
    "Dataset",
    "ExtractJob",
    "ExtractPlan",
    "ExtractRecord",
    "ExtractSummary",
    "VideoSource",
    "discover_videos",
    "extract_one",
    "load_sources",
    "open_dataset",
    "plan_extract",
    "recover",
    "run_extract",
    "staging_dir",
    "unreferenced_shards",
    "video_id_for",
    "write_dataset",
    "write_extract_config",
]
