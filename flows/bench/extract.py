"""``mmcaps bench extract``: extraction speed against the naive reference recipe, measured in one run.

Synthetic videos (lavfi ``testsrc`` + a sine tone, H.264/AAC) are extracted three ways:

- naive reference: fp32, contiguous tensors, each stream decoded completely into memory first, then the network
  run over it (what the HowTo100M extractor does, minus the GPU);
- ours fp32 and ours bf16: :class:`pipeline.extract.Extractor` (streamed decoding overlapped with compute,
  channels-last, bf16 autocast for the second).

Speeds are seconds of video per wall second, per extractor (its stream's decode + network time) and end to end
(2D + 3D + audio + text). The table also gives the speed-up over the naive recipe, the share of the wall time the
networks were busy, and the per-row cosine agreement of bf16 with fp32 features.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=int, default=2, help="number of synthetic videos (default 2)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each video in seconds (default 4)")
    parser.add_argument("--size", default="320x240", help="frame size WxH of the synthetic videos")
    parser.add_argument("--cache-dir", default=None, help="cache for calibrated random backbones")
    parser.add_argument("--json", default=None, help="also write the results as JSON here")


def _make_videos(folder: Path, n: int, seconds: float, size: str) -> list[Path]:
    from pipeline.extract.ffmpeg import ffmpeg_exe

    paths = []
    for i in range(n):
        path = folder / f"bench-{i}.mp4"
        subprocess.run(
            [ffmpeg_exe(), "-nostdin", "-v", "error", "-y",
             "-f", "lavfi", "-i", f"testsrc=size={size}:rate=25:duration={seconds}",
             "-f", "lavfi", "-i", f"sine=frequency={300 + 100 * i}:sample_rate=44100:duration={seconds}",
             "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
            check=True, timeout=120,
        )  # fmt: skip
        paths.append(path)
    return paths


def _naive(path: Path, nets: dict, recipe3d) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The reference recipe: decode each stream whole, then run the fp32 network over it in batches."""
    import librosa
    import scipy.signal.windows

    from pipeline.extract.backbones import IMAGENET_MEAN, IMAGENET_STD
    from pipeline.extract.ffmpeg import ffmpeg_exe, output_size, probe

    info = probe(path)
    times, out = {}, {}

    def decode(fps: float, size: int, crop: bool) -> np.ndarray:
        w, h = output_size(info.width, info.height, size)
        vf = f"fps={fps},scale={w}:{h}" + (
            f",crop={size}:{size}:{int((w - size) / 2)}:{int((h - size) / 2)}" if crop else ""
        )
        raw = subprocess.run(
            [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-vf", vf, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        return np.frombuffer(raw, np.uint8).reshape(-1, size if crop else h, size if crop else w, 3)

    t0 = time.perf_counter()
    video = torch.from_numpy(decode(1, 224, False).copy()).permute(0, 3, 1, 2).float() / 255.0
    video = (video - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        rows = [F.normalize(nets["rgb2d"](video[i : i + 16].contiguous()), dim=1) for i in range(0, len(video), 16)]
    out["rgb2d"] = torch.cat(rows).numpy()
    times["rgb2d"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    clip = torch.from_numpy(decode(recipe3d.fps, recipe3d.size, True).copy()).permute(0, 3, 1, 2).float()
    pad = (-len(clip)) % 16
    clip = torch.cat([clip, torch.zeros(pad, *clip.shape[1:])]) - torch.tensor(recipe3d.mean).view(1, 3, 1, 1)
    clip = clip.view(-1, 16, 3, recipe3d.size, recipe3d.size).transpose(1, 2)
    with torch.no_grad():
        rows = [F.normalize(nets["rgb3d"](clip[i : i + 4].contiguous()), dim=1) for i in range(0, len(clip), 4)]
    out["rgb3d"] = torch.cat(rows).numpy()
    times["rgb3d"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    raw = subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", "16000", "-f", "f32le", "pipe:"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    y = np.frombuffer(raw, np.float32).astype(np.float64)
    y = y - y.mean()
    y = np.append(y[0], y[1:] - 0.97 * y[:-1])
    spec = (
        np.abs(librosa.stft(y, n_fft=400, hop_length=160, window=scipy.signal.windows.hamming(400), pad_mode="reflect"))
        ** 2
    )
    mel = librosa.filters.mel(sr=16000, n_fft=400, n_mels=40, fmin=20) @ spec
    out["mel"] = librosa.power_to_db(mel, ref=np.max)
    times["audio"] = time.perf_counter() - t0
    return times, out


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float32), b.astype(np.float32)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def run(args: argparse.Namespace) -> int:
    from pipeline.extract import ExtractConfig, Extractor
    from pipeline.extract.backbones import build_2d, build_3d

    with tempfile.TemporaryDirectory(prefix="mmcaps-bench-extract-") as tmp:
        cache = args.cache_dir or str(Path(tmp) / "cache")
        videos = _make_videos(Path(tmp), args.videos, args.seconds, args.size)
        total_s = args.videos * args.seconds
        cfg = ExtractConfig()
        print(f"building backbones (random weights, calibrated once; cache {cache}) ...", flush=True)
        runs = {
            "ours-fp32": Extractor(cfg, cache_dir=cache),
            "ours-bf16": Extractor(cfg.with_updates({"precision": "bf16"}), cache_dir=cache),
        }
        nets = {
            "rgb2d": build_2d(cfg.rgb2d, seed=cfg.seed, cache_dir=cache).net.eval(),
            "rgb3d": build_3d(cfg.rgb3d, seed=cfg.seed, cache_dir=cache).net.eval(),
        }
        recipe3d = runs["ours-fp32"].recipe3d

        results: dict[str, dict[str, float]] = {}
        feats: dict[str, list] = {}
        # Warm-up (first-call kernel selection) on the first video, untimed.
        for ex in runs.values():
            ex.extract(videos[0], None, "warmup")
        _naive(videos[0], nets, recipe3d)

        t_all = time.perf_counter()
        agg = {"rgb2d": 0.0, "rgb3d": 0.0, "audio": 0.0}
        for v in videos:
            times, _ = _naive(v, nets, recipe3d)
            for k in agg:
                agg[k] += times[k]
        wall = time.perf_counter() - t_all
        results["naive-fp32"] = {
            **{k: total_s / agg[k] for k in agg},
            "end_to_end": total_s / wall,
            "busy": float("nan"),
        }

        for name, ex in runs.items():
            agg = {"rgb2d": 0.0, "rgb3d": 0.0, "audio": 0.0}
            wall = busy = 0.0
            feats[name] = []
            for v in videos:
                feats[name].append(ex.extract(v, None, v.stem))
                t = ex.last_timing
                wall += t["wall"]
                busy += t["rgb2d"] + t["rgb3d"]  # seconds inside the networks
                agg["rgb2d"] += t["rgb2d"] + t["wait2d"]  # the stream's share: network + waiting for frames
                agg["rgb3d"] += t["rgb3d"] + t["wait3d"]
                agg["audio"] += t["audio"]
            results[name] = {
                **{k: total_s / max(agg[k], 1e-9) for k in agg},
                "end_to_end": total_s / wall,
                "busy": busy / wall,
            }

    agree = {}
    for stream in ("rgb2d", "rgb3d"):
        cos = np.concatenate(
            [
                _cosines(getattr(a, stream), getattr(b, stream))
                for a, b in zip(feats["ours-fp32"], feats["ours-bf16"], strict=True)
            ]
        )
        agree[stream] = {"min": float(cos.min()), "mean": float(cos.mean())}

    naive = results["naive-fp32"]
    print(
        f"\n{args.videos} synthetic videos x {args.seconds:g} s ({args.size}), device {runs['ours-fp32'].device}, torch threads {torch.get_num_threads()}"
    )
    print("seconds of video per wall second (higher is better); x = speed-up over the naive fp32 recipe")
    header = (
        f"{'run':<12}"
        + "".join(f"{c:>18}" for c in ("2D ResNet-152", "3D ResNeXt-101", "audio log-mel", "end to end"))
        + f"{'nets busy':>11}"
    )
    print(header)
    for name, r in results.items():
        cells = "".join(f"{r[k]:>9.2f} ({r[k] / naive[k]:>4.1f}x)" for k in ("rgb2d", "rgb3d", "audio", "end_to_end"))
        busy = "-" if np.isnan(r["busy"]) else f"{100 * r['busy']:.0f}%"
        print(f"{name:<12}{cells}{busy:>11}")
    print(
        "bf16 vs fp32 cosine per row: "
        + ", ".join(f"{k} min {v['min']:.4f} mean {v['mean']:.4f}" for k, v in agree.items())
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"speeds": results, "bf16_agreement": agree}, indent=2), encoding="utf-8")
    return 0
