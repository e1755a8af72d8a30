"""The run's video streams against its datasets: which row streams a dataset's samples hold and their dims (read from
its first sample), a one-line error for a stream a dataset lacks, and ``model.video_dim`` from those dims.

``model.video_streams`` names the streams whose pooled rows, concatenated, are the video input (the paper's
``rgb2d, rgb3d`` by default; ``[clip]``, ``[s3d]``, ``[clip, s3d]`` on datasets extracted with those extra streams).
The video branch's input size is the sum of their dims as the dataset stores them, never a constant: a run on the
paper's streams keeps ``video_dim`` 4096 (and its fingerprint), a run on ``[clip]`` (ViT-B/32) gets 512.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage.counting import url_to_fs
from storage.sample import VideoFeatures
from storage.shards import iter_shard


def shard_streams(shards: Sequence[str]) -> dict[str, int]:
    """The row streams of a dataset's samples and their dims, ``{name: dim}`` (``rgb2d``, ``rgb3d``, then its extra
    streams), from its first sample: the samples of one extraction all hold the same streams. ``{}`` for no sample."""
    for url in shards:
        fs, path = url_to_fs(url)
        for raw in iter_shard(path, fs):
            feats = VideoFeatures.from_sample(raw, where=url)
            return {name: int(feats.stream(name).shape[1]) for name in feats.row_streams}
    return {}


def resolve_video_streams(cfg: Any, data: Sequence[Any]) -> Any:
    """``cfg`` (a :class:`~pipeline.runs.config.TrainConfig`) with ``model.video_dim`` the sum of its
    ``model.video_streams``' dims in ``data`` (:class:`~pipeline.train.loop.TrainData` items: ``name``, ``shards``).

    Raises ``ValueError`` in one line when a dataset lacks one of the streams (naming the dataset and the streams it
    has) or when two datasets store a stream at different dims.
    """
    want = tuple(cfg.model.video_streams)
    dims: dict[str, int] = {}
    for d in data:
        have = shard_streams(d.shards)
        if not have:
            continue  # no sample: training refuses an empty dataset by its manifest counts
        missing = [s for s in want if s not in have]
        if missing:
            raise ValueError(
                f"dataset {d.name} has no stream {', '.join(missing)} (model.video_streams: {', '.join(want)}); its "
                f"streams are {', '.join(have)}; extract it with --set streams.{missing[0]}.backbone=BACKBONE "
                f"(pipeline/extract/README.md) or choose video_streams among those"
            )
        for s in want:
            if dims.setdefault(s, have[s]) != have[s]:
                raise ValueError(f"stream {s} has {dims[s]} dims in one dataset and {have[s]} in dataset {d.name}")
    if not dims:
        return cfg
    width = sum(dims[s] for s in want)
    return cfg if cfg.model.video_dim == width else cfg.with_updates({"model.video_dim": width})


__all__ = ["resolve_video_streams", "shard_streams"]
