"""``mmcaps bench ingest``: the incremental engine's overhead — a no-change re-run over N videos, and a run that
adds one video to them (targets: no-change re-run under 10 s beyond start-up; adding one video costs that
video's extraction plus at most those 10 s).

The extractor is the real one (:class:`pipeline.extract.Extractor`, random backbones). Videos are copies of four
tiny generated clips (1 s, 64x48, H.264 + AAC), each with its own WebVTT file, so the initial run computes the
networks four times and every other video's visual and audio streams come from the feature store (its captions
are encoded). The added video is a new clip: one real extraction. Times are measured in-process (after imports),
best and median of ``--repeats`` no-change runs; the engine's share of adding a video is the run's time minus the
extraction's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from pipeline.extract import ExtractConfig, Extractor
from pipeline.extract.ffmpeg import ffmpeg_exe
from pipeline.ingest import run_extract
from storage.workspace import Workspace

TARGET_S = 10.0
VTT = "WEBVTT\n\n00:00:00.000 --> 00:00:00.500\nclip {i} first words\n\n00:00:00.500 --> 00:00:01.000\nmore words\n"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=int, default=200, help="videos in the dataset (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="no-change re-runs timed (default 3)")
    parser.add_argument("--workdir", default=None, help="folder for the videos and workspace (default: a temp dir)")
    parser.add_argument("--json", dest="json_out", default=None, help="also write the figures as JSON here")


def _make_clip(path: Path, pattern: str, freq: int) -> None:
    args = [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i"]
    args += [f"{pattern}=size=64x48:rate=10:duration=1", "-f", "lavfi", "-i", f"sine=frequency={freq}:duration=1"]
    args += ["-c:a", "aac", "-shortest", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(args, check=True, capture_output=True, timeout=60)


def _bench(work: Path, n_videos: int, repeats: int) -> dict[str, float | int | str]:
    clips = work / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    bases = []
    for i, (pattern, freq) in enumerate((("testsrc", 440), ("smptebars", 550), ("testsrc2", 660), ("rgbtestsrc", 770))):
        bases.append(clips / f"base{i}.mp4")
        _make_clip(bases[-1], pattern, freq)
    src = work / "videos"
    src.mkdir(exist_ok=True)
    for i in range(n_videos):
        shutil.copyfile(bases[i % len(bases)], src / f"video{i:05d}.mp4")
        (src / f"video{i:05d}.vtt").write_text(VTT.format(i=i), encoding="utf-8")
    ws = Workspace(work / "ws")
    ex = Extractor(ExtractConfig(), cache_dir=os.environ.get("MMCAPS_CACHE") or ws.cache_dir())

    t0 = time.perf_counter()
    first = run_extract(src, "bench", workspace=ws, extractor=ex)
    initial_s = time.perf_counter() - t0
    assert first.extracted == n_videos and not first.failed, str(first)

    nochange = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        again = run_extract(src, "bench", workspace=ws, extractor=ex)
        nochange.append(time.perf_counter() - t0)
        assert again.extracted == 0 and again.unchanged == n_videos, str(again)

    _make_clip(src / "zz-added.mp4", "testsrc", 880)
    (src / "zz-added.vtt").write_text(VTT.format(i="new"), encoding="utf-8")
    extraction_s: list[float] = []
    t0 = time.perf_counter()
    added = run_extract(
        src, "bench", workspace=ws, extractor=ex, progress=lambda d, n, r: extraction_s.append(r.elapsed_s)
    )
    add_s = time.perf_counter() - t0
    assert added.extracted == 1 and added.unchanged == n_videos, str(added)
    return {
        "videos": n_videos,
        "extractor": "Extractor (random backbones; 4 distinct clips, the rest from the feature store)",
        "initial_reused": first.reused,
        "initial_run_s": initial_s,
        "initial_per_video_s": initial_s / n_videos,
        "nochange_best_s": min(nochange),
        "nochange_median_s": statistics.median(nochange),
        "add_one_s": add_s,
        "add_one_extraction_s": sum(extraction_s),
        "add_one_overhead_s": add_s - sum(extraction_s),
        "target_s": TARGET_S,
    }


def run(args: argparse.Namespace) -> int:
    if args.videos < 1 or args.repeats < 1:
        raise ValueError("--videos and --repeats must be at least 1")
    if args.workdir:
        figures = _bench(Path(args.workdir), args.videos, args.repeats)
    else:
        with tempfile.TemporaryDirectory(prefix="mmcaps-bench-ingest-") as tmp:
            figures = _bench(Path(tmp), args.videos, args.repeats)
    n = figures["videos"]
    print(f"mmcaps bench ingest: {n} videos; extractor {figures['extractor']} — measures the engine's overhead")
    print(
        f"  initial run (extracts all)   {figures['initial_run_s']:7.2f} s  ({figures['initial_per_video_s']:.3f} s/video)"
    )
    print(
        f"  no-change re-run             {figures['nochange_best_s']:7.2f} s best, "
        f"{figures['nochange_median_s']:.2f} s median of {args.repeats}"
    )
    print(
        f"  add one video                {figures['add_one_s']:7.2f} s  = extraction {figures['add_one_extraction_s']:.2f} s"
        f" + engine {figures['add_one_overhead_s']:.2f} s"
    )
    ok_nochange = figures["nochange_best_s"] < TARGET_S
    ok_add = figures["add_one_overhead_s"] < TARGET_S
    print(f"  target: no-change < {TARGET_S:.0f} s: {'met' if ok_nochange else 'MISSED'}; "
          f"add-one overhead < {TARGET_S:.0f} s: {'met' if ok_add else 'MISSED'}")  # fmt: skip
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0
