"""``mmcaps bench train``: clips per second of the loader alone, the model step alone, and both together.

The data are random features in the real shard format (written to a temporary folder): videos of
``--seconds`` with a caption every 3 s, so the loader does the real work (tar reading, npy decoding, clip
pooling, batching). The ratio loader / model shows whether data loading keeps up (target: at least 5x).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time

import numpy as np

from flows.commands._common import add_set_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="demo", help="demo (default), paper, paper-c64-d16 or a YAML file")
    add_set_option(parser, "override a config field")
    parser.add_argument("--videos", type=int, default=None, help="synthetic videos (default: 4 batches' worth)")
    parser.add_argument("--seconds", type=float, default=None, help="video length (default 12 for demo, 120 otherwise)")
    parser.add_argument("--steps", type=int, default=5, help="timed model steps (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--batches", type=int, default=None, help="timed loader batches (default: all but the first)")


def write_random_shards(folder: str, n_videos: int, seconds: float, seed: int = 0) -> list[str]:
    """Random float16 features of ``n_videos`` videos of ``seconds`` (captions every 3 s) as tar shards."""
    from storage.sample import Captions, VideoFeatures
    from storage.shards import ShardWriter
    from storage.workspace import Workspace

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


def run(args: argparse.Namespace) -> int:
    import torch

    from flows.commands._common import parse_set_option
    from model import build_model
    from pipeline.train import TrainConfig
    from pipeline.train.loader import LoaderSpec, epoch_batches
    from pipeline.train.loop import _pick_device, forward_loss

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig.from_preset(args.preset, parse_set_option(args.overrides))
    seconds = args.seconds or (12.0 if args.preset == "demo" else 120.0)
    n_videos = args.videos or cfg.batch_size * 4
    steps_available = n_videos // cfg.batch_size
    device = _pick_device(cfg)
    print(
        f"bench train: preset {args.preset}, {cfg.batch_size} videos x {cfg.n_pair} clips = {cfg.clips_per_step} "
        f"clips a step, {cfg.num_workers} loader worker(s), device {device}, torch threads {torch.get_num_threads()}"
    )
    with tempfile.TemporaryDirectory(prefix="mmcaps-bench-train-") as tmp:
        t0 = time.perf_counter()
        shards = write_random_shards(tmp, n_videos, seconds)
        print(
            f"  data: {n_videos} videos of {seconds:.0f} s in {len(shards)} shards ({time.perf_counter() - t0:.1f} s to write)"
        )
        spec = LoaderSpec.for_config(cfg, shards, epoch=0)

        # Loader alone: the first batch pays worker start-up and buffer filling; time the rest.
        batches = args.batches or steps_available - 1
        it = epoch_batches(spec, batches + 1, pin_memory=device.type == "cuda")
        first = next(it)
        t0 = time.perf_counter()
        n = sum(1 for _ in it)
        loader_rate = n * cfg.clips_per_step / (time.perf_counter() - t0)
        print(f"  loader alone: {loader_rate:10.1f} clips/s ({n} batches)")

        # Model step alone: one batch already in memory, forward + backward + Adam.
        torch.manual_seed(cfg.seed)
        net = build_model(cfg.model).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)

        def step(batch: dict) -> None:
            loss, _ = forward_loss(net, batch, cfg, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step(first)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(first)
        _sync(device)
        model_rate = args.steps * cfg.clips_per_step / (time.perf_counter() - t0)
        print(f"  model step alone: {model_rate:10.1f} clips/s ({args.steps} steps)")

        # Both: the loader feeding the model, as in training.
        n_both = min(args.steps, steps_available - 1)
        it = epoch_batches(spec, n_both + 1, pin_memory=device.type == "cuda")
        step(next(it))
        _sync(device)
        t0 = time.perf_counter()
        for batch in itertools.islice(it, n_both):
            step(batch)
        _sync(device)
        both_rate = n_both * cfg.clips_per_step / (time.perf_counter() - t0)
        print(f"  loader + model: {both_rate:10.1f} clips/s ({n_both} steps)")
    ratio = loader_rate / model_rate
    verdict = "keeps up" if ratio >= 5 else "below the 5x target"
    print(f"  loader / model = {ratio:.1f}x ({verdict}); both / model = {both_rate / model_rate:.2f}")
    return 0


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
