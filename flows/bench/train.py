"""``mmcaps bench train``: loader throughput against the number of loader workers, where a worker's time goes, and
the model step alone and fed by the loader.

The data are random features in the real shard format (written to a temporary folder): videos of ``--seconds``
with a caption every 3 s, so the loader does the real work (tar reading, npy decoding, clip construction with the
preset's ``n_pair``, ``min_time`` and ``audio_frames``, batching). Three parts, each optional:

* ``--workers N [N ...]``: clips per second of the loader alone (``epoch_batches``, as training runs it) for each
  worker count, after a first batch that pays worker start-up; 0 runs the stream in this process;
* ``--profile``: one process streams the shards and times each stage per video, twice: as the reference recipe
  does it (``clips_to_arrays``: pooling functions clip by clip, float32 audio cast to float16, per-video arrays
  concatenated into the batch) and as the loader does it (``write_clips`` into a preallocated shared-memory
  batch). Shuffling, the resume skip and the hand-over between processes are not in it (``--workers`` has them);
* the model step (skip with ``--no-model``): forward, MMS loss, backward and Adam on one batch, then the loader
  feeding the model as in training; the ratio loader / model shows whether loading keeps up (target: 5x).

Figures depend on the CPU and on what else runs: the header prints the CPU model, torch's CPU capability and the
load average at the start and the end.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from flows.commands._common import add_set_option, parse_set_option
from model import build_model
from pipeline.train import TrainConfig
from pipeline.train.clips import ClipBuffers, clips_to_arrays, sample_clips, write_clips
from pipeline.train.loader import LoaderSpec, _has_captions, derive_seed, epoch_batches
from pipeline.train.loop import _pick_device, forward_loss
from storage.sample import Captions, VideoFeatures
from storage.shards import ShardWriter, iter_shard
from storage.workspace import Workspace


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="demo", help="demo (default), paper, paper-c64-d16 or a YAML file")
    add_set_option(parser, "override a config field")
    parser.add_argument("--videos", type=int, default=None, help="synthetic videos (default: 4 batches' worth)")
    parser.add_argument("--seconds", type=float, default=None, help="video length (default 12 for demo, 120 otherwise)")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="loader worker counts to measure, e.g. --workers 0 1 2 4 (default: the config's num_workers)",
    )
    parser.add_argument("--profile", action="store_true", help="time each loader stage per video, reference vs ours")
    parser.add_argument("--no-model", action="store_true", help="skip the model step (loader figures only)")
    parser.add_argument("--steps", type=int, default=5, help="timed model steps (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--batches", type=int, default=None, help="timed loader batches (default: all but the first)")


def write_random_shards(folder: str, n_videos: int, seconds: float, seed: int = 0) -> list[str]:
    """Random float16 features of ``n_videos`` videos of ``seconds`` (captions every 3 s) as tar shards."""
    rng = np.random.default_rng(seed)
    ws = Workspace(folder)
    writer = ShardWriter(ws.join("shards"), "bench", max_count=16, workspace=ws)
    n_caps = max(1, int(seconds // 3))
    for v in range(n_videos):
        feats = VideoFeatures(
            video_id=f"bench-{v:05d}",
            rgb2d=rng.random((int(seconds), 2048), dtype=np.float32).astype(np.float16),
            rgb3d=rng.random((int(seconds * 1.5), 2048), dtype=np.float32).astype(np.float16),
            mel=rng.standard_normal((40, int(seconds * 100)), dtype=np.float32).astype(np.float16),
            w2v=rng.standard_normal((n_caps, 300), dtype=np.float32).astype(np.float16),
            captions=Captions(
                start=[3.0 * i for i in range(n_caps)],
                end=[3.0 * i + 2.5 for i in range(n_caps)],
                text=[f"caption {i}" for i in range(n_caps)],
            ),
            meta={"video_id": f"bench-{v:05d}"},
        )
        writer.write(feats.to_sample())
    return writer.close()


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def loader_rate(cfg: Any, shards: list[str], workers: int, batches: int, pin_memory: bool) -> tuple[float, int]:
    """(clips/s, batches timed) of ``epoch_batches`` with ``workers`` loader workers; the first batch is not timed."""
    spec = LoaderSpec.for_config(cfg.with_updates({"num_workers": workers}), shards, epoch=0)
    it = epoch_batches(spec, batches + 1, pin_memory=pin_memory)
    next(it)
    t0 = time.perf_counter()
    n = sum(1 for _ in it)
    return n * cfg.clips_per_step / (time.perf_counter() - t0), n


def profile_stages(cfg: Any, shards: list[str]) -> dict[str, dict[str, float]]:
    """Seconds per stage, summed over every video of ``shards``, for the reference path and the loader's path.

    Returns ``{"reference": {stage: s}, "loader": {stage: s}, "videos": {"n": count}}``.
    """

    def timed(t: collections.Counter, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args)
        t[stage] += time.perf_counter() - t0
        return out

    def raws(t: collections.Counter) -> Iterator[dict]:
        for url in shards:
            it = iter_shard(url)
            while (raw := timed(t, "tar read (storage.shards)", next, it, None)) is not None:
                yield raw

    def decoded(t: collections.Counter) -> Iterator[tuple[VideoFeatures, list]]:
        for raw in raws(t):
            timed(t, "captions.json (has captions?)", _has_captions, raw)
            feats = timed(t, "npy decode (from_sample)", VideoFeatures.from_sample, raw)
            rng = np.random.default_rng(derive_seed("clips", cfg.seed, 0, 0, feats.key))
            clips = timed(t, "clip spans (sample_clips)", sample_clips, feats.captions, cfg.n_pair, cfg.min_time, rng)
            yield feats, clips

    def reference() -> collections.Counter:
        t: collections.Counter = collections.Counter()
        items: list[dict] = []
        for feats, clips in decoded(t):
            arrays = timed(t, "pool clips into arrays", clips_to_arrays, feats, clips, cfg.audio_frames)
            audio = timed(t, "audio float32 -> float16", arrays.audio.astype, np.float16)
            items.append({"key": feats.key, **vars(arrays), "audio": audio})
            if len(items) == cfg.batch_size:
                timed(t, "batch: concatenate / allocate", _concatenate, items)
                items = []
        return t

    def loader() -> collections.Counter:
        t: collections.Counter = collections.Counter()
        buffers, row = None, 0
        for feats, clips in decoded(t):
            if buffers is None:
                buffers = timed(
                    t, "batch: concatenate / allocate", _shared_buffers, cfg.clips_per_step, cfg.audio_frames
                )
            timed(t, "pool clips into arrays", write_clips, feats, clips, buffers, row)
            row += cfg.n_pair
            if row == cfg.clips_per_step:
                buffers, row = None, 0
        return t

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a loader worker
    try:
        reference()  # a first pass warms the page cache and the allocator; the second is timed
        ref = reference()
        ours = loader()
    finally:
        torch.set_num_threads(threads)
    n_videos = sum(1 for url in shards for _ in iter_shard(url))
    return {"reference": dict(ref), "loader": dict(ours), "videos": {"n": n_videos}}


def _concatenate(items: list[dict]) -> dict[str, Any]:
    """The reference collation: per-video arrays concatenated into the batch's tensors."""
    names = ("video", "text", "audio", "audio_lengths", "has_audio")
    return {n: torch.from_numpy(np.concatenate([it[n] for it in items])) for n in names}


