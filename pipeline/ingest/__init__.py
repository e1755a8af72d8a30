"""The incremental extraction engine: a source of videos → a dataset (feature store entries, shards, manifest).

Steps (each a plain function; the Prefect flow wraps each in a task): :func:`plan_extract`, :func:`pending_jobs`,
:func:`extract_one`, :func:`write_dataset`, :func:`summarise`; :func:`run_extract` runs them in order.
``storage.dataset.open_dataset`` reads the result. See ``engine.py`` for the durability argument and
``sources.py`` for discovery and caption pairing.
"""

from pipeline.ingest.engine import (
    ExtractJob,
    ExtractPlan,
    ExtractRecord,
    ExtractSummary,
    compose_sample,
    extract_one,
    failed_record,
    pending_jobs,
    plan_extract,
    record_is_usable,
    recover,
    run_extract,
    summarise,
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
    "compose_sample",
    "discover_videos",
    "extract_one",
    "failed_record",
    "load_sources",
    "pending_jobs",
    "plan_extract",
    "record_is_usable",
    "recover",
    "run_extract",
    "summarise",
    "video_id_for",
    "write_dataset",
    "write_extract_config",
]
