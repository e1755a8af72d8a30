"""``mmcaps bench extract``: extraction speed against the naive reference recipe, measured in one run.

Synthetic videos (lavfi ``testsrc2`` at 640×360, 30 fps — a common narrated-video size — plus a sine tone,
H.264/AAC) are extracted four ways:

- naive reference: fp32, contiguous tensors, each stream decoded completely into memory first, then the network
  run over it (what the HowTo100M extractor does, minus the GPU);
- ours fp32, ours bf16, ours bf16 compiled: :class:`pipeline.extract.Extractor` (streamed decoding overlapped with
  compute, BatchNorm folded, channels-last; bf16 weights; ``compile=True`` for the last).

Speeds are seconds of video per wall second, per extractor (its stream's decode + network time) and end to end
(2D + 3D + audio + text). The table also gives the speed-up over the naive recipe, the share of the wall time the
networks were busy, the one-off warm-up (first video: kernel selection, and graph compilation for the compiled
run), and the per-row cosine agreement of bf16 (and compiled bf16) with fp32 features.

``--memory`` measures the other target instead: peak resident memory of extracting a short and a long video
(default 2 and 20 minutes), each in a fresh process, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flows.commands._common import add_set_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=int, default=2, help="number of synthetic videos (default 2)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each video in seconds (default 30)")
    parser.add_argument("--size", default="640x360", help="frame size WxH of the synthetic videos (default 640x360)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled bf16 run")
    parser.add_argument("--cache-dir", default=None, help="cache for calibrated random backbones")
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="measure peak memory of a short vs a long video instead (see --memory-seconds)",
    )
    parser.add_argument(
        "--memory-seconds",
        type=float,
        nargs=2,
        default=(120.0, 1200.0),
        metavar=("SHORT", "LONG"),
        help="video lengths for --memory (default 120 1200)",
    )
    add_set_option(parser, "ExtractConfig override for our runs and --memory (e.g. --set precision=bf16)")


def _make_video(path: Path, seconds: float, size: str, tone_hz: int = 440) -> Path:
    from pipeline.extract.ffmpeg import ffmpeg_exe

    subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency={tone_hz}:sample_rate=44100:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True, timeout=max(120.0, seconds),
    )  # fmt: skip
    return path


def _make_videos(folder: Path, n: int, seconds: float, size: str) -> list[Path]:
    return [_make_video(folder / f"bench-{i}.mp4", seconds, size, 300 + 100 * i) for i in range(n)]


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


def _cache_dir(args: argparse.Namespace, tmp: str) -> str:
    return args.cache_dir or os.environ.get("MMCAPS_CACHE") or str(Path(tmp) / "cache")


def _base_config(args: argparse.Namespace):
    from model.config import parse_set_option
    from pipeline.extract import ExtractConfig

    return ExtractConfig().with_updates(parse_set_option(args.overrides))


def run(args: argparse.Namespace) -> int:
    if args.memory:
        return _run_memory(args)
    from pipeline.extract import Extractor
    from pipeline.extract.backbones import build_2d, build_3d

    with tempfile.TemporaryDirectory(prefix="mmcaps-bench-extract-") as tmp:
        cache = _cache_dir(args, tmp)
        videos = _make_videos(Path(tmp), args.videos, args.seconds, args.size)
        total_s = args.videos * args.seconds
        cfg = _base_config(args)
        print(f"building backbones (random weights, calibrated once; cache {cache}) ...", flush=True)
        configs = {
            "ours-fp32": cfg.with_updates({"precision": "fp32", "compile": False}),
            "ours-bf16": cfg.with_updates({"precision": "bf16", "compile": False}),
        }
        if not args.no_compile:
            configs["ours-bf16-compiled"] = cfg.with_updates({"precision": "bf16", "compile": True})
        runs = {name: Extractor(c, cache_dir=cache) for name, c in configs.items()}
        nets = {
            "rgb2d": build_2d(cfg.rgb2d, seed=cfg.seed, cache_dir=cache).net.eval(),
            "rgb3d": build_3d(cfg.rgb3d, seed=cfg.seed, cache_dir=cache).net.eval(),
        }
        recipe3d = runs["ours-fp32"].recipe3d

        results: dict[str, dict[str, float]] = {}
        feats: dict[str, list] = {}
        # Warm-up (first-call kernel selection; graph compilation for the compiled run) on the first video, timed
        # apart: a one-off cost per process, reported beside the steady speeds.
        warmup: dict[str, float] = {}
        for name, ex in runs.items():
            t0 = time.perf_counter()
            ex.extract(videos[0], None, "warmup")
            warmup[name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        _naive(videos[0], nets, recipe3d)
        warmup["naive-fp32"] = time.perf_counter() - t0

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
            "warmup_s": warmup["naive-fp32"],
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
                "warmup_s": warmup[name],
            }
            if name.endswith("compiled"):
                results[name]["compiled"] = float(ex.net2d.compiled and ex.net3d.compiled)

    agree: dict[str, dict[str, float]] = {}
    for name in feats:
        if name == "ours-fp32":
            continue
        for stream in ("rgb2d", "rgb3d"):
            cos = np.concatenate(
                [
                    _cosines(getattr(a, stream), getattr(b, stream))
                    for a, b in zip(feats["ours-fp32"], feats[name], strict=True)
                ]
            )
            agree[f"{name}/{stream}"] = {"min": float(cos.min()), "mean": float(cos.mean())}

    naive = results["naive-fp32"]
    print(
        f"\n{args.videos} synthetic videos x {args.seconds:g} s ({args.size}), device {runs['ours-fp32'].device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print("seconds of video per wall second (higher is better); x = speed-up over the naive fp32 recipe")
    header = (
        f"{'run':<19}"
        + "".join(f"{c:>18}" for c in ("2D ResNet-152", "3D ResNeXt-101", "audio log-mel", "end to end"))
        + f"{'nets busy':>11}{'warm-up':>10}"
    )
    print(header)
    for name, r in results.items():
        cells = "".join(f"{r[k]:>9.2f} ({r[k] / naive[k]:>4.1f}x)" for k in ("rgb2d", "rgb3d", "audio", "end_to_end"))
        busy = "-" if np.isnan(r["busy"]) else f"{100 * r['busy']:.0f}%"
        print(f"{name:<19}{cells}{busy:>11}{r['warmup_s']:>9.1f}s")
    print(
        "ours: per-stream columns are each stream's network time plus its waits for frames; audio runs in a thread "
        "beside the networks, so its column is that thread's wall time while sharing the CPU"
    )
    if results.get("ours-bf16-compiled", {}).get("compiled") == 0.0:
        print("note: compilation failed, the compiled run ran eagerly (see the warning above)")
    print("cosine per row against ours-fp32 features:")
    for key, v in agree.items():
        print(f"  {key:<28} min {v['min']:.4f}  mean {v['mean']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"speeds": results, "agreement": agree}, indent=2), encoding="utf-8")
    return 0


# -- peak memory: a short vs a long video, each in a fresh process -------------------------------------------------
def _status_mib(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _memory_worker(video: str, cfg_json: str, cache: str) -> None:
    """Child process: build the extractor, extract ``video``, print one JSON line of resident memory (MiB).

    The high-water mark is reset after the backbones are built (``/proc/self/clear_refs``), so ``peak_mib`` is the
    process's peak during the extraction itself: backbones, frames in flight, audio, features.
    """
    from pipeline.extract import ExtractConfig, Extractor

    ex = Extractor(ExtractConfig.model_validate_json(cfg_json), cache_dir=cache)
    built = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")  # reset VmHWM to the current RSS
    feats = ex.extract(Path(video), None, "memory")
    out = {
        "built_mib": built,
        "peak_mib": _status_mib("VmHWM"),
        "wall_s": ex.last_timing["wall"],
        "rows": {"rgb2d": len(feats.rgb2d), "rgb3d": len(feats.rgb3d), "mel": int(feats.mel.shape[1])},
    }
    print("MEMORY " + json.dumps(out), flush=True)


def _run_memory(args: argparse.Namespace) -> int:
    cfg = _base_config(args)
    short, long = args.memory_seconds
    figures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mmcaps-bench-memory-") as tmp:
        cache = _cache_dir(args, tmp)
        for label, seconds in (("short", short), ("long", long)):
            print(f"making a {seconds:g} s video ({args.size}) ...", flush=True)
            video = _make_video(Path(tmp) / f"{label}.mp4", seconds, args.size)
            code = (
                "import sys; from flows.bench.extract import _memory_worker; "
                "_memory_worker(sys.argv[1], sys.argv[2], sys.argv[3])"
            )
            proc = subprocess.run(
                [sys.executable, "-c", code, str(video), cfg.model_dump_json(), cache],
                capture_output=True,
                text=True,
                cwd=str(Path(__file__).resolve().parents[2]),
            )
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY ")]
            if proc.returncode != 0 or not lines:
                print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
                raise RuntimeError(f"memory worker for the {seconds:g} s video failed (exit {proc.returncode})")
            figures[label] = {"seconds": seconds, **json.loads(lines[-1][len("MEMORY ") :])}
    s, lg = figures["short"], figures["long"]
    print(f"\npeak resident memory while extracting one video (precision {cfg.precision}, compile {cfg.compile})")
    print(f"{'video':<10}{'length':>10}{'backbones':>12}{'peak':>10}{'peak - backbones':>18}{'wall':>9}")
    for label, f in figures.items():
        print(
            f"{label:<10}{f['seconds']:>9g}s{f['built_mib']:>9.0f} MiB{f['peak_mib']:>6.0f} MiB"
            f"{f['peak_mib'] - f['built_mib']:>14.0f} MiB{f['wall_s']:>8.0f}s"
        )
    ratio = lg["peak_mib"] / s["peak_mib"]
    print(f"peak ratio long/short: {ratio:.2f}x (target <= 1.5x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"memory": figures, "ratio": ratio}, indent=2), encoding="utf-8")
    return 0
