"""The incremental extraction engine on small real videos (made with the ffmpeg binary), real shards and Parquet.

Most tests use ``ProbeExtractor`` (real ffmpeg decoding, no network: milliseconds per video); one runs the
library's ``pipeline.extract.Extractor`` end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest

from pipeline.extract.captions import find_subtitle
from pipeline.extract.ffmpeg import ffmpeg_exe
from pipeline.ingest import (
    ExtractJob,
    discover_videos,
    extract_one,
    load_sources,
    plan_extract,
    recover,
    run_extract,
    write_dataset,
)
from pipeline.ingest.sources import list_sources
from storage.dataset import collect_garbage, open_dataset
from storage.features import FeatureStore
from storage.hashing import sha256_file
from storage.manifest import Manifest
from storage.sample import Captions, captions_digest
from storage.shards import iter_shard
from storage.workspace import TMP_MARKER, Workspace
from tests.pipeline.ingest.probe import ProbeConfig, ProbeExtractor

REPO = Path(__file__).resolve().parents[3]


def ffmpeg() -> str:
    return ffmpeg_exe()


def make_video(path: Path, *, pattern: str = "testsrc", seconds: float = 1.5, audio: bool = True, freq: int = 440):
    args = [ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", f"{pattern}=size=64x48:rate=10:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency={freq}:duration={seconds}", "-c:a", "aac", "-shortest"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    return path


VTT = "WEBVTT\n\n00:00:00.000 --> 00:00:00.700\nred square {n}\n\n00:00:00.700 --> 00:00:01.400\nblue circle\n"


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Base clips, made once: two with audio (different content), one without audio."""
    out = tmp_path_factory.mktemp("clips")
    return {
        "a": make_video(out / "a.mp4", pattern="testsrc", freq=440),
        "b": make_video(out / "b.mp4", pattern="smptebars", freq=660, seconds=2.0),
        "silent": make_video(out / "silent.mp4", pattern="testsrc2", audio=False),
        "c": make_video(out / "c.mp4", pattern="rgbtestsrc", freq=330),
    }


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


def put(src: Path, dst: Path, vtt: int | None = None) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    if vtt is not None:
        dst.with_suffix(".vtt").write_text(VTT.format(n=vtt), encoding="utf-8")
    return dst


