"""``mmcaps bench ingest``: the incremental engine's overhead — a no-change re-run over N videos, and a run that
adds one video to them (targets: no-change re-run under 10 s beyond start-up; adding one video costs that
video's extraction plus at most those 10 s).

The extractor is the real one (:class:`pipeline.extract.Extractor`, random backbones). Videos are copies of four
tiny generated clips (1 s, 64x48, H.264 + AAC), each with its own WebVTT file, so the initial run computes the
networks four times and every other video's visual and audio streams come from the feature store (its captions
are encoded). The added video is a new clip: one real extraction. Times are measured in-process (after imports),
best and median of ``--repeats`` no-change runs; the engine's share of adding a video is the run's time minus the
extraction's.

``--workspace s3://bucket/prefix`` (any fsspec URL) runs the same steps on that workspace as well, in the same run,
and prints its requests per video, the no-change re-run's requests and seconds, and their ratio to the local
workspace's. Requests are the calls each run makes to the workspace's filesystem, counted by :mod:`storage.counting`
(each at least one HTTP request on object storage; a local workspace's renames go through ``os.replace`` and are
not counted).

Then "manifest append" (issue 23): appending 1000 manifest rows onto manifests of ``--manifest-rows`` rows (10 k and
100 k by default; 1 M on request), the current view, a compaction, and what the same append cost before the
parts layout (read, concatenate, rewrite the file and its current view). ``--manifest-only`` runs only that.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.extract import ExtractConfig, Extractor
from pipeline.extract.ffmpeg import ffmpeg_exe
from pipeline.ingest import run_extract
from storage.counting import RequestCounter, count_requests
from storage.manifest import MANIFEST_SCHEMA, Manifest, current_view, forget_part_keys
from storage.workspace import Workspace

TARGET_S = 10.0
VTT = "WEBVTT\n\n00:00:00.000 --> 00:00:00.500\nclip {i} first words\n\n00:00:00.500 --> 00:00:01.000\nmore words\n"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=int, default=200, help="videos in the dataset (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="no-change re-runs timed (default 3)")
    parser.add_argument("--workdir", default=None, help="folder for the videos and workspace (default: a temp dir)")
    parser.add_argument("--json", dest="json_out", default=None, help="also write the figures as JSON here")
    parser.add_argument(
        "--manifest-rows",
        default="10000,100000",
        help="manifest sizes that 1000-row appends are timed on, comma-separated (default 10000,100000; 1000000 on "
        "request; 0 skips the section)",
    )
    parser.add_argument("--append-rows", type=int, default=1000, help="rows per manifest append (default 1000)")
    parser.add_argument("--manifest-only", action="store_true", help="run only the manifest append section")
    parser.add_argument(
        "--workspace",
        default=None,
        metavar="URL",
        help="also run the engine section on this workspace (s3://bucket/prefix, any fsspec URL; its dataset 'bench' "
        "is written anew) and compare its requests and seconds with the local workspace's",
    )


def _make_clip(path: Path, pattern: str, freq: int) -> None:
    args = [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i"]
    args += [f"{pattern}=size=64x48:rate=10:duration=1", "-f", "lavfi", "-i", f"sine=frequency={freq}:duration=1"]
    args += ["-c:a", "aac", "-shortest", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(args, check=True, capture_output=True, timeout=60)


def _make_bases(work: Path) -> list[Path]:
    """The four distinct tiny clips every benchmark video is a copy of, and the clip the 'add one' step adds."""
    clips = work / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    bases = []
    patterns = (("testsrc", 440), ("smptebars", 550), ("testsrc2", 660), ("rgbtestsrc", 770), ("testsrc", 880))
    for i, (pattern, freq) in enumerate(patterns):
        bases.append(clips / f"base{i}.mp4")
        _make_clip(bases[-1], pattern, freq)
    return bases


def _make_videos(src: Path, bases: list[Path], n_videos: int) -> None:
    src.mkdir(parents=True, exist_ok=True)
    for i in range(n_videos):
        shutil.copyfile(bases[i % 4], src / f"video{i:05d}.mp4")
        (src / f"video{i:05d}.vtt").write_text(VTT.format(i=i), encoding="utf-8")


def _counted_extract(src: Path, root: str, ex: Extractor, **kwargs: Any) -> tuple[Any, float, RequestCounter]:
    """One ``run_extract`` on the workspace at ``root``: its summary, seconds and the workspace requests it made
    (every Workspace made inside the block counts: the driver's and its worker's)."""
    with count_requests(root) as counter:
        t0 = time.perf_counter()
        summary = run_extract(src, "bench", workspace=Workspace(root), extractor=ex, **kwargs)
        return summary, time.perf_counter() - t0, counter


def _bench(src: Path, bases: list[Path], root: str, ex: Extractor, n_videos: int, repeats: int) -> dict[str, Any]:
    """Initial run, ``repeats`` no-change re-runs and one added video on the workspace at ``root``: times and
    requests (calls to the workspace's filesystem, storage.counting)."""
    first, initial_s, initial_req = _counted_extract(src, root, ex)
    assert first.extracted == n_videos and not first.failed, str(first)
    nochange, nochange_req = [], initial_req
    for _ in range(repeats):
        again, seconds, nochange_req = _counted_extract(src, root, ex)
        nochange.append(seconds)
        assert again.extracted == 0 and again.unchanged == n_videos, str(again)

    shutil.copyfile(bases[4], src / "zz-added.mp4")
    (src / "zz-added.vtt").write_text(VTT.format(i="new"), encoding="utf-8")
    extraction_s: list[float] = []
    added, add_s, add_req = _counted_extract(src, root, ex, progress=lambda d, n, r: extraction_s.append(r.elapsed_s))
    assert added.extracted == 1 and added.unchanged == n_videos, str(added)
    return {
        "videos": n_videos,
        "workspace": root,
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
        "initial_requests": initial_req.total,
        "initial_requests_per_video": initial_req.total / n_videos,
        "initial_requests_by_kind": initial_req.counts(),
        "nochange_requests": nochange_req.total,
        "nochange_requests_by_kind": nochange_req.counts(),
        "add_one_requests": add_req.total,
    }


def _engine(work: Path, n_videos: int, repeats: int, remote: str | None) -> dict[str, Any]:
    """The engine's figures on a local workspace, and with ``remote`` (an fsspec URL) on it too in the same run."""
    taken = Workspace(remote) if remote else None
    if taken is not None and taken.exists(taken.dataset_dir("bench")):
        raise ValueError(f"{remote} already has a dataset 'bench': give the benchmark an unused prefix")
    bases = _make_bases(work)
    ex = Extractor(ExtractConfig(), cache_dir=os.environ.get("MMCAPS_CACHE") or str(work / "cache"))
    # The backbones' first use (loading, calibrating) happens here, untimed: every timed run then pays the same.
    _make_videos(work / "warm-up", bases[:1], 1)
    run_extract(work / "warm-up", "warm-up", workspace=Workspace(work / "warm-up-ws"), extractor=ex)
    _make_videos(work / "videos", bases, n_videos)
    figures = _bench(work / "videos", bases, str((work / "ws").resolve()), ex, n_videos, repeats)
    if remote:
        _make_videos(work / "videos-remote", bases, n_videos)
        far = _bench(work / "videos-remote", bases, remote.rstrip("/"), ex, n_videos, repeats)
        figures["remote"] = far
        figures["remote_vs_local"] = {
            "initial_requests": far["initial_requests"] / max(1, figures["initial_requests"]),
            "nochange_requests": far["nochange_requests"] / max(1, figures["nochange_requests"]),
            "nochange_s": far["nochange_best_s"] / figures["nochange_best_s"],
            "initial_s": far["initial_run_s"] / figures["initial_run_s"],
        }
    return figures


def _manifest_sizes(text: str) -> list[int]:
    sizes = [int(t) for t in text.replace(" ", "").split(",") if t]
    if any(n < 0 for n in sizes):
        raise ValueError(f"--manifest-rows must be sizes >= 0, got {text!r}")
    return [n for n in sizes if n > 0]


def run(args: argparse.Namespace) -> int:
    if args.videos < 1 or args.repeats < 1 or args.append_rows < 1:
        raise ValueError("--videos, --repeats and --append-rows must be at least 1")
    sizes = _manifest_sizes(args.manifest_rows)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mmcaps-bench-ingest-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        if not args.manifest_only:
            figures = _engine(work, args.videos, args.repeats, args.workspace)
            _print_engine(figures, args.repeats)
            if "remote" in figures:
                _print_remote(figures)
        if sizes:
            rows = [_bench_manifest(work / "manifest", n, args.append_rows, args.repeats) for n in sizes]
            _print_manifest(rows)
            figures["manifest_append"] = rows
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


def _print_engine(figures: dict[str, Any], repeats: int) -> None:
    n = figures["videos"]
    print(f"mmcaps bench ingest: {n} videos; extractor {figures['extractor']} — measures the engine's overhead")
    print(
        f"  initial run (extracts all)   {figures['initial_run_s']:7.2f} s  ({figures['initial_per_video_s']:.3f} s/video)"
    )
    print(
        f"  no-change re-run             {figures['nochange_best_s']:7.2f} s best, "
        f"{figures['nochange_median_s']:.2f} s median of {repeats}"
    )
    print(
        f"  add one video                {figures['add_one_s']:7.2f} s  = extraction {figures['add_one_extraction_s']:.2f} s"
        f" + engine {figures['add_one_overhead_s']:.2f} s"
    )
    ok_nochange = figures["nochange_best_s"] < TARGET_S
    ok_add = figures["add_one_overhead_s"] < TARGET_S
    print(f"  target: no-change < {TARGET_S:.0f} s: {'met' if ok_nochange else 'MISSED'}; "
          f"add-one overhead < {TARGET_S:.0f} s: {'met' if ok_add else 'MISSED'}")  # fmt: skip
    print(
        f"  workspace requests: initial {figures['initial_requests']} ({figures['initial_requests_per_video']:.1f}"
        f" per video), no-change re-run {figures['nochange_requests']}, add one {figures['add_one_requests']}"
    )


def _print_remote(figures: dict[str, Any]) -> None:
    far, ratio = figures["remote"], figures["remote_vs_local"]
    print(f"  on {far['workspace']} (the same videos, a fresh dataset; requests = filesystem calls, storage.counting)")
    print(f"                                     {'remote':>10} {'local':>10}   remote/local")
    rows = (
        ("requests per video (initial run)", "initial_requests_per_video", "{:10.1f}", "initial_requests"),
        ("no-change re-run: requests", "nochange_requests", "{:10d}", "nochange_requests"),
        ("no-change re-run: seconds (best)", "nochange_best_s", "{:10.2f}", "nochange_s"),
        ("initial run: seconds", "initial_run_s", "{:10.2f}", "initial_s"),
    )
    for label, key, fmt, ratio_key in rows:
        print(f"  {label:<34} {fmt.format(far[key])} {fmt.format(figures[key])}   {ratio[ratio_key]:8.2f}x")
    print(
        f"  no-change requests by kind: {far['nochange_requests_by_kind']} (local {figures['nochange_requests_by_kind']})"
    )


# -- manifest append (issue 23): a 1000-row append and the current view on manifests of growing size ------------------
def manifest_rows(rng: np.random.Generator, n: int, start: int, fp: str) -> pa.Table:
    """``n`` HowTo100M-shaped manifest rows (11-character ids, sha256 hex, one shard per 1000 videos, 1 % failed)."""
    ids = [f"{i:011x}" for i in range(start, start + n)]
    hexes = rng.bytes(64 * n).hex()
    failed = rng.random(n) < 0.01
    seconds = rng.uniform(30.0, 600.0, n)
    columns = {
        "video_id": ids,
        "source": [f"/data/howto100m/videos/{v}.mp4" for v in ids],
        "sha256": [hexes[128 * i : 128 * i + 64] for i in range(n)],
        "size_bytes": rng.integers(1 << 20, 1 << 28, n),
        "status": np.where(failed, "failed", "ok").tolist(),
        "error": np.where(failed, "ffmpeg: invalid data found when processing input", "").tolist(),
        "warning": [""] * n,
        "duration_s": seconds,
        "has_audio": rng.random(n) < 0.95,
        "n_captions": rng.integers(1, 200, n).astype(np.int32),
        "captions_sha256": [hexes[128 * i + 64 : 128 * i + 128] for i in range(n)],
        "shard": np.where(
            failed, "", [f"shards/{fp}/howto-r0-{(start + i) // 1000:06d}.tar" for i in range(n)]
        ).tolist(),
        "extract_fingerprint": [fp] * n,
        "extracted_at": pa.array(np.full(n, 1_700_000_000_000_000, dtype=np.int64), pa.timestamp("us", tz="UTC")),
    }
    return pa.table(columns, schema=MANIFEST_SCHEMA)


def _old_rewrite_s(work: Path, history: pa.Table, new: pa.Table) -> float:
    """What an append cost before the parts layout: read the single file, concatenate, rewrite it and the current
    view whole (measured with today's vectorised current view, so the figure is kind to the old layout)."""
    path, current = work / "old-manifest.parquet", work / "old-current.parquet"
    pq.write_table(history, path, compression="zstd")
    t0 = time.perf_counter()
    table = pa.concat_tables([pq.read_table(path), new])
    pq.write_table(table, path, compression="zstd")
    pq.write_table(current_view(table), current, compression="zstd")
    return time.perf_counter() - t0


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_appends(
    manifest: Manifest, rng: np.random.Generator, at: int, append_rows: int, repeats: int, fp: str = "f" * 16
) -> tuple[float, float]:
    """Seconds of appending ``append_rows`` HowTo100M-shaped rows (ids from ``at`` on) to ``manifest``: (cold, warm
    median) — cold is a new process's first append (it reads the current parts' keys once), warm the median of
    ``repeats`` more in the same process. Rows are made before each timer starts."""
    forget_part_keys()  # as a new ingest run starts
    first = manifest_rows(rng, append_rows, at, fp)
    cold_s = _timed(lambda: manifest.append(first))
    warm = []
    for i in range(repeats):
        batch = manifest_rows(rng, append_rows, at + (i + 1) * append_rows, fp)
        warm.append(_timed(lambda b=batch: manifest.append(b)))
    return cold_s, statistics.median(warm)


def time_current(manifest: Manifest, repeats: int) -> float:
    """Best seconds of ``repeats`` reads of the manifest's current view."""
    return min(_timed(manifest.current) for _ in range(repeats))


def _bench_manifest(work: Path, n_rows: int, append_rows: int, repeats: int) -> dict[str, float | int]:
    """Build a manifest of ``n_rows`` by appends of ``append_rows`` (as ingest runs publish), then time appends onto
    it (warm: in the process that wrote it; cold: a new process's first, which reads the current parts' keys once),
    the current view, a compaction, and the old layout's whole-file rewrite of the same append."""
    rng = np.random.default_rng(n_rows)
    manifest = Manifest(Workspace(work / f"ws-{n_rows}"), "howto")
    t0 = time.perf_counter()
    for start in range(0, n_rows, append_rows):
        manifest.append(manifest_rows(rng, min(append_rows, n_rows - start), start, "f" * 16))
    build_s = time.perf_counter() - t0
    at = n_rows
    cold_s, append_s = time_appends(manifest, rng, at, append_rows, repeats)
    current_s = time_current(manifest, repeats)
    read_s = min(_timed(manifest.read) for _ in range(repeats))
    parts = len(manifest.parts())
    compact_s = _timed(manifest.compact)
    current_compact_s = min(_timed(manifest.current) for _ in range(repeats))
    forget_part_keys()
    batch = manifest_rows(rng, append_rows, at + (repeats + 1) * append_rows, "f" * 16)
    cold_compacted_s = _timed(lambda: manifest.append(batch))
    old_s = _old_rewrite_s(work, manifest.read(), manifest_rows(rng, append_rows, 10 * n_rows, "f" * 16))
    return {
        "manifest_rows": n_rows,
        "append_rows": append_rows,
        "parts": parts,
        "build_s": build_s,
        "append_s": append_s,
        "append_cold_s": cold_s,
        "current_s": current_s,
        "read_s": read_s,
        "compact_s": compact_s,
        "current_compacted_s": current_compact_s,
        "append_cold_compacted_s": cold_compacted_s,
        "old_rewrite_s": old_s,
    }


def _print_manifest(rows: list[dict[str, float | int]]) -> None:
    print(f"  manifest append ({rows[0]['append_rows']} HowTo100M-shaped rows onto N; parts layout vs the old rewrite)")
    print("         N  parts   append  cold 1st  current view   read all   compact  current(1 part)  cold 1st(1 part)"
          "  old rewrite  old/new")  # fmt: skip
    for r in rows:
        print(
            f"  {r['manifest_rows']:>8}  {r['parts']:>5}  {r['append_s']:6.3f} s {r['append_cold_s']:7.3f} s"
            f"  {r['current_s']:10.3f} s  {r['read_s']:7.3f} s  {r['compact_s']:6.2f} s  {r['current_compacted_s']:13.3f} s"
            f"  {r['append_cold_compacted_s']:14.3f} s  {r['old_rewrite_s']:9.3f} s  {r['old_rewrite_s'] / r['append_s']:6.0f}x"
        )
