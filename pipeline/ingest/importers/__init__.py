"""Public per-video feature layouts in and out: ``mmcaps import`` and ``mmcaps export`` as plain Python.

from pipeline.ingest.importers import ImportConfig, VfeLayout, run_import, export_dataset
summary = run_import(VfeLayout("feature_2d", "feature_3d", listing="HowTo100M_v1.csv"), "howto",
                     ImportConfig(recipe={"text": {"word2vec": "GoogleNews-vectors-negative300.bin"}}),
                     Workspace(), captions="caption.json")
export_dataset(Workspace(), "howto", "out/", layout="vfe")

``config`` (what is imported, stream fingerprints), ``layouts`` (where each layout keeps its files), ``checks``
(reading and admitting one video's files), ``feature_files`` (the
source: plan, import one, ``run_import`` through the one ingest driver), ``export``.
"""

from pipeline.ingest.importers.checks import ImportCheckError
from pipeline.ingest.importers.config import ImportConfig
from pipeline.ingest.importers.export import ExportSummary, export_dataset
from pipeline.ingest.importers.feature_files import (
    FeatureFiles,
    FeatureFileWorker,
    ImportJob,
    import_one,
    plan_import,
    run_import,
    write_import_config,
)
from pipeline.ingest.importers.layouts import AvlnetLayout, ImportItem, VfeLayout, discover

__all__ = [
    "AvlnetLayout",
    "ExportSummary",
    "FeatureFileWorker",
    "FeatureFiles",
    "ImportCheckError",
    "ImportConfig",
    "ImportItem",
    "ImportJob",
    "VfeLayout",
    "discover",
    "export_dataset",
    "import_one",
    "plan_import",
    "run_import",
    "write_import_config",
]
