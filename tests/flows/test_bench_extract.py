"""``mmcaps bench extract`` runs end to end on tiny videos and reports what it promises (no timing asserted)."""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import pytest

from flows.bench.extract import OUR_RUNS, _make_video, _print_gflops, choose_runs
from flows.cli import main
from pipeline.extract.ffmpeg import decode_audio, expected_frames, probe
from pipeline.hardware import PeakSweep, resolve_precision


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("emulated", [True, False])
@pytest.mark.parametrize("no_compile", [True, False])
def test_bf16_rows_run_only_where_native_unless_asked(native, emulated, no_compile):
    args = argparse.Namespace(no_compile=no_compile, emulated=emulated)
    runs, skipped = choose_runs(args, native)
    bf16 = {n for n, (p, _) in OUR_RUNS.items() if p == "bf16" and not (no_compile and OUR_RUNS[n][1])}
    assert ("ours-fp32" in runs) and (no_compile != ("ours-fp32-compiled" in runs))
    if native or emulated:
        assert bf16 <= set(runs) and not skipped
    else:
        assert not bf16 & set(runs)
        assert sorted(s.split()[0] for s in skipped) == sorted(bf16)
        assert all("emulated" in s for s in skipped)


def test_bench_extract_speed_table(tmp_path, capsys, extract_cache):
    out_json = tmp_path / "extract.json"
    args = [
        "bench",
        "extract",
        "--videos",
        "1",
        "--seconds",
        "2",
        "--size",
        "320x180",
        "--no-compile",
        "--sweep-budget",
        "1",
    ]
    assert main([*args, "--cache-dir", str(extract_cache), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "naive-fp32" in out and "end to end" in out and "GFLOP/s" in out
    figures = json.loads(out_json.read_text())
    native = resolve_precision("auto", "cpu").precision == "bf16"
    assert figures["cpu"]["native_bf16"] is native and figures["cpu"]["capability"] in out
    expected = {"naive-fp32", "ours-fp32"} | ({"ours-bf16"} if native else set())
    assert set(figures["speeds"]) == expected
    assert bool(figures["skipped"]) is not native  # bf16 rows listed as skipped exactly where they are emulated
    for name, row in figures["speeds"].items():
        for key in ("rgb2d", "rgb3d", "audio", "end_to_end"):
            assert math.isfinite(row[key]) and row[key] > 0, (name, key)
        if name != "naive-fp32":
            assert 0 < row["busy"] <= 1
            assert row["gflops_rgb2d"] > 0 and row["gflops_rgb3d"] > 0
    assert figures["macs"]["rgb2d"] > 1e10 and figures["macs"]["rgb3d"] > 1e9  # ResNet-152 on 224x398 frames
    assert figures["matmul_gflops"]["fp32"] > 0
    for precision, peak in figures["peak"].items():  # the limit: no GEMM it measured exceeds it
        assert figures["matmul_gflops"][precision] == peak["best_gflops"]
        assert peak["limit_gflops"] == max(peak["best_gflops"], peak["fma_gflops"] or 0)
        assert all(0 < r["gflops_all_threads"] <= peak["best_gflops"] for r in peak["rows"])
    assert "of the limit" in out and "FMA peak" in out and "% of matmul" not in out
    assert set(figures["agreement"]) == {f"{n}/{s}" for n in expected - {"naive-fp32"} for s in ("rgb2d", "rgb3d")}
    assert figures["agreement"]["ours-fp32/rgb2d"]["min"] >= 0.999  # fp32 features: the naive recipe's
    assert figures["agreement"]["ours-fp32/rgb3d"]["min"] >= 0.999
    assert all(v["min"] >= 0.99 for v in figures["agreement"].values())


def test_bench_extract_memory(tmp_path, capsys, extract_cache):
    out_json = tmp_path / "memory.json"
    args = ["bench", "extract", "--memory", "--memory-seconds", "2", "4", "--size", "320x180"]
    assert main([*args, "--cache-dir", str(extract_cache), "--json", str(out_json)]) == 0
    assert "peak ratio long/short" in capsys.readouterr().out
    figures = json.loads(out_json.read_text())
    assert figures["ratio"] == figures["memory"]["long"]["peak_mib"] / figures["memory"]["short"]["peak_mib"]
    for label, seconds in (("short", 2), ("long", 4)):
        f = figures["memory"][label]
        # Each child extracted its whole video: rows as the recipe gives them from the video's own length and
        # samples (1 fps; 24 fps in 16-frame windows; one mel column per 160 samples plus one), whatever the build.
        with tempfile.TemporaryDirectory() as tmp:
            video = _make_video(Path(tmp) / "v.mp4", seconds, "320x180")
            n = decode_audio(video, Path(tmp) / "a.f32")
            duration = probe(video).duration_s
        assert f["rows"] == {
            "rgb2d": expected_frames(duration, 1),
            "rgb3d": -(-expected_frames(duration, 24) // 16),
            "mel": 1 + n // 160,
        }
        assert f["peak_mib"] >= f["built_mib"] > 100  # the backbones alone take hundreds of MiB


def test_gflops_are_reported_as_a_share_of_the_limit(capsys):
    """The limit is the larger of the FMA peak and the sweep's best (a one-thread row counted for every thread)."""
    rows = [{"gemm": "mm 2048x2048x2048", "threads": 2, "gflops": 150.0, "gflops_all_threads": 150.0},
            {"gemm": "mm 2048x2048x2048 1 thread(s)", "threads": 1, "gflops": 100.0, "gflops_all_threads": 200.0}]  # fmt: skip
    quiet = PeakSweep("fp32", rows, fma_gflops=166.0, fma_note="2 core(s) x 32 FLOP/cycle")
    _print_gflops({"ours-fp32": {"precision": "fp32", "gflops_rgb2d": 100.0, "gflops_rgb3d": 50.0}},
                  {"rgb2d": 2e10, "rgb3d": 1e9}, {"fp32": quiet})  # fmt: skip
    out = capsys.readouterr().out
    assert "limit 200 GFLOP/s; FMA peak 166 GFLOP/s" in out and "best GEMM 200 GFLOP/s (mm 2048x2048x2048" in out
    assert "100.0 GFLOP/s ( 50% of the limit)" in out and "50.0 GFLOP/s ( 25% of the limit)" in out
    assert PeakSweep("fp32", rows, fma_gflops=300.0).limit_gflops == 300.0
    assert PeakSweep("fp32", rows).limit_gflops == 200.0  # FMA peak unknown: the sweep alone