def _shared_buffers(clips: int, audio_frames: int) -> Any:
    """The loader's batch as a worker allocates it (in shared memory)."""
    return ClipBuffers.allocate(clips, audio_frames, shared=True)


def format_profile(prof: dict[str, dict[str, float]], n_pair: int) -> str:
    n = prof["videos"]["n"]
    stages = list(dict.fromkeys([*prof["reference"], *prof["loader"]]))
    lines = ["| stage | reference (ms/video) | loader (ms/video) |", "|---|---:|---:|"]
    for stage in stages:
        ref, ours = prof["reference"].get(stage), prof["loader"].get(stage)
        cell = [f"{v * 1e3 / n:.3f}" if v is not None else "-" for v in (ref, ours)]
        lines.append(f"| {stage} | {cell[0]} | {cell[1]} |")
    totals = [sum(prof[k].values()) for k in ("reference", "loader")]
    lines.append(f"| **total** | {totals[0] * 1e3 / n:.3f} | {totals[1] * 1e3 / n:.3f} |")
    rates = [n * n_pair / tot for tot in totals]
    lines.append(f"| **clips/s (one process)** | {rates[0]:.0f} | {rates[1]:.0f} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig.from_preset(args.preset, parse_set_option(args.overrides))
    seconds = args.seconds or (12.0 if args.preset == "demo" else 120.0)
    n_videos = args.videos or cfg.batch_size * 4
    steps_available = n_videos // cfg.batch_size
    if steps_available < 2:
        raise ValueError(f"--videos {n_videos} gives {steps_available} batch(es) of {cfg.batch_size}; need at least 2")
    device = _pick_device(cfg)
    pin = device.type == "cuda"
    print(
        f"bench train: preset {args.preset}, {cfg.batch_size} videos x {cfg.n_pair} clips = {cfg.clips_per_step} "
        f"clips a step (min_time {cfg.min_time} s, {cfg.audio_frames} mel frames), device {device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"  cpu: {cpu_model()}, {os.cpu_count()} logical cores, torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}; load average at the start {_load()}"
    )
    with tempfile.TemporaryDirectory(prefix="mmcaps-bench-train-") as tmp:
        t0 = time.perf_counter()
        shards = write_random_shards(tmp, n_videos, seconds)
        print(
            f"  data: {n_videos} videos of {seconds:.0f} s (a caption every 3 s) in {len(shards)} shards "
            f"({time.perf_counter() - t0:.1f} s to write)"
        )
        batches = args.batches or steps_available - 1
        if args.profile:
            print("\nwhere one loader worker's time goes (one process, every video once, per video):\n")
            print(format_profile(profile_stages(cfg, shards), cfg.n_pair))
        worker_counts = args.workers if args.workers is not None else [cfg.num_workers]
        loader_best = _loader_table(cfg, shards, worker_counts, batches, pin)
        if not args.no_model:
            _model_rates(cfg, shards, device, pin, args.steps, steps_available - 1, loader_best)
    print(f"\nload average at the end {_load()}")
    return 0


