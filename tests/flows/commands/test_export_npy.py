"""``mmcaps export --layout npy`` and ``mmcaps extract --export``: plain arrays per video and stream, in one command.

The round trip reads the demo's extracted training set (the session's ``trained_demo``, read-only): every exported
array equals the dataset's own array read through storage after the dtype cast, each row's time is its index over
the stream's rate (text: its caption's start). Bad input is one ``mmcaps CMD: error:`` line naming it, status 2.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from flows.cli import main
from pipeline.ingest.importers.export_npy import stream_rates, video_streams, write_video
from storage.dataset import open_dataset
from storage.sample import Captions, VideoFeatures
from storage.workspace import Workspace

pytestmark = pytest.mark.slow

RATES = {"rgb2d": 1.0, "rgb3d": 24.0 / 16.0, "audio": 100.0}  # the demo's recipe: 2D at 1 fps, ResNeXt-101, log-mel


def _errors(capsys, command: str) -> list[str]:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert all(line.startswith(f"mmcaps {command}: error: ") for line in lines), err
    return [line.removeprefix(f"mmcaps {command}: error: ") for line in lines]


def _stored_rows(feats, stream: str) -> np.ndarray:
    """The naive reference: the stream's rows as storage gives them (mel [40, Ta] read as rows over time)."""
    return {"rgb2d": feats.rgb2d, "rgb3d": feats.rgb3d, "audio": feats.mel.T, "text": feats.w2v}[stream]


def _check_export(out: Path, ws: Path, dataset: str, dtype: str, streams: tuple[str, ...]) -> None:
    info = json.loads((out / "export.json").read_text())
    assert info["layout"] == "npy" and info["dtype"] == dtype and list(info["streams"]) == list(streams)
    videos = list(open_dataset(Workspace(ws), dataset).iter_videos())
    with (out / "videos.csv").open() as f:
        listed = {row["video_id"]: row for row in csv.DictReader(f)}
    assert sorted(listed) == sorted(v.video_id for v in videos)
    captions = json.loads((out / "caption.json").read_text())
    for feats in videos:
        assert listed[feats.video_id]["has_audio"] == str(int(feats.has_audio))
        assert captions[feats.video_id] == feats.captions.to_json()
        for stream in streams:
            array_file, times_file = (
                out / stream / f"{feats.key}_{stream}.npy",
                out / stream / f"{feats.key}_timestamps_ms.npy",
            )
            if stream == "audio" and not feats.has_audio:
                assert not array_file.exists() and not times_file.exists()
                continue
            rows, times = np.load(array_file), np.load(times_file)
            expected = _stored_rows(feats, stream).astype(dtype)
            assert rows.dtype == np.dtype(dtype) and np.array_equal(rows, expected), (feats.video_id, stream)
            assert times.dtype == np.float64 and times.shape == (rows.shape[0],)
            if stream == "text":
                np.testing.assert_allclose(times, np.asarray(feats.captions.start) * 1000.0)
            else:
                np.testing.assert_allclose(times, np.arange(rows.shape[0]) * 1000.0 / RATES[stream])
                assert info["streams"][stream]["rows_per_s"] == pytest.approx(RATES[stream])


def test_export_npy_float32_equals_the_stored_arrays_with_their_times(trained_demo, tmp_path, capsys):
    out = tmp_path / "npy"
    argv = ["export", "synthetic-train", str(out), "--layout", "npy", "--dtype", "float32", "--streams",
            "rgb2d,rgb3d,audio,text", "--workspace", str(trained_demo.workspace)]  # fmt: skip
    assert main(argv) == 0
    assert "as npy float32" in capsys.readouterr().out
    _check_export(out, trained_demo.workspace, "synthetic-train", "float32", ("rgb2d", "rgb3d", "audio", "text"))


def test_export_npy_defaults_to_float32_and_every_stream_the_dataset_holds(trained_demo, tmp_path):
    out = tmp_path / "npy"
    assert (
        main(["export", "eval-synthetic", str(out), "--layout", "npy", "--workspace", str(trained_demo.workspace)]) == 0
    )
    _check_export(out, trained_demo.workspace, "eval-synthetic", "float32", ("rgb2d", "rgb3d", "audio", "text"))


