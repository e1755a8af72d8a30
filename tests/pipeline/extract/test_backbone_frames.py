"""CLIP (open_clip ViT-B/32) and a timm model as feature streams: mmcaps's features equal the library's own model on
the same decoded frames pushed one by one through the library's own preprocessing (a seeded random state dict saved
to a file and loaded through mmcaps's path), in fp32 and bf16; a dataset's new stream is extracted alone."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from pipeline.extract import ExtractConfig, Extractor
from pipeline.extract.ffmpeg import iter_frames

N_FRAMES = 2


def _decode(video, resize: int, crop: int) -> np.ndarray:
    """The frames the extractor decodes for a model of this recipe (here 2 fps): short side ``resize``, ffmpeg's
    centre crop when there is no further crop."""
    chunks = iter_frames(str(video), fps=2.0, size=resize, crop=resize == crop, chunk_frames=8)
    return np.concatenate(list(chunks))[:N_FRAMES]


def _ours(state_file, stream: dict, frames: np.ndarray, recipe: tuple[int, int], precision: str):
    cfg = ExtractConfig(precision=precision, streams={"s": {**stream, "weights": str(state_file)}})
    ex = Extractor(cfg, device="cpu")
    model, _ = ex.extra.model(ex, "s")
    assert (model.resize, model.crop) == recipe  # the library's recipe, which the test decoded with
    return ex.extra.frame_rows(ex, "s", frames).astype(np.float32), ex._weights["s"]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def _check(lib_rows: np.ndarray, state_file, stream: dict, frames: np.ndarray, recipe: tuple[int, int]) -> None:
    fp32, weights = _ours(state_file, stream, frames, recipe, "fp32")
    assert fp32.shape == lib_rows.shape and weights.startswith(f"file:{state_file.name}:sha256:")
    cos = _cosines(fp32, lib_rows)
    assert cos.min() >= 0.999, cos
    bf16, _ = _ours(state_file, stream, frames, recipe, "bf16")
    cos16 = _cosines(bf16, lib_rows)
    assert cos16.min() >= 0.99, cos16
    print(f"{stream['backbone']}: min cos fp32 {cos.min():.6f}, bf16 {cos16.min():.5f}")


def test_clip_vit_b32_equals_open_clip(videos, tmp_path):
    import open_clip

    torch.manual_seed(7)
    lib, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    lib.eval()
    state_file = tmp_path / "clip-b32-visual.pth"
    torch.save({f"visual.{k}": v for k, v in lib.visual.state_dict().items()}, state_file)
    frames = _decode(videos["odd"], 224, 224)  # open_clip: bicubic resize of the shortest side to 224, crop 224
    with torch.no_grad():
        lib_rows = torch.cat([lib.encode_image(preprocess(Image.fromarray(f))[None]) for f in frames]).numpy()
    _check(lib_rows, state_file, {"backbone": "clip-vit-b-32"}, frames, (224, 224))


def test_timm_resnet18_equals_timm(videos, tmp_path):
    import timm
    from timm.data import create_transform, resolve_data_config

    torch.manual_seed(8)
    lib = timm.create_model("resnet18", pretrained=False).eval()
    for m in lib.modules():  # non-trivial BatchNorm statistics, so folding and eval mode are exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    state_file = tmp_path / "resnet18.pth"
    torch.save(lib.state_dict(), state_file)
    transform = create_transform(**resolve_data_config({}, model=lib))
    lib.reset_classifier(0)
    frames = _decode(videos["tall"], 235, 224)  # timm's eval transform: Resize(floor(224 / 0.95)), CenterCrop(224)
    with torch.no_grad():
        lib_rows = torch.cat([lib(transform(Image.fromarray(f))[None]) for f in frames]).numpy()
    _check(lib_rows, state_file, {"backbone": "timm", "model": "resnet18"}, frames, (235, 224))


def test_adding_clip_extracts_only_clip(videos, extract_cache):
    """A dataset extracted with the paper's streams gains ``clip``: the four keep their fingerprints (their store
    entries are reused) and the extractor, asked for clip only, runs clip only."""
    base = ExtractConfig(precision="fp32", max_seconds=2.0)
    cfg = base.with_updates({"streams": {"clip": {"backbone": "clip-vit-b-32", "fps": 2.0}}})
    old, new = base.stream_fingerprints(), cfg.stream_fingerprints()
    assert {k: new[k] for k in old} == old and set(new) - set(old) == {"clip"}
    ex = Extractor(cfg, device="cpu", cache_dir=extract_cache)
    out = ex.extract_streams(videos["odd"], None, ["clip"])
    assert list(out) == ["clip"]
    rows = out["clip"].array
    assert rows.shape == (4, 512) and rows.dtype == np.float16  # 2 s at 2 fps
    np.testing.assert_allclose(np.linalg.norm(rows.astype(np.float32), axis=1), 1.0, atol=2e-3)
    assert out["clip"].meta["weights"] == "random:ViT-B-32:seed0" and out["clip"].meta["rows"] == 4
    assert ex.last_timing["rgb2d"] == ex.last_timing["rgb3d"] == 0.0 and ex.last_timing["clip"] > 0
    assert "rgb2d" not in ex._weights and "rgb3d" not in ex._weights  # neither paper backbone was built
