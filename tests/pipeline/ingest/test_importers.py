"""Importing the public feature layouts: files written as the public tools write them become a dataset read like an
extracted one; bad files give failed rows naming them while the others import; re-runs import only what changed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.extract.text import WordVectors
from pipeline.ingest.importers import AvlnetLayout, ImportConfig, VfeLayout, run_import
from pipeline.ingest.importers.feature_files import video_key
from storage.dataset import open_dataset
from storage.hashing import sha256_file
from storage.manifest import Manifest
from storage.workspace import Workspace
from tests.pipeline.ingest.release_layouts import (
    load_audio_spec,
    vfe_rows,
    write_avlnet_list,
    write_avlnet_video,
    write_captions,
    write_howto_csv,
    write_vfe,
    write_word2vec,
)

WORDS = ["add", "oil", "pan", "chop", "onion", "stir", "salt"]
CAPTIONS = {
    "vidA": [(0.0, 3.0, "add oil"), (3.0, 6.5, "chop the onion")],
    "vidB": [(1.0, 4.0, "stir in salt")],
    "vidC": [(0.5, 2.0, "pan")],
}


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


@pytest.fixture
def vfe(tmp_path) -> dict:
    """Three videos in two folders with the same relative paths (one float32: --half_precision 0)."""
    root = tmp_path / "vfe"
    lengths = {"vidA": 8, "vidB": 12, "vidC": 5}
    files = {}
    for i, (vid, n) in enumerate(lengths.items()):
        rel = f"sub{i % 2}/{vid}"  # np.save appends .npy
        files[vid] = {
            "rgb2d": write_vfe(root / "feature_2d" / rel, vfe_rows(n, i, half=vid != "vidC")),
            "rgb3d": write_vfe(root / "feature_3d" / rel, vfe_rows(int(np.ceil(n * 1.5)), 10 + i)),
        }
    w2v = write_word2vec(tmp_path / "w2v.txt", WORDS)
    return {
        "layout": VfeLayout(str(root / "feature_2d"), str(root / "feature_3d")),
        "files": files,
        "captions": write_captions(tmp_path / "caption.json", CAPTIONS),
        "cfg": ImportConfig(recipe={"text": {"word2vec": str(w2v)}}),
        "w2v": w2v,
        "root": root,
    }


def _samples(ws: Workspace, name: str) -> dict:
    return {v.video_id: v for v in open_dataset(ws, name).iter_videos()}


def test_vfe_folders_import_as_a_dataset_read_like_an_extracted_one(vfe, ws, tmp_path):
    summary = run_import(vfe["layout"], "vfe", vfe["cfg"], ws, captions=vfe["captions"])
    assert summary.extracted == 3 and not summary.failed and summary.videos == 3
    samples = _samples(ws, "vfe")
    words = WordVectors.load(vfe["w2v"])
    for vid, files in vfe["files"].items():
        s = samples[vid]
        raw2d, raw3d = np.load(files["rgb2d"]), np.load(files["rgb3d"])
        assert s.rgb2d.dtype == np.float16 and s.rgb2d.tobytes() == raw2d.astype(np.float16).tobytes()
        assert s.rgb3d.tobytes() == raw3d.astype(np.float16).tobytes()
        assert s.mel.shape == (40, 0) and not s.has_audio and s.meta["has_audio"] is False
        assert s.meta["duration_s"] == raw2d.shape[0]  # 1 row per second
        assert s.captions.text == [t for _, _, t in CAPTIONS[vid]]
        want, _ = words.encode_many(s.captions.text)  # the extraction's encoder
        assert s.w2v.tobytes() == want.astype(np.float16).tobytes()
        stream = s.meta["streams"]["rgb2d"]
        assert stream["imported"] == "vfe" and stream["source"] == str(files["rgb2d"])
        assert stream["source_sha256"] == sha256_file(str(files["rgb2d"]))
        assert stream["source_dtype"] == ("float32" if vid == "vidC" else "float16")
        assert s.meta["sha256"] == video_key(
            {"rgb2d": stream["source_sha256"], "rgb3d": sha256_file(str(files["rgb3d"]))}, None
        )
    rows = {r["video_id"]: r for r in Manifest(ws, "vfe").current().to_pylist()}
    assert {r["status"] for r in rows.values()} == {"ok"} and not any(r["has_audio"] for r in rows.values())
    # provenance: the import's own fingerprints (never extraction's), and the recipe beside the shards
    cfg = vfe["cfg"]
    assert s.meta["stream_fingerprints"] == cfg.stream_fingerprints()
    assert cfg.stream_fingerprints()["rgb2d"] != cfg.recipe.stream_fingerprints()["rgb2d"]
    assert cfg.stream_fingerprints()["text"] == cfg.recipe.stream_fingerprints()["text"]  # text encoded as extracted
    ds = open_dataset(ws, "vfe")
    assert ds.extract_fp == cfg.fingerprint() and ds.extract_config["text"]["word2vec"] == str(vfe["w2v"])
    assert (Path(ws.shard_dir("vfe", ds.extract_fp)) / "import-config.yaml").is_file()


def test_a_rerun_imports_only_what_changed(vfe, ws, tmp_path):
    run_import(vfe["layout"], "vfe", vfe["cfg"], ws, captions=vfe["captions"])
    again = run_import(vfe["layout"], "vfe", vfe["cfg"], ws, captions=vfe["captions"])
    assert again.extracted == 0 and again.unchanged == 3 and not again.shards

    # new bytes for one video's 3D file; new captions for another: only those two, and the second reads no file
    write_vfe(vfe["files"]["vidB"]["rgb3d"], vfe_rows(18, 99))
    caps = json.loads(Path(vfe["captions"]).read_text())
    caps["vidA"]["text"][0] = "add salt"
    Path(vfe["captions"]).write_text(json.dumps(caps))
    records = []
    third = run_import(vfe["layout"], "vfe", vfe["cfg"], ws, captions=vfe["captions"],
                       progress=lambda d, n, r: records.append(r))  # fmt: skip
    assert third.extracted == 2 and third.unchanged == 1
    computed = {r.video_id: r.computed for r in records}
    assert computed == {"vidA": ["text"], "vidB": ["rgb2d", "rgb3d", "audio"]}
    samples = _samples(ws, "vfe")
    assert samples["vidA"].captions.text[0] == "add salt"
    assert samples["vidB"].rgb3d.tobytes() == vfe_rows(18, 99).tobytes()


BAD_CASES = {
    "wrong_dim": ("rgb2d", lambda: vfe_rows(6, 1)[:, :1024], "not [T, 2048]"),
    "3d_of_another_video": ("rgb3d", lambda: vfe_rows(40, 2), "covers 26.7 s at 1.5 rows/s, but the video is 6.0 s"),
    "nan": ("rgb2d", lambda: np.where(np.arange(2048) == 7, np.nan, vfe_rows(6, 3)).astype(np.float16), "NaN"),
    "no_frames": ("both", lambda: np.zeros((0, 2048), np.float16), "no frames"),
    "ints": ("rgb3d", lambda: np.ones((9, 2048), np.int64), "int64 [9, 2048], expected floats"),
}


def test_bad_files_give_failed_rows_naming_them_and_the_others_import(vfe, ws):
    root = vfe["root"]
    for name, (which, make, _) in BAD_CASES.items():
        for stream, folder in (("rgb2d", "feature_2d"), ("rgb3d", "feature_3d")):
            good = vfe_rows(6 if stream == "rgb2d" else 9, 5)
            write_vfe(root / folder / f"bad/{name}.npy", make() if which in (stream, "both") else good)
    truncated = write_vfe(root / "feature_2d/bad/truncated.npy", vfe_rows(6, 6))
    write_vfe(root / "feature_3d/bad/truncated.npy", vfe_rows(9, 6))
    truncated.write_bytes(truncated.read_bytes()[:5000])
    write_vfe(root / "feature_2d/bad/no_3d.npy", vfe_rows(6, 7))  # the extractor wrote no 3D file for it

    summary = run_import(vfe["layout"], "vfe", vfe["cfg"], ws, captions=vfe["captions"])
    errors = dict(summary.failed)
    assert summary.extracted == 3 and sorted(open_dataset(ws, "vfe").video_ids) == ["vidA", "vidB", "vidC"]
    assert set(errors) == {*BAD_CASES, "truncated", "no_3d"}
    for name, (which, _, needle) in BAD_CASES.items():
        folder = "feature_3d" if which == "rgb3d" else "feature_2d"
        assert errors[name].startswith(str(root / folder / f"bad/{name}.npy") + ":"), errors[name]
        assert needle in errors[name], errors[name]
    assert errors["truncated"].startswith(f"{truncated}: not a complete .npy file")
    assert f"rgb3d file {root / 'feature_3d/bad/no_3d.npy'} not found" in errors["no_3d"]
    rows = {r["video_id"]: r for r in Manifest(ws, "vfe").current().to_pylist()}
    assert all(rows[n]["status"] == "failed" and "\n" not in rows[n]["error"] for n in errors)


def test_a_howto100m_csv_lists_videos_by_relative_path_and_duration(vfe, ws, tmp_path):
    root = vfe["root"]
    listing = write_howto_csv(tmp_path / "HowTo100M_v1.csv", [("vidA", "sub0/vidA"), ("vidB", "sub1/vidB.npy")])
    layout = VfeLayout(str(root / "feature_2d"), str(root / "feature_3d"), listing=str(listing))
    summary = run_import(layout, "csv", vfe["cfg"], ws, captions=vfe["captions"])
    assert summary.extracted == 2 and open_dataset(ws, "csv").video_ids == ["vidA", "vidB"]

    timed = tmp_path / "timed.csv"
    timed.write_text("video_id,path,duration\nvidA,sub0/vidA.npy,7.6\nvidB,sub1/vidB.npy,30\n")
    layout = VfeLayout(str(root / "feature_2d"), str(root / "feature_3d"), listing=str(timed))
    summary = run_import(layout, "timed", vfe["cfg"], ws, captions=vfe["captions"])
    assert _samples(ws, "timed")["vidA"].meta["duration_s"] == 7.6
    (vid, error), = summary.failed  # fmt: skip
    assert vid == "vidB" and "rgb2d [12, 2048] covers 12.0 s" in error and "30.0 s long" in error


def test_avlnet_npz_layout_with_spectrograms(ws, tmp_path):
    root = tmp_path / "parsed_videos"
    rels = ["hobbies_and_crafts/video_8/8N4mGHodjss", "food_and_entertaining/video_j/jEyaTUyJ-rs", "food/v/silent1"]
    specs = {
        rels[0]: load_audio_spec(6.0, 1),  # padded with 0 dB to 2048 frames (LoadAudio's default)
        rels[1]: load_audio_spec(9.0, 2, target_length=None),  # use_raw_length
        rels[2]: None,  # no wav: no spectrogram
    }
    for i, rel in enumerate(rels):
        n = (6, 9, 4)[i]
        write_avlnet_video(
            root, rel, vfe_rows(n, i, half=False), vfe_rows(int(n * 1.5), 20 + i, half=False), specs[rel]
        )
    listing = write_avlnet_list(tmp_path / "HowTo100M_1166_videopaths.txt", ["None/" + rels[0], *rels[1:]])
    cfg = ImportConfig(layout="avlnet")
    summary = run_import(AvlnetLayout(str(root), str(listing)), "avl", cfg, ws)
    assert summary.extracted == 3 and not summary.failed
    samples = _samples(ws, "avl")
    padded = samples["8N4mGHodjss"]
    assert padded.mel.shape == (40, 601)  # 1 + 6 s * 100: the 0 dB padding removed
    assert padded.mel.tobytes() == specs[rels[0]][:, :601].astype(np.float16).tobytes()
    assert padded.meta["streams"]["audio"]["padding_columns_removed"] == 2048 - 601
    assert samples["jEyaTUyJ-rs"].mel.shape == (40, 901) and samples["jEyaTUyJ-rs"].has_audio
    assert not samples["silent1"].has_audio and samples["silent1"].mel.shape == (40, 0)
    assert samples["silent1"].rgb2d.tobytes() == vfe_rows(4, 2, half=False).astype(np.float16).tobytes()
    assert cfg.stream_fingerprints()["audio"] != ImportConfig().stream_fingerprints()["audio"]
    assert samples["8N4mGHodjss"].meta["streams"]["audio"]["imported"] == "avlnet"

    # a spectrogram cut at target_length=2048 of a 30 s video: a failed row that says so
    long = "food/v/long"
    write_avlnet_video(root, long, vfe_rows(30, 5), vfe_rows(45, 6), load_audio_spec(30.0, 3))
    write_avlnet_list(listing, [*rels, long])
    (vid, error), = run_import(AvlnetLayout(str(root), str(listing)), "avl", cfg, ws).failed  # fmt: skip
    assert (
        vid == "long" and error.startswith(str(root / long / "long_spec.npz")) and "[40, 2048] covers 20.5 s" in error
    )


def test_duplicate_ids_and_a_wrong_layout_are_refused(vfe, ws, tmp_path):
    root = vfe["root"]
    shutil.copy(vfe["files"]["vidA"]["rgb2d"], root / "feature_2d" / "sub1" / "vidA.npy")
    with pytest.raises(ValueError, match="listed twice"):
        run_import(vfe["layout"], "dup", vfe["cfg"], ws)
    os.remove(root / "feature_2d" / "sub1" / "vidA.npy")
    with pytest.raises(ValueError, match="vfe layout but the config imports avlnet"):
        run_import(vfe["layout"], "x", ImportConfig(layout="avlnet"), ws)
