"""``mmcaps extract`` and ``mmcaps inspect`` in-process, with the real extraction library end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from flows.cli import main
from pipeline.extract.ffmpeg import ffmpeg_exe
from storage.dataset import open_dataset
from storage.workspace import Workspace

VTT = "WEBVTT\n\n00:00:00.000 --> 00:00:00.600\nred square turns\n\n00:00:00.600 --> 00:00:01.000\nblue circle\n"


def make_video(path):
    args = [
        ffmpeg_exe(),
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=96x64:rate=25:duration=1.2",
    ]
    args += ["-f", "lavfi", "-i", "sine=frequency=440:duration=1.2", "-c:a", "aac", "-shortest"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(args, check=True, capture_output=True, timeout=60)


def seed_backbone_cache(request, root) -> None:
    """Hard-link the session's calibrated backbones into the workspace cache when a session fixture
    ``extract_cache`` exists (saves the ~1-2 min calibration); results are the same either way."""
    try:
        cache = request.getfixturevalue("extract_cache")
    except pytest.FixtureLookupError:
        return
    shutil.copytree(cache, os.path.join(root, "cache"), copy_function=os.link, dirs_exist_ok=True)


@pytest.mark.slow
def test_extract_then_inspect_with_the_real_extractor(prefect_api, tmp_path, capsys, request):
    from pipeline.extract import ExtractConfig

    src = tmp_path / "src"
    src.mkdir()
    make_video(src / "clip.mp4")
    (src / "clip.vtt").write_text(VTT, encoding="utf-8")
    (src / "notes.mp4").write_text("not a video\n")
    root = str(tmp_path / "ws")
    seed_backbone_cache(request, root)
    # no word vectors, said so: without text.word2vec=none, captions without vectors stop the run before it starts
    argv = ["extract", str(src), "--dataset", "e2e", "--workspace", root, "--set", "max_seconds=1.0",
            "--set", "text.word2vec=none"]  # fmt: skip
    assert main(argv) == 3  # finished, with a failed video
    out = capsys.readouterr().out
    assert "1 extracted, 0 unchanged, 1 failed" in out and "notes.mp4" in out

    ws = Workspace(root)
    ds = open_dataset(ws, "e2e")
    cfg = ExtractConfig(max_seconds=1.0, text={"word2vec": False})  # as given (none); fingerprint as unset
    assert cfg.fingerprint() == ExtractConfig(max_seconds=1.0).fingerprint()
    assert ds.extract_fp == cfg.fingerprint() and ds.extract_config == cfg.resolved().model_dump(
        mode="json"
    )  # as it ran
    (feats,) = list(ds.iter_videos())
    assert feats.video_id == "clip" and feats.captions.text == ["red square turns", "blue circle"]
    assert feats.rgb2d.dtype == np.float16 and feats.rgb2d.shape[1] == 2048 and feats.rgb2d.shape[0] >= 1
    assert feats.rgb3d.shape[1] == 2048 and feats.w2v.shape == (2, 300)
    assert feats.mel.shape[0] == 40 and 90 <= feats.mel.shape[1] <= 110  # 1.0 s at 100 frames per second
    norms = np.linalg.norm(feats.rgb2d.astype(np.float32), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-2)  # rows L2-normalised (stored as float16)
    assert feats.meta["extract_fingerprint"] == cfg.fingerprint() and "rgb2d" in feats.meta["weights"]

    # A second run extracts nothing (and builds no extractor).
    assert main(argv) == 0
    assert "0 extracted, 1 unchanged" in capsys.readouterr().out

    assert main(["inspect", "e2e", "--workspace", root]) == 0
    out = capsys.readouterr().out
    assert "1 ok, 1 failed, 0 skipped" in out and cfg.fingerprint() in out and ds.fingerprint in out
    assert "notes: " in out and "notes.mp4" in out


def test_inspect_unknown_dataset_is_a_one_line_error(tmp_path, capsys):
    assert main(["inspect", "nope", "--workspace", str(tmp_path / "ws")]) == 2
    assert "no manifest" in capsys.readouterr().err


def test_extract_bad_option_is_a_one_line_error(prefect_api, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    argv = ["extract", str(src), "--dataset", "d", "--workspace", str(tmp_path / "ws"), "--set", "nope.x=1"]
    assert main(argv) == 2
    assert "nope" in capsys.readouterr().err


def test_bench_ingest_runs_small(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    assert main(["bench", "ingest", "--videos", "3", "--repeats", "1", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "no-change re-run" in out and "Extractor (random backbones" in out
    figures = json.loads(out_json.read_text())
    assert figures["videos"] == 3 and figures["add_one_s"] >= figures["add_one_extraction_s"] > 0
