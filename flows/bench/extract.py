"""``mmcaps bench extract``: extraction speed against the naive reference recipe, measured in one run.

Synthetic videos (lavfi ``testsrc2`` at 640×360, 30 fps — a common narrated-video size — plus a sine tone,
H.264/AAC) are extracted four ways:

- naive reference: fp32, contiguous tensors, each stream decoded completely into memory first, then the network
  run over it (what the HowTo100M extractor does, minus the GPU);
- ours fp32, fp32 compiled, bf16, bf16 compiled: :class:`pipeline.extract.Extractor` (streamed decoding overlapped
  with compute, BatchNorm folded, channels-last; bf16 weights; ``compile=True`` for the compiled rows). The bf16 rows
  run only where the CPU has native bf16 (AVX-512 BF16 or AMX, :mod:`pipeline.hardware`); elsewhere bf16 is emulated
  and 2-80x slower than fp32, so they are listed as skipped unless ``--emulated`` asks for them.

Speeds are seconds of video per wall second, per extractor (its stream's decode + network time) and end to end
(2D + 3D + audio + text). The table also gives the speed-up over the naive recipe, the share of the wall time the
networks were busy, the one-off warm-up (first video: kernel selection, and graph compilation for the compiled
run), the per-row cosine agreement of every run's features with the naive recipe's, and each network's achieved
GFLOP/s (its MACs from torch's FLOP counter × inputs, over the time spent inside it) as a share of the machine's
compute limit: the larger of the ISA's FMA peak at the clock read (cores × FMA units × lanes × 2 × GHz) and the best
of a GEMM sweep over shapes, libraries (BLAS matmul, oneDNN 1x1 convolution) and thread settings, measured in the
same run (:func:`pipeline.hardware.peak_sweep`). On a CPU where fp32 is compute-bound, nearness to that limit is the
figure of merit, not a multiple of the naive recipe. (A single 2048³ matmul is no limit: a network was once reported
at 172 % of it.)

``--memory`` measures the other target instead: peak resident memory of extracting a short and a long video
(default 2 and 20 minutes), each in a fresh process, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from flows.commands._common import add_set_option, parse_set_option
from pipeline.extract import ExtractConfig, Extractor
from pipeline.extract.backbones import build_2d, build_3d
from pipeline.extract.ffmpeg import ffmpeg_exe, frame_shape, output_size, probe
from pipeline.extract.recipes import IMAGENET_MEAN, IMAGENET_STD
from pipeline.hardware import PeakSweep, cpu_capabilities, peak_sweep, resolve_precision


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=int, default=2, help="number of synthetic videos (default 2)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each video in seconds (default 30)")
    parser.add_argument("--size", default="640x360", help="frame size WxH of the synthetic videos (default 640x360)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled runs")
    parser.add_argument(
        "--emulated",
        action="store_true",
        help="also run the bf16 rows on a CPU that only emulates bf16 (minutes per second of video there)",
    )
    parser.add_argument(
        "--sweep-budget",
        type=float,
        default=15.0,
        help="seconds after which the GEMM sweep starts no new GEMM (default 15: ~5 s suffice on a quiet 2-core "
        "machine)",
    )
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
    import librosa  # noqa: PLC0415  deferred: librosa
    import scipy.signal.windows  # noqa: PLC0415  deferred: scipy

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


def _base_config(args: argparse.Namespace) -> ExtractConfig:
    return ExtractConfig().with_updates(parse_set_option(args.overrides))


# Our runs: name → (precision, compile). bf16 rows run only where bf16 is native, unless --emulated.
OUR_RUNS = {
    "ours-fp32": ("fp32", False),
    "ours-fp32-compiled": ("fp32", True),
    "ours-bf16": ("bf16", False),
    "ours-bf16-compiled": ("bf16", True),
}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def network_macs(net: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """Multiply-accumulates of one forward pass of ``net`` on one input of ``shape`` (torch's FLOP counter / 2)."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(torch.zeros(shape))
    return counter.get_total_flops() / 2


def choose_runs(args: argparse.Namespace, native_bf16: bool) -> tuple[dict[str, tuple[str, bool]], list[str]]:
    """The runs to make and the ones left out with why (bf16 where it is only emulated, compiled with --no-compile)."""
    runs, skipped = {}, []
    for name, (precision, compiled) in OUR_RUNS.items():
        if compiled and args.no_compile:
            continue
        if precision == "bf16" and not native_bf16 and not args.emulated:
            skipped.append(f"{name} (bf16 is emulated on this CPU: --emulated runs it anyway)")
            continue
        runs[name] = (precision, compiled)
    return runs, skipped


def run(args: argparse.Namespace) -> int:
    if args.memory:
        return _run_memory(args)
    caps = cpu_capabilities()
    native = resolve_precision("auto", "cpu").precision == "bf16"
    chosen, skipped = choose_runs(args, native)
    with tempfile.TemporaryDirectory(prefix="mmcaps-bench-extract-") as tmp:
        bench = _prepare(args, tmp, chosen, caps)
        warmup = _warm_up(bench)
        results: dict[str, dict[str, float]] = {}
        results["naive-fp32"], naive_feats = _time_naive(bench, warmup["naive-fp32"])
        feats: dict[str, list] = {}
        for name, ex in bench.extractors.items():
            results[name], feats[name] = _time_ours(bench, ex, warmup[name], chosen[name])
    agree = _agreement(feats, naive_feats)
    _print_speeds(args, caps, results, skipped)
    _print_gflops(results, bench.macs, bench.peaks)
    print("cosine per row against the naive fp32 recipe's features:")
    for key, v in agree.items():
        print(f"  {key:<30} min {v['min']:.4f}  mean {v['mean']:.4f}")
    if args.json:
        figures = {
            "speeds": results,
            "agreement": agree,
            "matmul_gflops": {p: sweep.best_gflops for p, sweep in bench.peaks.items()},  # the best GEMM of the sweep
            "peak": {p: sweep.record() for p, sweep in bench.peaks.items()},
            "macs": bench.macs,
            "cpu": {"model": cpu_model(), "capability": caps.aten, "describe": caps.describe(), "native_bf16": native},
            "skipped": skipped,
        }
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


@dataclass
class _Bench:
    """What every timed run shares: the videos, the extractors and reference networks, and the compute figures."""

    videos: list[Path]
    total_s: float  # seconds of video, all videos together
    extractors: dict[str, Extractor]  # our runs, by name (OUR_RUNS)
    nets: dict[str, torch.nn.Module]  # the naive recipe's fp32 networks: rgb2d, rgb3d
    recipe3d: Any  # the 3D network's input recipe (fps, size, frames, mean)
    macs: dict[str, float]  # multiply-accumulates per input of each network
    peaks: dict[str, PeakSweep]  # the compute limit per precision: FMA peak and GEMM sweep, measured in this run


def _prepare(args: argparse.Namespace, tmp: str, chosen: dict[str, tuple[str, bool]], caps: Any) -> _Bench:
    """Make the videos, build our extractors and the naive networks, count MACs and measure the matmul peak."""
    cache = _cache_dir(args, tmp)
    videos = _make_videos(Path(tmp), args.videos, args.seconds, args.size)
    cfg = _base_config(args)
    print(f"CPU {cpu_model()}: {caps.describe()}; torch threads {torch.get_num_threads()}", flush=True)
    print(f"building backbones (random weights, calibrated once; cache {cache}) ...", flush=True)
    extractors = {
        name: Extractor(cfg.with_updates({"precision": p, "compile": c}), device="cpu", cache_dir=cache)
        for name, (p, c) in chosen.items()
    }
    nets = {
        "rgb2d": build_2d(cfg.rgb2d, seed=cfg.seed, cache_dir=cache).net.eval(),
        "rgb3d": build_3d(cfg.rgb3d, seed=cfg.seed, cache_dir=cache).net.eval(),
    }
    recipe3d = extractors["ours-fp32"].recipe3d
    h2, w2 = frame_shape(probe(videos[0]), cfg.rgb2d.size, crop=False)
    macs = {
        "rgb2d": network_macs(nets["rgb2d"], (1, 3, h2, w2)),
        "rgb3d": network_macs(nets["rgb3d"], (1, 3, recipe3d.frames, recipe3d.size, recipe3d.size)),
    }
    print("measuring the compute limit (GEMM sweep) ...", flush=True)
    peaks = {"fp32": peak_sweep("fp32", budget_s=args.sweep_budget)}
    if any(p == "bf16" for p, _ in chosen.values()):
        peaks["bf16"] = peak_sweep("bf16", budget_s=args.sweep_budget)
    return _Bench(videos, args.videos * args.seconds, extractors, nets, recipe3d, macs, peaks)


def _warm_up(bench: _Bench) -> dict[str, float]:
    """Seconds of each run's first video (first-call kernel selection; graph compilation for the compiled runs),
    timed apart: a one-off cost per process, reported beside the steady speeds."""
    warmup: dict[str, float] = {}
    for name, ex in bench.extractors.items():
        t0 = time.perf_counter()
        ex.extract(bench.videos[0], None, "warmup")
        warmup[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    _naive(bench.videos[0], bench.nets, bench.recipe3d)
    warmup["naive-fp32"] = time.perf_counter() - t0
    return warmup


def _time_naive(bench: _Bench, warmup_s: float) -> tuple[dict[str, float], list[dict[str, np.ndarray]]]:
    """The naive recipe's speeds (seconds of video per second) and its features of every video."""
    t_all = time.perf_counter()
    agg = {"rgb2d": 0.0, "rgb3d": 0.0, "audio": 0.0}
    naive_feats = []
    for v in bench.videos:
        times, out = _naive(v, bench.nets, bench.recipe3d)
        naive_feats.append(out)
        for k in agg:
            agg[k] += times[k]
    wall = time.perf_counter() - t_all
    result = {
        **{k: bench.total_s / agg[k] for k in agg},
        "end_to_end": bench.total_s / wall,
        "busy": float("nan"),
        "warmup_s": warmup_s,
        # The naive per-stream times include decoding the whole stream first: no network-only figure.
        "gflops_rgb2d": float("nan"),
        "gflops_rgb3d": float("nan"),
    }
    return result, naive_feats


def _time_ours(
    bench: _Bench, ex: Extractor, warmup_s: float, run: tuple[str, bool]
) -> tuple[dict[str, float], list[Any]]:
    """One of our runs (``run``: precision, compiled): its speeds, busy share and GFLOP/s, and its features."""
    precision, compiled = run
    agg = {"rgb2d": 0.0, "rgb3d": 0.0, "audio": 0.0}
    net_s = {"rgb2d": 0.0, "rgb3d": 0.0}
    rows = {"rgb2d": 0, "rgb3d": 0}
    wall = 0.0
    feats = []
    for v in bench.videos:
        f = ex.extract(v, None, v.stem)
        feats.append(f)
        t = ex.last_timing
        wall += t["wall"]
        for stream, wait in (("rgb2d", "wait2d"), ("rgb3d", "wait3d")):
            net_s[stream] += t[stream]  # seconds inside the network
            agg[stream] += t[stream] + t[wait]  # the stream's share: network + waiting for frames
            rows[stream] += len(getattr(f, stream))
        agg["audio"] += t["audio"]
    result = {
        **{k: bench.total_s / max(agg[k], 1e-9) for k in agg},
        "end_to_end": bench.total_s / wall,
        "busy": (net_s["rgb2d"] + net_s["rgb3d"]) / wall,
        "warmup_s": warmup_s,
        **{f"gflops_{k}": 2 * bench.macs[k] * rows[k] / max(net_s[k], 1e-9) / 1e9 for k in net_s},
        "precision": precision,
    }
    if compiled:
        result["compiled"] = float(ex.net2d.compiled and ex.net3d.compiled)
    return result, feats


def _agreement(feats: dict[str, list], naive_feats: list[dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Agreement of every run with the naive fp32 recipe, per feature row: min and mean cosine per stream."""
    agree: dict[str, dict[str, float]] = {}
    for name in feats:
        for stream in ("rgb2d", "rgb3d"):
            cos = np.concatenate(
                [_cosines(getattr(a, stream), n[stream]) for a, n in zip(feats[name], naive_feats, strict=True)]
            )
            agree[f"{name}/{stream}"] = {"min": float(cos.min()), "mean": float(cos.mean())}
    return agree


def _print_speeds(
    args: argparse.Namespace, caps: Any, results: dict[str, dict[str, float]], skipped: list[str]
) -> None:
    naive = results["naive-fp32"]
    print(f"\n{args.videos} synthetic videos x {args.seconds:g} s ({args.size}), device cpu")
    print(f"CPU {cpu_model()}: torch capability {caps.aten}; {caps.describe()}")
    print("seconds of video per wall second (higher is better); x = speed-up over the naive fp32 recipe")
    header = (
        f"{'run':<20}"
        + "".join(f"{c:>18}" for c in ("2D ResNet-152", "3D ResNeXt-101", "audio log-mel", "end to end"))
        + f"{'nets busy':>11}{'warm-up':>10}"
    )
    print(header)
    for name, r in results.items():
        cells = "".join(f"{r[k]:>9.2f} ({r[k] / naive[k]:>4.1f}x)" for k in ("rgb2d", "rgb3d", "audio", "end_to_end"))
        busy = "-" if np.isnan(r["busy"]) else f"{100 * r['busy']:.0f}%"
        print(f"{name:<20}{cells}{busy:>11}{r['warmup_s']:>9.1f}s")
    for line in skipped:
        print(f"{'':<20}skipped: {line}")
    print(
        "ours: per-stream columns are each stream's network time plus its waits for frames; audio runs in a thread "
        "beside the networks, so its column is that thread's wall time while sharing the CPU"
    )


def _print_gflops(results: dict[str, dict[str, float]], macs: dict[str, float], peaks: dict[str, PeakSweep]) -> None:
    print(
        f"\nnetworks' achieved GFLOP/s (MACs x 2 per input from torch's FLOP counter: 2D {macs['rgb2d'] / 1e9:.2f} G "
        f"per frame, 3D {macs['rgb3d'] / 1e9:.2f} G per window; over the time inside each network) against the "
        "compute limit, the larger of the ISA's FMA peak and the best GEMM of a sweep measured in this run:"
    )
    for precision, sweep in peaks.items():
        best = max(sweep.rows, key=lambda row: row["gflops_all_threads"])
        fma = "unknown" if sweep.fma_gflops is None else f"{sweep.fma_gflops:.0f} GFLOP/s"
        print(
            f"  {precision}: limit {sweep.limit_gflops:.0f} GFLOP/s; FMA peak {fma} ({sweep.fma_note}); best GEMM "
            f"{sweep.best_gflops:.0f} GFLOP/s ({best['gemm']}" + (" x threads" if best["threads"] == 1 else "") + ")"
        )
    for name, r in results.items():
        if name == "naive-fp32":
            continue
        sweep = peaks[str(r["precision"])]
        cells = "".join(
            f"   {k[3:].upper()} {r[f'gflops_{k}']:>6.1f} GFLOP/s ({100 * sweep.fraction(r[f'gflops_{k}']):>3.0f}% of "
            "the limit)"
            for k in ("rgb2d", "rgb3d")
        )
        print(f"{name:<20}{cells}")
    if any(r.get("compiled") == 0.0 for r in results.values()):
        print("note: compilation failed, a compiled run ran eagerly (see the warning above)")


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
