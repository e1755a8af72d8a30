"""Zero-shot evaluation (DESIGN section 7): benchmark adapters, retrieval and localisation metrics, reports.

from pipeline.evaluate import EvalConfig, EvalSpec, evaluate
results = evaluate("run-id", [EvalSpec.parse("synthetic=/data/corpus")], Workspace(), EvalConfig())
results["synthetic"]["retrieval"]["video"]["R@1"]
"""

from pipeline.evaluate.config import EvalConfig, EvalSpec
from pipeline.evaluate.dataset import AnnotationError, EvalDataset
from pipeline.evaluate.metrics import TIE_RULE, retrieval_metrics, retrieval_ranks
from pipeline.evaluate.run import evaluate, extract, prepare, report, run_extract_config, score

__all__ = [
    "TIE_RULE",
    "AnnotationError",
    "EvalConfig",
    "EvalDataset",
    "EvalSpec",
    "evaluate",
    "extract",
    "prepare",
    "report",
    "retrieval_metrics",
    "retrieval_ranks",
    "run_extract_config",
    "score",
]