def _log_lines(path: Path) -> list[tuple[str, set[str]]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [(stem, set(streams.split(","))) for stem, streams in (line.split("\t") for line in lines)]


def extraction_log(path: Path) -> Counter:
    """How often each video was decoded (an extraction that computed a visual or audio stream)."""
    return Counter(stem for stem, streams in _log_lines(path) if streams - {"text"})


def text_log(path: Path) -> Counter:
    """How often each video's captions were encoded without reading the video (text only)."""
    return Counter(stem for stem, streams in _log_lines(path) if streams == {"text"})


def probe(tmp_path: Path, **kw) -> tuple[ProbeExtractor, Path]:
    log = tmp_path / "extractions.log"
    return ProbeExtractor(ProbeConfig(log_path=str(log), **kw)), log


def temporaries(ws: Workspace) -> list[str]:
    return [p for p in ws.fs.find(ws.root) if p.rsplit("/", 1)[-1].startswith(TMP_MARKER)]


def no_temporaries(ws: Workspace) -> bool:
    return not temporaries(ws)


# -- discovery and captions ------------------------------------------------------------------------------------
def test_discover_folder_list_url_and_id_clashes(tmp_path, clips):
    src = tmp_path / "src"
    put(clips["a"], src / "x" / "one.mp4")
    put(clips["a"], src / "x" / "y" / "two.MKV")
    put(clips["a"], src / "three.webm")
    (src / "notes.txt").write_text("not a video")
    (src / "sub.vtt").write_text("WEBVTT\n")
    found = discover_videos(src)
    assert [Path(p).name for p in found] == ["three.webm", "one.mp4", "two.MKV"]
    # A text file of paths: comments, blank lines, relative paths resolved against the list's folder.
    listing = src / "list.txt"
    listing.write_text("# videos\nx/one.mp4\n\n" + str(src / "three.webm") + "\n")
    assert discover_videos(listing) == [str(src / "x" / "one.mp4"), str(src / "three.webm")]
    assert discover_videos([str(src / "three.webm")]) == [str(src / "three.webm")]
    # An fsspec URL folder.
    mem = fsspec.filesystem("memory")
    mem.pipe("/ingest-discover/v/c.mp4", b"x")
    mem.pipe("/ingest-discover/v/d.txt", b"x")
    found = discover_videos("memory://ingest-discover/v")
    assert [mem._strip_protocol(p) for p in found] == ["/ingest-discover/v/c.mp4"] and found[0].startswith("memory://")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        discover_videos(tmp_path / "nowhere")
    # Two files with one id, and two ids with one shard key, are errors naming both files.
    put(clips["a"], src / "z" / "one.mkv")
    with pytest.raises(ValueError, match=r"'one'.*one\.mp4.*one\.mkv|'one'.*one\.mkv.*one\.mp4"):
        load_sources(src)
    with pytest.raises(ValueError, match=r"same shard key 'a_b'"):
        load_sources([str(tmp_path / "a b.mp4"), str(tmp_path / "a_b.mp4")])


def test_caption_pairing_json_then_subtitle_then_csv(tmp_path, clips):
    src = tmp_path / "src"
    for name in ("j", "v", "en", "s", "c", "none"):
        put(clips["a"], src / f"{name}.mp4")
    (src / "j.vtt").write_text(VTT.format(n=0))  # the JSON wins over a subtitle beside the video
    (src / "v.vtt").write_text(VTT.format(n=1))
    (src / "en.en.vtt").write_text(VTT.format(n=2))
    (src / "s.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nfrom srt\n")
    howto = tmp_path / "caption.json"
    howto.write_text(json.dumps({"j": {"start": [0.5], "end": [1.0], "text": ["from json"]}}))
    by_id = {v.video_id: v for v in load_sources(src, captions=howto)}
    assert by_id["j"].captions == Captions([0.5], [1.0], ["from json"])
    assert by_id["v"].captions.text == ["red square 1", "blue circle"]
    assert by_id["v"].captions.start == [0.0, 0.7] and by_id["v"].captions.end == [0.7, 1.4]
    assert by_id["en"].captions.text == ["red square 2", "blue circle"]
    assert by_id["s"].captions.text == ["from srt"]
    assert by_id["none"].captions is None and by_id["c"].captions is None
    table = tmp_path / "clips.csv"
    table.write_text("video_id,start,end,text\nc,0.2,0.9,from csv\nv,0,1,ignored: the vtt wins\n")
    by_id = {v.video_id: v for v in load_sources(src, captions=table)}
    assert by_id["c"].captions == Captions([0.2], [0.9], ["from csv"])
    assert by_id["v"].captions.text[0] == "red square 1"
    assert by_id["j"].captions.text[0] == "red square 0"  # no JSON now: its own subtitle
    with pytest.raises(ValueError, match=r"expected a HowTo100M"):
        load_sources(src, captions=tmp_path / "caps.txt")


def test_subtitles_found_in_the_listing_follow_find_subtitle(tmp_path):
    """A folder's subtitles are matched to its videos from one listing (no request per video), by the rule
    ``find_subtitle`` applies to one video: plain, then English, then other languages in name order, .vtt first."""
    src = tmp_path / "src"
    names = {
        "a.mp4": None, "a.fr-CA.vtt": None, "a.de.vtt": None,  # other languages: name order
        "b.mp4": None, "b.en.srt": None, "b.de.vtt": None,  # any .vtt before any .srt
        "c.en.mp4": None, "c.en.vtt": None, "c.vtt": None,  # the video "c.en" has a plain subtitle; "c" has no video
        "d.mp4": None, "d.x.y.vtt": None, "d.notes.txt": None,  # "x.y" is no language; a .txt is no subtitle
        "e.mp4": None, "e.en.vtt": None, "e.vtt": None,  # plain before English
        "f[1].mp4": None, "f[1].es.vtt": None,  # glob characters in the name
        "sub/g.mp4": None, "g.srt": None,  # another folder's subtitle is not the video's
    }  # fmt: skip
    for name in names:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(b"x")
    got = {v.video_id: Path(v.caption_source).name if v.caption_source else None for v in list_sources(src)}
    reference = {Path(p).stem: (find_subtitle(p).name if find_subtitle(p) else None) for p in discover_videos(src)}
    assert got == reference == {
        "a": "a.de.vtt", "b": "b.de.vtt", "c.en": "c.en.vtt", "d": None, "e": "e.vtt", "f[1]": "f[1].es.vtt", "g": None,
    }  # fmt: skip
    assert all(v.subtitle_unread == bool(v.caption_source) and v.captions is None for v in list_sources(src))


def test_no_change_plan_stats_subtitles_and_reads_none(tmp_path, ws, clips):
    """A subtitle's caption count and digest are remembered by its (size, modification time), as file hashes are: a
    no-change plan stats it and does not read it — so bytes rewritten under the same size and time go unseen (the
    rule of make and rsync), and a new modification time makes the video a 'captions changed' job."""
    src = tmp_path / "src"
    put(clips["a"], src / "p.mp4", vtt=1)
    put(clips["b"], src / "q.mp4", vtt=2)
    ex, _ = probe(tmp_path)
    assert run_extract(src, "plan", workspace=ws, extractor=ex).extracted == 2
    cache = Path(ws.join("cache", "captions-v1"))
    parts = sorted(cache.iterdir())
    assert len(parts) == 1 and pd.read_parquet(parts[0])["source"].map(lambda s: Path(s).name).tolist() == [
        "p.vtt", "q.vtt",
    ]  # fmt: skip
    vtt = src / "p.vtt"
    before = vtt.stat()
    vtt.write_text(VTT.format(n=7))  # same size, other text
    os.utime(vtt, ns=(before.st_atime_ns, before.st_mtime_ns))
    plan = plan_extract(src, "plan", ex.config, ws)
    assert (plan.jobs, sorted(plan.unchanged)) == ([], ["p", "q"]) and sorted(cache.iterdir()) == parts
    os.utime(vtt, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    plan = plan_extract(src, "plan", ex.config, ws)
    assert [(j.video_id, j.reason) for j in plan.jobs] == [("p", "captions changed")]
    assert plan.jobs[0].captions.text == ["red square 7", "blue circle"]


# -- incremental runs ------------------------------------------------------------------------------------------
def assert_same_features(got, want):
    for name in ("rgb2d", "rgb3d", "mel", "w2v"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == np.float16 and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert got.captions == want.captions


def test_incremental_runs(tmp_path, ws, clips, monkeypatch):
    src = tmp_path / "src"
    for i, name in enumerate(("v1", "v2", "v3")):
        put(clips["a"] if i != 1 else clips["b"], src / f"{name}.mp4", vtt=i)
    ex, log = probe(tmp_path)
    first = run_extract(src, "demo", workspace=ws, extractor=ex)
    assert (first.extracted, first.unchanged, first.failed, first.videos) == (3, 0, [], 3)
    assert first.captions == 6 and first.hours == pytest.approx((1.5 + 2.0 + 1.5) / 3600, rel=0.05)
    # v3 has v1's bytes: its visual and audio streams come from the feature store, only its captions are encoded.
    assert extraction_log(log) == Counter({"v1": 1, "v2": 1}) and text_log(log) == Counter({"v3": 1})
    assert first.reused == 0  # v3 still computed its text

    # The dataset reads back equal to a direct extraction of each file (the naive path).
    ds = open_dataset(ws, "demo")
    got = {f.video_id: f for f in ds.iter_videos()}
    assert sorted(got) == ["v1", "v2", "v3"]
    direct = ProbeExtractor()
    for vid, feats in got.items():
        path = src / f"{vid}.mp4"
        want = direct.extract(str(path), load_sources([str(path)])[0].captions, vid)
        assert_same_features(feats, want)
        assert feats.meta["sha256"] == sha256_file(str(path)) and feats.meta["source"] == str(path)
        assert feats.meta["stream_fingerprints"] == ex.config.stream_fingerprints()
    assert ws.exists(f"{ws.shard_dir('demo', ex.config.fingerprint())}/extract-config.yaml")
    fingerprint1 = ds.fingerprint

    # Second run over the same source: nothing extracted, nothing written, and no video read again (the hashes
    # are remembered by size and mtime; the spy wraps the real hash function).
    shards_before = sorted(ws.fs.find(ws.dataset_dir("demo") + "/shards"))
    import storage.hashing

    read = []
    real = storage.hashing.sha256_file
    monkeypatch.setattr(storage.hashing, "sha256_file", lambda path, fs=None: read.append(path) or real(path, fs))
    second = run_extract(src, "demo", workspace=ws, extractor=ex)
    assert read == []
    assert len(run_extract(src, "demo", workspace=ws, extractor=ex, rehash=True).failed) == 0 and len(read) == 3
    assert (second.extracted, second.unchanged, second.shards) == (0, 3, [])
    assert extraction_log(log) == Counter({"v1": 1, "v2": 1})
    assert sorted(ws.fs.find(ws.dataset_dir("demo") + "/shards")) == shards_before
    assert open_dataset(ws, "demo").fingerprint == fingerprint1

    # Adding one video extracts only it, and reads only its bytes.
    put(clips["c"], src / "v4.mp4", vtt=4)
    read.clear()
    third = run_extract(src, "demo", workspace=ws, extractor=ex)
    assert [os.path.basename(p) for p in read] == ["v4.mp4"]
    assert (third.extracted, third.unchanged, third.videos) == (1, 3, 4)
    assert extraction_log(log) == Counter({"v1": 1, "v2": 1, "v4": 1})

    # Changing a video's bytes re-extracts it; the dataset then holds only the new version.
    shutil.copyfile(clips["silent"], src / "v1.mp4")
    new_sha = sha256_file(str(src / "v1.mp4"))
    fourth = run_extract(src, "demo", workspace=ws, extractor=ex)
    assert (fourth.extracted, fourth.unchanged) == (1, 3)
    assert extraction_log(log)["v1"] == 2
    ds = open_dataset(ws, "demo")
    assert ds.num_videos == 4 and ds.fingerprint != fingerprint1
    videos = list(ds.iter_videos())
    assert sorted(f.video_id for f in videos) == ["v1", "v2", "v3", "v4"]
    v1 = next(f for f in videos if f.video_id == "v1")
    assert v1.meta["sha256"] == new_sha and not v1.has_audio  # the silent clip now
    assert_same_features(v1, direct.extract(str(src / "v1.mp4"), load_sources([str(src / "v1.mp4")])[0].captions, "v1"))
    # The old version's row is history; the manifest's current view supersedes it.
    rows = pd.read_parquet(ws.manifest_path("demo"))
    assert (rows["video_id"] == "v1").sum() == 2
    assert rows[rows.video_id == "v1"].sha256.iloc[-1] == new_sha

    # Changing the captions (same bytes) encodes the captions again and reads no video.
    decoded = extraction_log(log)
    (src / "v2.vtt").write_text(VTT.format(n=9) + "\n00:00:01.400 --> 00:00:01.900\na third caption\n")
    assert run_extract(src, "demo", workspace=ws, extractor=ex).extracted == 1
    assert extraction_log(log) == decoded and text_log(log)["v2"] == 1
    v2 = next(f for f in open_dataset(ws, "demo").iter_videos() if f.video_id == "v2")
    assert v2.captions.text[-1] == "a third caption" and v2.w2v.shape == (3, 300)

    # Editing a caption's text, same count, re-extracts it too (the manifest keeps the captions' digest), and the
    # dataset fingerprint moves with it (training depends on the captions).
    fingerprint2 = open_dataset(ws, "demo").fingerprint
    (src / "v2.vtt").write_text(VTT.format(n=9) + "\n00:00:01.400 --> 00:00:01.900\nan edited caption\n")
    plan = plan_extract(src, "demo", ex.config, ws)
    assert [(j.video_id, j.reason) for j in plan.jobs] == [("v2", "captions changed")]
    assert run_extract(src, "demo", workspace=ws, extractor=ex).extracted == 1
    v2 = next(f for f in open_dataset(ws, "demo").iter_videos() if f.video_id == "v2")
    assert v2.captions.text[-1] == "an edited caption"
    current = {r["video_id"]: r for r in Manifest(ws, "demo").current(ex.config.fingerprint()).to_pylist()}
    assert current["v2"]["captions_sha256"] == v2.captions.digest() != captions_digest(None)
    assert open_dataset(ws, "demo").fingerprint != fingerprint2
    assert run_extract(src, "demo", workspace=ws, extractor=ex).extracted == 0  # and then it is unchanged again

    # Another setting of the visual streams writes a separate shard set and recomputes only those streams: the
    # audio arrays are the stored ones, byte for byte.
    (tmp_path / "other").mkdir()
    ex2, log2 = probe(tmp_path / "other", thumb=4)
    fp1, fp2 = ex.config.fingerprint(), ex2.config.fingerprint()
    assert fp1 != fp2 and ex.config.stream_fingerprints()["audio"] == ex2.config.stream_fingerprints()["audio"]
    other = run_extract(src, "demo", workspace=ws, extractor=ex2)
    assert other.extracted == 4 and all(f"/shards/{fp2}/" in s for s in other.shards)
    assert {frozenset(streams) for _, streams in _log_lines(log2)} == {frozenset({"rgb2d", "rgb3d"})}
    assert open_dataset(ws, "demo").extract_fp == fp2
    assert open_dataset(ws, "demo", fp1).num_videos == 4
    assert {s.split("/shards/")[1].split("/")[0] for s in open_dataset(ws, "demo", fp1).shards} == {fp1}
    old = {f.video_id: f for f in open_dataset(ws, "demo", fp1).iter_videos()}
    for f in open_dataset(ws, "demo", fp2).iter_videos():
        assert f.mel.tobytes() == old[f.video_id].mel.tobytes()
        assert not np.array_equal(f.rgb2d, old[f.video_id].rgb2d)  # 4x4 thumbnails now
    assert no_temporaries(ws)


# -- bad input -------------------------------------------------------------------------------------------------
def test_bad_input_fails_cleanly_and_good_videos_extract(tmp_path, ws, clips):
    src = tmp_path / "src"
    put(clips["a"], src / "good.mp4", vtt=0)
    (src / "empty.mp4").write_bytes(b"")
    data = clips["a"].read_bytes()
    (src / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (src / "text.mp4").write_text("this is not a video\n")
    put(clips["silent"], src / "silent.mp4", vtt=1)
    put(clips["b"], src / "nocaps.mp4")
    odd = "-odd 'quoted' \"name\" ünïcødé"
    put(clips["b"], src / f"{odd}.mp4", vtt=2)
    ex, log = probe(tmp_path)
    summary = run_extract(src, "bad", workspace=ws, extractor=ex)
    rows = {r["video_id"]: r for r in pd.read_parquet(ws.manifest_path("bad")).to_dict("records")}
    assert set(rows) == {"good", "empty", "truncated", "text", "silent", "nocaps", odd}
    failed = {vid for vid, r in rows.items() if r["status"] == "failed"}
    assert failed == {"empty", "truncated", "text"} == {vid for vid, _ in summary.failed}
    assert "empty.mp4" in rows["empty"]["error"] and "0 bytes" in rows["empty"]["error"]
    assert "truncated.mp4" in rows["truncated"]["error"]
    assert "text.mp4" in rows["text"]["error"]
    for vid in failed:
        assert "\n" not in rows[vid]["error"] and rows[vid]["shard"] == ""
    assert rows["silent"]["status"] == "ok" and not rows["silent"]["has_audio"]
    assert rows["nocaps"]["status"] == "ok" and rows["nocaps"]["n_captions"] == 0
    assert rows[odd]["status"] == "ok" and rows[odd]["n_captions"] == 2
    by_id = {f.video_id: f for f in open_dataset(ws, "bad").iter_videos()}
    assert sorted(by_id) == sorted(["good", "silent", "nocaps", odd])
    assert by_id["silent"].mel.shape == (40, 0) and by_id["good"].mel.shape[0] == 40 and by_id["good"].has_audio
    assert by_id["nocaps"].w2v.shape == (0, 300) and len(by_id["nocaps"].captions) == 0
    assert by_id[odd].meta["video_id"] == odd

    # Failed videos are not retried by default, and are with retry_failed.
    again = run_extract(src, "bad", workspace=ws, extractor=ex)
    assert (again.extracted, again.failed, again.failed_before) == (0, [], 3)
    before = sum(extraction_log(log).values())
    retried = run_extract(src, "bad", workspace=ws, extractor=ex, retry_failed=True)
    assert sorted(v for v, _ in retried.failed) == ["empty", "text", "truncated"]
    # Two reach the extractor again (the 0-byte file is refused before extraction) and fail again: no log line.
    assert sum(extraction_log(log).values()) == before
    cur = Manifest(ws, "bad").current()
    assert cur.num_rows == 7  # one current row per video


def test_ids_that_would_escape_stay_inside_the_workspace(tmp_path, clips):
    ws = Workspace(tmp_path / "inner" / "ws")
    ex = ProbeExtractor()
    fp, fps = ex.config.fingerprint(), ex.config.stream_fingerprints()
    sha = sha256_file(str(clips["a"]))
    size = clips["a"].stat().st_size
    bad_ids = ["../../escaped", "/abs/escaped", "a/b\\c", "..", "x/../../../y"]
    records = [extract_one(ExtractJob(vid, str(clips["a"]), sha, size, fp, fps), ex, ws) for vid in bad_ids]
    assert [r.status for r in records] == ["ok"] * len(bad_ids)
    write_dataset(records, ws, "../../evil-dataset")
    root = os.path.realpath(ws.root)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and all(os.path.realpath(p).startswith(root + os.sep) for p in files), files
    ds = open_dataset(ws, "../../evil-dataset")
    assert sorted(f.video_id for f in ds.iter_videos()) == sorted(bad_ids)


# -- crash safety ----------------------------------------------------------------------------------------------
def test_extractions_never_written_are_read_back_not_computed_again(tmp_path, ws, clips):
    """A run that died after extracting (store entries complete) but before writing: the next run composes those
    videos from the store without computing anything; a crashed writer's temporary is swept."""
    src = tmp_path / "src"
    for name, clip in (("p", "a"), ("q", "b"), ("r", "c")):
        put(clips[clip], src / f"{name}.mp4", vtt=1)
    ex, log = probe(tmp_path)
    plan = plan_extract(src, "rc", ex.config, ws)
    assert [j.reason for j in plan.jobs] == ["new"] * 3
    assert [extract_one(job, ex, ws).status for job in plan.jobs] == ["ok"] * 3  # ...and the run died here
    tmp = f"{ws.shard_dir('rc', ex.config.fingerprint())}/{TMP_MARKER}dead-x.tar"
    ws.write_bytes(tmp, b"half")
    assert recover(ws, "rc") == [tmp]
    summary = run_extract(src, "rc", workspace=ws, extractor=ex)
    assert (summary.extracted, summary.unchanged, summary.reused) == (3, 0, 3)
    assert extraction_log(log) == Counter({"p": 1, "q": 1, "r": 1}) and not text_log(log)
    assert sorted(Manifest(ws, "rc").read().column("video_id").to_pylist()) == ["p", "q", "r"]
    assert no_temporaries(ws)


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    from pipeline.ingest import run_extract
    from storage.workspace import Workspace
    from tests.pipeline.ingest.probe import ProbeConfig, ProbeExtractor

    cfg = ProbeConfig(delay_s=0.25, log_path=sys.argv[3])
    run_extract(sys.argv[1], "crash", cfg, Workspace(sys.argv[2]), extractor=ProbeExtractor(cfg), max_count=3)
    """
)


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun(tmp_path, clips):
    src = tmp_path / "src"
    src.mkdir()
    names = [f"c{i}" for i in range(8)]
    for i, name in enumerate(names):  # eight different files: each one's streams are computed once
        make_video(src / f"{name}.mp4", pattern="testsrc" if i % 2 else "smptebars", freq=300 + 50 * i)
        (src / f"{name}.vtt").write_text(VTT.format(n=i), encoding="utf-8")
    ws = Workspace(tmp_path / "ws")
    log = tmp_path / "extractions.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(src), ws.root, str(log)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    shards = Path(ws.dataset_dir("crash")) / "shards"
    deadline = time.monotonic() + 90
    try:
        # Kill as soon as the first shard has been published: the run is mid-way, with extracted videos pending.
        while not any(p.suffix == ".tar" and not p.name.startswith(TMP_MARKER) for p in shards.rglob("*.tar")):
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "extraction subprocess made no shard in time"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # What had finished at the moment of the kill: videos whose every stream is in the store, and manifest rows.
    ex = ProbeExtractor(ProbeConfig(log_path=str(log)))
    store = FeatureStore(ws)
    jobs = plan_extract(src, "crash", ex.config, ws).jobs
    stored = {j.video_id for j in jobs if not store.missing(j.stream_fingerprints, j.store_keys())}
    manifest = Manifest(ws, "crash")
    in_manifest = set(manifest.read().column("video_id").to_pylist())
    finished = stored | in_manifest
    assert 0 < len(finished) < len(names), (finished, extraction_log(log))

    summary = run_extract(src, "crash", workspace=ws, extractor=ex, max_count=3)
    counts = extraction_log(log)
    for vid in finished:
        assert counts[vid] == 1, f"{vid} finished before the kill but was extracted again"
    assert set(counts) == set(names) and all(n <= 2 for n in counts.values())
    assert summary.failed == [] and summary.videos == len(names)
    table = manifest.read()
    assert Counter(table.column("video_id").to_pylist()) == Counter(names)  # every video exactly once
    for shard in ws.fs.find(str(shards)):
        if shard.endswith(".tar"):
            assert len(list(iter_shard(shard))) > 0  # every shard reads back whole (raises otherwise)
    assert sorted(f.video_id for f in open_dataset(ws, "crash").iter_videos()) == names
    # The re-run sweeps the dataset's folder. A store entry's temporary (the kill can land inside an entry's write)
    # is left: the store is shared, and one dataset's run cannot tell a dead writer's from a live one of another
    # dataset; `mmcaps gc` sweeps it once older than its grace period, and every video still reads.
    assert [p for p in temporaries(ws) if "/features/" not in p] == []
    collect_garbage(ws, grace_s=0)
    assert temporaries(ws) == []
    assert sorted(f.video_id for f in open_dataset(ws, "crash").iter_videos()) == names


# -- fsspec workspace and source --------------------------------------------------------------------------------
def test_memory_workspace_and_source(tmp_path, clips):
    mem = fsspec.filesystem("memory")
    mem.pipe("/ingest-src/vids/m1.mp4", clips["a"].read_bytes())
    mem.pipe("/ingest-src/vids/m1.vtt", VTT.format(n=5).encode())
    mem.pipe("/ingest-src/vids/m2.mp4", clips["silent"].read_bytes())
    ws = Workspace("memory://ingest-ws")
    ex = ProbeExtractor()
    summary = run_extract("memory://ingest-src/vids", "mem", workspace=ws, extractor=ex)
    assert (summary.extracted, summary.failed) == (2, [])
    assert summary.shards[0].startswith("memory://ingest-ws/datasets/mem/shards/")
    feats = {f.video_id: f for f in open_dataset(ws, "mem").iter_videos()}
    assert feats["m1"].captions.text[0] == "red square 5" and not feats["m2"].has_audio
    assert run_extract("memory://ingest-src/vids", "mem", workspace=ws, extractor=ex).extracted == 0
    assert no_temporaries(ws)


CONCURRENT_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pipeline.ingest import run_extract
    from storage.locks import LockBusy
    from storage.workspace import Workspace
    from tests.pipeline.ingest.probe import ProbeConfig, ProbeExtractor

    cfg = ProbeConfig(delay_s=float(sys.argv[4]), log_path=sys.argv[3])
    while len(sys.argv) > 6 and not os.path.exists(sys.argv[6]):  # imported: now wait for the first run's lock
        time.sleep(0.005)
    try:
        s = run_extract(sys.argv[1], "both", cfg, Workspace(sys.argv[2]), extractor=ProbeExtractor(cfg),
                        wait_s=float(sys.argv[5]))
        print("done", s.extracted, s.unchanged, flush=True)
    except LockBusy as exc:
        print("busy", exc, flush=True)
    """
)


@pytest.mark.slow
def test_two_concurrent_runs_on_one_dataset(tmp_path, clips):
    """A second process on the same dataset refuses while the first runs (naming it), and one that waits finds the
    work done: every video once in the manifest, no shard lost or doubled."""
    src = tmp_path / "src"
    src.mkdir()
    names = [f"k{i}" for i in range(4)]
    for i, name in enumerate(names):
        make_video(src / f"{name}.mp4", pattern="testsrc", freq=500 + 40 * i)
    ws_root, log = tmp_path / "ws", tmp_path / "log"

    lock = Path(Workspace(ws_root).dataset_dir("both")) / ".lock"

    def start(delay: float, wait: float, *after: Path) -> subprocess.Popen:
        argv = [sys.executable, "-c", CONCURRENT_SCRIPT, str(src), str(ws_root), str(log), str(delay), str(wait)]
        return subprocess.Popen([*argv, *map(str, after)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)  # fmt: skip

    # The other two import while the first does and start once it holds the lock (its 4 × 0.5 s): a start after
    # the lock was seen, with 2 s of imports, found the first run done on a slower machine.
    first = start(0.5, 0)
    refused = start(0, 0, lock)
    waiting = start(0, 120, lock)
    out_refused, out_first, out_waiting = (p.communicate(timeout=180)[0] for p in (refused, first, waiting))
    assert out_refused.startswith("busy") and "is being written by extract both (pid" in out_refused, out_refused
    assert out_first.split()[:3] == ["done", "4", "0"], out_first
    assert out_waiting.split()[:3] == ["done", "0", "4"], out_waiting
    table = Manifest(Workspace(ws_root), "both").read()
    assert Counter(table.column("video_id").to_pylist()) == Counter(names)  # every video exactly once
    shards = [p for p in Path(ws_root).rglob("*.tar")]
    assert len(shards) == 1 and sorted(s["__key__"] for s in iter_shard(str(shards[0]))) == names
    assert extraction_log(log) == Counter(dict.fromkeys(names, 1)) and not lock.exists()


def test_caption_problems_keep_their_videos(tmp_path, ws, clips):
    """A subtitle that is not UTF-8, or has a malformed cue, costs the captions only: the video is extracted, its row
    says what was wrong with which file, and fixing the file re-encodes the captions without reading the video."""
    src = tmp_path / "src"
    put(clips["a"], src / "latin.mp4")
    (src / "latin.vtt").write_bytes("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\ncrème brûlée\n".encode("latin-1"))
    put(clips["b"], src / "cue.mp4")
    (src / "cue.vtt").write_text("WEBVTT\n\n00:00:00.000 --> soon\nbroken timing\n", encoding="utf-8")
    ex, log = probe(tmp_path)
    summary = run_extract(src, "caps", workspace=ws, extractor=ex)
    assert (summary.extracted, summary.failed) == (2, [])
    rows = {r["video_id"]: r for r in Manifest(ws, "caps").current().to_pylist()}
    assert rows["latin"]["status"] == rows["cue"]["status"] == "ok"
    assert "latin.vtt" in rows["latin"]["warning"] and "UTF-8" in rows["latin"]["warning"]
    assert "cue.vtt" in rows["cue"]["warning"] and rows["cue"]["n_captions"] == 0
    feats = {f.video_id: f for f in open_dataset(ws, "caps").iter_videos()}
    assert feats["latin"].rgb2d.shape[0] > 0 and feats["cue"].has_audio and len(feats["cue"].captions) == 0
    # The file fixed: only its captions are encoded again.
    (src / "latin.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\ncrème brûlée\n", encoding="utf-8")
    again = run_extract(src, "caps", workspace=ws, extractor=ex)
    assert (again.extracted, again.unchanged) == (1, 1) and text_log(log) == Counter({"latin": 1})
    fixed = Manifest(ws, "caps").current().to_pylist()
    assert {r["video_id"]: r["warning"] for r in fixed}["latin"] == ""
    assert next(f for f in open_dataset(ws, "caps").iter_videos() if f.video_id == "latin").captions.text == [
        "crème brûlée"
    ]
