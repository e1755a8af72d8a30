"""Ingest: a source of videos, or of per-video feature files, → a dataset (feature store entries, shards, manifest).

One driver (:func:`~pipeline.ingest.driver.ingest`) serves both sources on any executor: plan → the pending jobs in
batches on the executor passed in → shards and manifest rows every ``max_count`` videos → summary. ``videos``
(:class:`Videos`, :func:`run_extract`) and ``importers`` (:class:`~pipeline.ingest.importers.FeatureFiles`,
:func:`~pipeline.ingest.importers.run_import`) are the two sources; ``publish`` writes; ``records`` holds the small
types they pass. ``storage.dataset.open_dataset`` reads the result. ``sources.py`` discovers videos and pairs
captions.
"""

from pipeline.ingest.driver import Executor, IngestSource, InlineExecutor, PoolExecutor, Worker, ingest
from pipeline.ingest.publish import compose_sample, recover, summarise, write_dataset, write_extract_config
from pipeline.ingest.records import ExtractJob, ExtractRecord, IngestPlan, IngestSummary, failed_record
from pipeline.ingest.sources import VIDEO_EXTENSIONS, VideoSource, discover_videos, load_sources, video_id_for
from pipeline.ingest.videos import Videos, VideoWorker, extract_one, plan_extract, run_extract

__all__ = [
    "VIDEO_EXTENSIONS",
    "Executor",
    "ExtractJob",
    "ExtractRecord",
    "IngestPlan",
    "IngestSource",
    "IngestSummary",
    "InlineExecutor",
    "PoolExecutor",
    "VideoSource",
    "VideoWorker",
    "Videos",
    "Worker",
    "compose_sample",
    "discover_videos",
    "extract_one",
    "failed_record",
    "ingest",
    "load_sources",
    "plan_extract",
    "recover",
    "run_extract",
    "summarise",
    "video_id_for",
    "write_dataset",
    "write_extract_config",
]
