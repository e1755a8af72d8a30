"""The training loader: a webdataset pipeline from per-video shard samples to batches of clips.

Per rank and per loader worker, one epoch is the stream

    shards (permuted per seed, epoch and pass; split by node, then by worker)
      → raw samples (tar members; videos without captions dropped by reading captions.json only)
      → sample shuffle buffer (seeded per seed, epoch, rank, worker)
      → skip (resume: the samples of batches an interrupted run already consumed, before any decoding)
      → decode (VideoFeatures.from_sample), draw n_pair clips (rng seeded per seed, epoch, pass, video key) and
        write them into the rows of the batch (clips.write_clips): B videos × n_pair clips, flattened

The stream cycles over its shards (pass 0, 1, ...) so that every rank yields exactly ``steps_per_epoch``
batches, a number read from the manifests (videos with captions), never from counting shards. Everything
is seeded from (seed, epoch, ...), so the batch at position k of an epoch is the same in every run with the
same inputs and the same number of ranks and loader workers; that is what makes resume exact.

Why worker ids are rotated: torch's DataLoader takes batches from its workers round-robin, worker 0 first.
With infinite streams, global batch g of an epoch is batch g // W of the stream that worker g % W plays.
A run resumed after k batches starts its DataLoader at worker 0 again, so worker w plays stream
(w + k) % W and skips that stream's batches below k — the order then continues exactly.

All stages are module-level functions bound with functools.partial, so the pipeline pickles into workers.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from pipeline.train.clips import ClipBuffers, batch_dict, sample_clips, write_clips
from storage.counting import url_to_fs
from storage.sample import VideoFeatures
from storage.shards import iter_shard


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts; stable across processes (unlike ``hash()``)."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class LoaderSpec:
    """Everything one epoch's stream depends on (picklable: sent to each loader worker)."""

    shards: tuple[str, ...]
    seed: int
    epoch: int
    batch_size: int  # videos per batch
    n_pair: int  # clips per video
    min_time: float  # seconds a clip spans at least
    audio_frames: int  # mel columns per clip
    shuffle_buffer: int  # raw samples held by the shuffle buffer
    num_workers: int = 0  # loader worker processes (0: the stream runs in the training process)
    skip_batches: int = 0  # batches of this epoch already consumed (resume)
    video_streams: tuple[str, ...] = ("rgb2d", "rgb3d")  # the model's video input, pooled in this order
    video_dim: int = 4096  # the sum of those streams' dims

    @classmethod
    def for_config(cls, cfg: Any, shards: Sequence[str], epoch: int, skip_batches: int = 0) -> LoaderSpec:
        """The spec of one epoch of a :class:`~pipeline.runs.config.TrainConfig`'s stream over ``shards``."""
        return cls(
            shards=tuple(shards),
            seed=cfg.seed,
            epoch=epoch,
            batch_size=cfg.batch_size,
            n_pair=cfg.n_pair,
            min_time=cfg.min_time,
            audio_frames=cfg.audio_frames,
            shuffle_buffer=cfg.shuffle_buffer,
            num_workers=cfg.num_workers,
            skip_batches=skip_batches,
            video_streams=tuple(cfg.model.video_streams),
            video_dim=cfg.model.video_dim,
        )


def shard_order(shards: Sequence[str], seed: int, epoch: int, pass_index: int) -> list[str]:
    """The shard permutation of one pass of one epoch (identical in every rank and worker)."""
    order = list(shards)
    random.Random(derive_seed("shards", seed, epoch, pass_index)).shuffle(order)
    return order


def _stream_identity(spec: LoaderSpec) -> tuple[int, int, int, int]:
    """(rank, world_size, stream, streams): this process's node and the rotated loader-worker stream."""
    rank, world_size, worker, num_workers = wds.utils.pytorch_worker_info()
    workers = max(1, spec.num_workers)
    if num_workers != workers:
        raise RuntimeError(f"loader expected {workers} worker(s), torch reports {num_workers}")
    stream = (worker + spec.skip_batches) % workers
    return rank, world_size, stream, workers


def _skip_count(spec: LoaderSpec, stream: int, workers: int) -> int:
    """Batches of ``stream`` among the first ``skip_batches`` global batches (round-robin over streams)."""
    return len(range(stream, spec.skip_batches, workers))


def _has_captions(raw: dict) -> bool:
    """Whether a raw sample has at least one caption, reading only its captions.json member."""
    try:
        captions = json.loads(raw["captions.json"])
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"{raw.get('__url__', '?')}: sample {raw.get('__key__')!r} has no valid captions.json"
        ) from exc
    return len(captions.get("start", [])) > 0


def unit_samples(spec: LoaderSpec) -> Iterator[dict]:
    """Raw samples with captions of this rank's and worker's share of the shards, pass after pass (endless).

    Shards are split by node (``wds.split_by_node``) and by the rotated worker stream. When there are fewer
    shards than rank × worker streams, every stream reads every shard and keeps every n-th sample instead.
    """
    rank, world_size, stream, workers = _stream_identity(spec)
    units, unit = world_size * workers, rank * workers + stream
    split_shards = len(spec.shards) >= units
    for pass_index in itertools.count():
        order = shard_order(spec.shards, spec.seed, spec.epoch, pass_index)
        if split_shards:
            mine = list(itertools.islice(wds.split_by_node(order), stream, None, workers))
        else:
            mine = order
        kept = 0
        position = 0
        for url in mine:
            # Each shard is streamed from where it lives (a path or an s3:// URL): a rank opens only its own shards.
            fs, path = url_to_fs(url)
            for raw in iter_shard(path, fs):
                raw["__url__"] = url
                position += 1
                if not split_shards and (position - 1) % units != unit:
                    continue
                if not _has_captions(raw):
                    continue
                raw["__pass__"] = pass_index
                kept += 1
                yield raw
        if kept == 0:
            raise ValueError(
                f"no video with captions in the shards of rank {rank}, loader stream {stream} "
                f"({len(mine)} of {len(spec.shards)} shards, e.g. {mine[:1]})"
            )


