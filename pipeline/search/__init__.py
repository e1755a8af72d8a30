"""Search a trained model (pipeline/search/README.md): a clip index of a dataset under the run folder, exact and approximate
top-k, and the clips that activate each capsule.

from pipeline.search import IndexConfig, Searcher, build_index
build_index(RunFolder(Workspace(), "run-id"), "my-videos", IndexConfig(window=8, stride=4))
Searcher.open(None, "run-id", "my-videos").search(["put the egg in the pan"], k=10)

Names are imported on first use: the config alone loads no torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    **dict.fromkeys(("IndexConfig", "MODALITIES"), "pipeline.search.config"),
    **dict.fromkeys(("ClipSpan", "plan_clips"), "pipeline.search.clips"),
    **dict.fromkeys(("exact_top_k", "recall_at_k"), "pipeline.search.exact"),
    **dict.fromkeys(("ApproxIndex", "build_ivf"), "pipeline.search.approx"),
    **dict.fromkeys(("top_clips_per_capsule",), "pipeline.search.capsules"),
    **dict.fromkeys(("IndexFolder",), "pipeline.search.layout"),
    **dict.fromkeys(
        ("IndexPlan", "IndexSummary", "build_index", "embed_videos", "merge_index", "plan_index"),
        "pipeline.search.build",
    ),
    **dict.fromkeys(("QueryEncoder", "load_model"), "pipeline.search.encode"),
    **dict.fromkeys(("Hit", "QueryResult", "SearchIndex", "Searcher"), "pipeline.search.search"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline.search' has no attribute {name!r}")
