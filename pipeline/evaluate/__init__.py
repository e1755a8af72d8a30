"""Zero-shot evaluation (pipeline/evaluate/README.md): benchmark adapters, retrieval and localisation metrics, reports.

from pipeline.evaluate import EvalConfig, EvalSpec, evaluate
results = evaluate("run-id", [EvalSpec.parse("synthetic=/data/corpus")], Workspace(), EvalConfig())
results["synthetic"]["retrieval"]["video"]["R@1"]

Names are imported on first use: the configs alone load no torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    **dict.fromkeys(("EvalConfig", "EvalSpec"), "pipeline.evaluate.config"),
    **dict.fromkeys(("AnnotationError", "EvalDataset"), "pipeline.evaluate.dataset"),
    **dict.fromkeys(("TIE_RULE", "retrieval_metrics", "retrieval_ranks"), "pipeline.evaluate.metrics"),
    **dict.fromkeys(
        ("evaluate", "extract", "prepare", "report", "run_extract_config", "score"), "pipeline.evaluate.run"
    ),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline.evaluate' has no attribute {name!r}")