def shuffle_samples(src: Iterator[dict], spec: LoaderSpec) -> Iterator[dict]:
    """Shuffle each pass with a buffer of ``spec.shuffle_buffer`` samples, seeded per (seed, epoch, rank, stream)."""
    rank, _, stream, _ = _stream_identity(spec)
    if spec.shuffle_buffer <= 1:
        yield from src
        return
    rng = random.Random(derive_seed("buffer", spec.seed, spec.epoch, rank, stream))
    # The buffer is emptied at the end of each pass, so the first pass (the epoch, when shards split evenly)
    # yields each of its videos exactly once before any video repeats.
    for _, one_pass in itertools.groupby(src, key=_pass_of):
        yield from wds.shuffle(spec.shuffle_buffer, initial=spec.shuffle_buffer, rng=rng)(one_pass)


def _pass_of(raw: dict) -> int:
    return raw["__pass__"]


def skip_consumed(src: Iterator[dict], spec: LoaderSpec) -> Iterator[dict]:
    """Drop the raw samples of the batches this stream gave before a resume (no decoding)."""
    _, _, stream, workers = _stream_identity(spec)
    yield from itertools.islice(src, _skip_count(spec, stream, workers) * spec.batch_size, None)


def batch_clips(src: Iterator[dict], spec: LoaderSpec) -> Iterator[dict]:
    """Decode each video, draw its clips and write them into the current batch; yield every ``batch_size`` videos.

    A batch is the flat K = B·P clips of B videos (the P clips of one video adjacent): video [K,V] f32 (V = 4096
    for the paper's streams: the sum of ``video_streams``' dims),
    text [K,300] f32, audio [K,40,F] f16, audio_lengths Long[K], has_audio Bool[K], and ``keys`` (the B video
    keys). Clips are written in place into preallocated tensors (shared memory inside a loader worker): no
    per-video arrays, no concatenation, no copy into shared memory on the way to the training process. A
    trailing partial batch is dropped (the epoch length is counted in whole batches).
    """
    shared = torch.utils.data.get_worker_info() is not None
    buffers: ClipBuffers | None = None
    keys: list[str] = []
    for raw in src:
        feats = VideoFeatures.from_sample(raw, where=raw.get("__url__", "shard"))
        rng = np.random.default_rng(derive_seed("clips", spec.seed, spec.epoch, raw["__pass__"], feats.key))
        clips = sample_clips(feats.captions, spec.n_pair, spec.min_time, rng)
        if buffers is None:  # a fresh batch each time: the consumer may still hold the previous one
            buffers = ClipBuffers.allocate(
                spec.batch_size * spec.n_pair, spec.audio_frames, shared=shared, video_dim=spec.video_dim
            )
        write_clips(feats, clips, buffers, len(keys) * spec.n_pair, spec.video_streams)
        keys.append(feats.key)
        if len(keys) == spec.batch_size:
            yield batch_dict(buffers, keys)
            buffers, keys = None, []


def build_pipeline(spec: LoaderSpec) -> wds.DataPipeline:
    """The endless batch stream of one epoch for this rank (see the module docstring)."""
    return wds.DataPipeline(
        functools.partial(unit_samples, spec),
        functools.partial(shuffle_samples, spec=spec),
        functools.partial(skip_consumed, spec=spec),
        functools.partial(batch_clips, spec=spec),
    )


def epoch_batches(spec: LoaderSpec, steps: int, *, pin_memory: bool = False) -> Iterator[dict]:
    """The batches ``spec.skip_batches .. steps - 1`` of epoch ``spec.epoch`` (``steps`` per epoch per rank)."""
    remaining = steps - spec.skip_batches
    if remaining <= 0:
        return iter(())
    pipeline = build_pipeline(spec)
    if spec.num_workers == 0:
        return itertools.islice(iter(pipeline), remaining)
    loader = DataLoader(
        pipeline,
        batch_size=None,
        num_workers=spec.num_workers,
        pin_memory=pin_memory,
        # Own generator: creating worker seeds must not draw from the global torch RNG that dropout uses.
        generator=torch.Generator().manual_seed(derive_seed("workers", spec.seed, spec.epoch)),
        prefetch_factor=2,
    )
    return itertools.islice(iter(loader), remaining)


def count_clip_videos(manifest: object) -> int:
    """Videos with at least one caption (the ones that give clips) in a manifest table (status ok rows).

    Reads the ``n_captions`` column; a manifest without it counts every row.
    """
    names = list(getattr(manifest, "column_names", []))
    if "n_captions" not in names:
        return int(getattr(manifest, "num_rows", 0))
    values = manifest.column("n_captions").to_pylist()  # type: ignore[attr-defined]
    if "status" in names:
        status = manifest.column("status").to_pylist()  # type: ignore[attr-defined]
        values = [v for v, s in zip(values, status, strict=True) if s == "ok"]
    return sum(1 for v in values if v and v > 0)
