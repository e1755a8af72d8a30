"""The backbone registry and the extra streams' config: names, fingerprints, weights files refused before decoding,
and the window cutting of clip streams (no network is run here)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from pipeline.extract import ExtractConfig, Extractor
from pipeline.extract.frame_models import Windows, centre_crop, check_weights_file
from pipeline.extract.registry import BACKBONES, StreamConfig
from pipeline.extract.stream_weights import read_state_dict


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown backbone 'clip-vit-z'.*clip-vit-b-32.*s3d-howto100m.*vggish"):
        StreamConfig(backbone="clip-vit-z")
    with pytest.raises(ValueError, match="exactly when backbone is timm"):
        StreamConfig(backbone="timm")
    with pytest.raises(ValueError, match="stream name 'rgb2d'"):
        ExtractConfig(streams={"rgb2d": {"backbone": "clip-vit-b-32"}})
    assert {"clip-vit-b-32", "clip-vit-b-16", "clip-vit-l-14", "timm", "s3d-howto100m", "vggish"} <= set(BACKBONES)


def test_adding_a_stream_keeps_the_others_fingerprints_and_weights_enter_by_content(tmp_path):
    base = ExtractConfig().stream_fingerprints()
    a = tmp_path / "a" / "w.pth"
    a.parent.mkdir()
    torch.save({"x": torch.zeros(2)}, a)
    cfg = ExtractConfig(streams={"clip": {"backbone": "clip-vit-b-32", "weights": str(a)}})
    fps = cfg.stream_fingerprints()
    assert {k: fps[k] for k in base} == base and set(fps) == {*base, "clip"}
    assert cfg.fingerprint() != ExtractConfig().fingerprint()  # a dataset with one more stream
    b = tmp_path / "b.pth"
    shutil.copy(a, b)  # same bytes elsewhere: same fingerprint
    moved = ExtractConfig(streams={"clip": {"backbone": "clip-vit-b-32", "weights": str(b)}})
    assert moved.stream_fingerprints()["clip"] == fps["clip"]
    torch.save({"x": torch.ones(2)}, b)
    assert (
        ExtractConfig(streams={"clip": {"backbone": "clip-vit-b-32", "weights": str(b)}}).stream_fingerprints()["clip"]
        != fps["clip"]
    )
    # fps, window and stride default to the reference and are fingerprinted as resolved
    s3d = StreamConfig(backbone="s3d-howto100m")
    assert s3d.resolved() == (10.0, 32, 32)
    assert StreamConfig(backbone="s3d-howto100m", window=16).resolved() == (10.0, 16, 16)
    assert s3d.fingerprint() == StreamConfig(backbone="s3d-howto100m", fps=10, window=32, stride=32).fingerprint()


def test_torchscript_is_refused_with_the_conversion_line(tmp_path):
    path = tmp_path / "ViT-B-32.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    with pytest.raises(ValueError, match=r"TorchScript archive.*load_openai_model.*torch\.save\(m\.state_dict\(\)"):
        read_state_dict(str(path), "clip-vit-b-32")


def test_wrong_architecture_names_keys_and_shapes_before_any_video(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(2, 3), "features.0.weight": torch.zeros(64, 1, 3, 3)}, path)
    with pytest.raises(ValueError) as err:
        check_weights_file(StreamConfig(backbone="vggish", weights=str(path)))
    msg = str(err.value)
    assert "missing features.0.bias [64]" in msg and "unexpected weight [2, 3]" in msg and "torchvggish" in msg
    # The extractor refuses it at construction: no video is probed or decoded.
    with pytest.raises(ValueError, match=r"missing features\.0\.bias"):
        Extractor(ExtractConfig(streams={"v": {"backbone": "vggish", "weights": str(path)}}), device="cpu")
    s3d = StreamConfig(backbone="s3d-howto100m", weights=str(path))
    with pytest.raises(ValueError, match=r"missing conv1\.conv1\.weight \[64, 24, 2, 4, 4\]"):
        check_weights_file(s3d)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        ExtractConfig(streams={"v": {"backbone": "vggish", "weights": str(tmp_path / "none.pth")}}).fingerprint()


@pytest.mark.parametrize(("window", "stride", "n", "chunk"), [(4, 4, 10, 3), (4, 2, 9, 4), (3, 5, 12, 5), (4, 4, 2, 8)])
def test_windows_across_chunks_equal_a_naive_cut(window, stride, n, chunk):
    frames = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1) * np.ones((1, 2, 2, 3), np.uint8)
    cutter = Windows(window, stride)
    got = [cutter.push(frames[i : i + chunk]) for i in range(0, n, chunk)] + [cutter.finish()]
    got = np.concatenate([g for g in got if len(g)])
    starts = range(0, n, stride)
    want = np.stack([frames[[min(s + j, n - 1) for j in range(window)]] for s in starts])
    np.testing.assert_array_equal(got, want)


def test_centre_crop_matches_torchvision():
    from torchvision.transforms import CenterCrop

    x = torch.arange(2 * 3 * 181 * 243).reshape(2, 3, 181, 243)
    for size in (100, 180, 181):
        assert torch.equal(centre_crop(x, size), CenterCrop(size)(x))