def _loader_table(cfg: TrainConfig, shards: list[str], worker_counts: list[int], batches: int, pin: bool) -> float:
    """Print the loader's clips/s for each worker count; returns the best."""
    print(f"\nloader alone ({batches} timed batches of {cfg.clips_per_step} clips each):\n")
    print("| workers | clips/s | clips/s per worker |\n|---:|---:|---:|")
    loader_best = 0.0
    for workers in worker_counts:
        rate, _ = loader_rate(cfg, shards, workers, batches, pin)
        loader_best = max(loader_best, rate)
        per = f"{rate / workers:.0f}" if workers else f"{rate:.0f} (in process)"
        print(f"| {workers} | {rate:.0f} | {per} |", flush=True)
    return loader_best


def train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict, cfg: TrainConfig, device: Any) -> None:
    """Forward, MMS loss, backward and an Adam step on one batch (as training runs it)."""
    loss, _ = forward_loss(net, batch, cfg, device)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _model_rates(
    cfg: TrainConfig, shards: list[str], device: Any, pin: bool, steps: int, max_fed_steps: int, loader_best: float
) -> None:
    """Print the model step's clips/s alone (``steps`` steps on one batch) and fed by the loader (at most
    ``max_fed_steps``), and the ratio of the best loader rate to the model's."""
    torch.manual_seed(cfg.seed)
    net = build_model(cfg.model).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    spec = LoaderSpec.for_config(cfg, shards, epoch=0)
    first = next(epoch_batches(spec, 1))
    train_step(net, opt, first, cfg, device)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(net, opt, first, cfg, device)
    _sync(device)
    model_rate = steps * cfg.clips_per_step / (time.perf_counter() - t0)
    print(f"\nmodel step alone: {model_rate:10.1f} clips/s ({steps} steps)")

    n_both = min(steps, max_fed_steps)
    it = epoch_batches(spec, n_both + 1, pin_memory=pin)
    train_step(net, opt, next(it), cfg, device)
    _sync(device)
    t0 = time.perf_counter()
    for batch in itertools.islice(it, n_both):
        train_step(net, opt, batch, cfg, device)
    _sync(device)
    both_rate = n_both * cfg.clips_per_step / (time.perf_counter() - t0)
    print(f"loader ({cfg.num_workers} workers) + model: {both_rate:10.1f} clips/s ({n_both} steps)")
    ratio = loader_best / model_rate
    verdict = "keeps up" if ratio >= 5 else "below the 5x target"
    print(f"best loader / model = {ratio:.1f}x ({verdict}); both / model = {both_rate / model_rate:.2f}")


def _sync(device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
