"""Dataset adapters: each reads one benchmark's own files plus a folder of raw videos (one file each), or, for the
released evaluation features (``*-features``), one file of pooled clip features (:mod:`.released`).

``load_spec(spec, cfg)`` dispatches on ``spec.kind`` and raises on an unknown kind, and with a one-line
:class:`~pipeline.evaluate.dataset.NoCandidateError` when none of the benchmark's videos is in its folder.
"""

from __future__ import annotations

from pipeline.evaluate.adapters.clips_csv import load_clips_csv
from pipeline.evaluate.adapters.crosstask import load_crosstask
from pipeline.evaluate.adapters.mining import load_mining
from pipeline.evaluate.adapters.msrvtt import load_msrvtt
from pipeline.evaluate.adapters.released import load_msrvtt_features, load_youcook2_features
from pipeline.evaluate.adapters.synthetic import load_synthetic
from pipeline.evaluate.adapters.youcook2 import load_youcook2
from pipeline.evaluate.config import EvalConfig, EvalSpec
from pipeline.evaluate.dataset import EvalDataset, require_candidates

KINDS = ("youcook2", "msrvtt", "crosstask", "mining", "csv", "synthetic", "youcook2-features", "msrvtt-features")


def load_spec(spec: EvalSpec, cfg: EvalConfig | None = None) -> EvalDataset:
    """The :class:`EvalDataset` a spec names (annotations parsed, videos located, missing ones listed)."""
    ds = _load(spec, cfg or EvalConfig())
    require_candidates(ds)
    return ds


def _load(spec: EvalSpec, cfg: EvalConfig) -> EvalDataset:
    name = spec.dataset_name
    if spec.kind == "synthetic":
        return load_synthetic(spec.annotations, name=name)
    if spec.kind == "youcook2-features":
        return load_youcook2_features(spec.features or spec.annotations, name=name)
    if spec.kind == "msrvtt-features":
        features = spec.features or spec.annotations
        return load_msrvtt_features(features, spec.annotations if spec.annotations != features else None, name=name)
    if spec.videos is None:
        raise ValueError(f"{spec.kind} needs a video folder")
    if spec.kind == "youcook2":
        return load_youcook2(spec.annotations, spec.videos, name=name, subset=cfg.youcook2_subset)
    if spec.kind == "msrvtt":
        return load_msrvtt(spec.annotations, spec.videos, name=name)
    if spec.kind == "crosstask":
        return load_crosstask(spec.annotations, spec.videos, name=name)
    if spec.kind == "mining":
        return load_mining(
            spec.annotations,
            spec.videos,
            name=name,
            dictionary=cfg.mining_dictionary,
            ground_truth=cfg.mining_ground_truth,
        )
    if spec.kind == "csv":
        return load_clips_csv(spec.annotations, spec.videos, name=name)
    raise ValueError(f"unknown evaluation kind {spec.kind!r} (known: {', '.join(KINDS)})")


__all__ = ["KINDS", "load_spec"]