def test_extract_then_export_in_one_command(trained_demo, tmp_path, capsys):
    """One video of the demo's corpus into a new dataset with the demo's recipe (its features come from the store:
    no network pass), exported in the same command."""
    ws = trained_demo.workspace
    recipe = open_dataset(Workspace(ws), "synthetic-train").config_path
    video = sorted((trained_demo.corpus / "train" / "videos").glob("*.mp4"))[0]
    out = tmp_path / "chain"
    argv = ["extract", str(video), "--dataset", "export-chain", "--config", recipe, "--workspace", str(ws),
            "--export", str(out), "--export-dtype", "float16", "--export-streams", "rgb3d,text"]  # fmt: skip
    assert main(argv) == 0
    assert "as npy float16" in capsys.readouterr().out
    _check_export(out, ws, "export-chain", "float16", ("rgb3d", "text"))
    assert not (out / "rgb2d").exists()


def test_bad_export_input_is_one_line_naming_it(trained_demo, tmp_path, capsys):
    ws = str(trained_demo.workspace)
    afile = tmp_path / "afile"
    afile.write_text("")
    cases = [
        (["synthetic-train", str(tmp_path / "o1"), "--layout", "npy", "--streams", "rgb2d,clip9"], "'clip9'"),
        (["no-such-set", str(tmp_path / "o2"), "--layout", "npy"], "'no-such-set'"),
        (["synthetic-train", str(afile), "--layout", "npy"], f"{afile} is a file"),
    ]
    for args, named in cases:
        assert main(["export", *args, "--workspace", ws]) == 2
        (line,) = _errors(capsys, "export")
        assert named in line, line
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_extract_checks_its_export_before_it_starts(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    video = tmp_path / "v1.mp4"
    video.write_bytes(b"\0" * 16)  # never decoded: the checks refuse the invocation first
    argv = ["extract", str(video), "--dataset", "d", "--set", "text.word2vec=none", "--workspace", str(tmp_path / "ws"),
            "--export", str(afile), "--export-streams", "rgb2d,nope"]  # fmt: skip
    assert main(argv) == 2
    lines = _errors(capsys, "extract")
    assert lines == [
        "--export: unknown stream 'nope'; streams: rgb2d, rgb3d, audio, text",
        f"--export: export folder {afile} is a file, not a folder",
    ]
    assert not (tmp_path / "ws").exists()
    assert main([*argv[:8], "--export-dtype", "float16"]) == 2  # an export option without --export
    assert _errors(capsys, "extract") == ["--export-dtype and --export-streams shape the export: add --export OUT"]


def test_an_extra_stream_is_exported_at_its_recorded_rate_and_a_silent_video_has_no_audio(tmp_path):
    """A hand-made sample with an extra stream (``clip`` at 2 rows/s, as ``ExtraStreams.describe`` records it), no
    audio, a slow_r50 recipe (30/8 fps, 8-frame windows: 0.46875 rows/s): every file and time, by hand."""
    rng = np.random.default_rng(0)

    def f16(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float16)

    feats = VideoFeatures("a/b c", f16(4, 2048), f16(2, 2048), np.zeros((40, 0), np.float16), f16(2, 300),
                          Captions([0.5, 2.0], [1.5, 3.0], ["x", "y"]), meta={"streams": {"clip": {"rate": 2.0}}},
                          extra={"clip": f16(8, 512)})  # fmt: skip
    assert video_streams(feats) == ["rgb2d", "rgb3d", "text", "clip"]
    rates = stream_rates({"rgb2d": {"fps": 1.0}, "rgb3d": {"arch": "slow_r50"}}, feats)
    assert rates == {"rgb2d": 1.0, "rgb3d": 30 / 8 / 8, "audio": 100.0, "clip": 2.0}
    target = Workspace(tmp_path)
    files, _ = write_video(target, feats, ["rgb2d", "rgb3d", "audio", "text", "clip"], "float32", rates)
    assert files == 8 and not (tmp_path / "audio").exists()
    key = feats.key
    assert np.array_equal(np.load(tmp_path / "clip" / f"{key}_clip.npy"), feats.extra["clip"].astype(np.float32))
    assert np.load(tmp_path / "clip" / f"{key}_timestamps_ms.npy").tolist() == [500.0 * i for i in range(8)]
    assert np.load(tmp_path / "rgb3d" / f"{key}_timestamps_ms.npy").tolist() == [0.0, 1000 / (30 / 8 / 8)]
    assert np.load(tmp_path / "text" / f"{key}_timestamps_ms.npy").tolist() == [500.0, 2000.0]
