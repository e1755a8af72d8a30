"""The run's video streams against its datasets: which row streams a dataset's samples hold and their dims (read from
its first sample), a one-line error for a stream a dataset lacks, and ``model.video_dim`` from those dims.

``model.video_streams`` names the streams whose pooled rows, concatenated, are the video input (the paper's
``rgb2d, rgb3d`` by default; ``[clip]``, ``[s3d]``, ``[clip, s3d]`` on datasets extracted with those extra streams).
The video branch's input size is the sum of their dims as the dataset stores them, never a constant: a run on the
paper's streams keeps ``video_dim`` 4096 (and its fingerprint), a run on ``[clip]`` (ViT-B/32) gets 512. A
``video_dim`` left at the field's default (4096, the paper's width) takes the dataset's; any other value must equal
it (a run's own config.yaml records the resolved value, so a resumed run passes), else one line names both numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from model.config import CapsuleConfig
from storage.counting import url_to_fs
from storage.sample import VideoFeatures
from storage.shards import iter_shard

# model.video_dim's default: "unset", the dataset's width is taken (a config cannot tell a default from a 4096 typed
# by hand once it has been through with_updates; 4096 is also what the paper's streams give).
UNSET_VIDEO_DIM = CapsuleConfig.model_fields["video_dim"].default


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
    has), when two datasets store a stream at different dims, or when ``model.video_dim`` was set (to anything but
    its default, :data:`UNSET_VIDEO_DIM`) and differs from the streams' width (naming both numbers, the datasets and
    the streams' dims).
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
    asked = cfg.model.video_dim
    if asked == width:
        return cfg
    if asked != UNSET_VIDEO_DIM:
        names = ", ".join(d.name for d in data)
        parts = " + ".join(f"{s} {dims[s]}" for s in want)
        raise ValueError(
            f"model.video_dim is {asked} but dataset{'s' if len(data) > 1 else ''} {names} "
            f"{'give' if len(data) > 1 else 'gives'} {width} for model.video_streams {', '.join(want)} "
            f"({parts}); set model.video_dim to {width} or leave it unset to take the dataset's"
        )
    return cfg.with_updates({"model.video_dim": width})


__all__ = ["UNSET_VIDEO_DIM", "resolve_video_streams", "shard_streams"]
