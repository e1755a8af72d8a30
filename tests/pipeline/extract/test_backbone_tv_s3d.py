"""torchvision's Kinetics-400 S3D as a feature stream (``s3d-kinetics400``): mmcaps's rows equal torchvision's own
model on the same decoded frames pushed through its own ``S3D_Weights.KINETICS400_V1.transforms()`` (a seeded
random state dict saved to a file and loaded strictly through mmcaps's path), the feature being the classifier's
input; a file of another architecture is refused naming its first missing and unexpected keys, before any video."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.extract import ExtractConfig, Extractor
from pipeline.extract.ffmpeg import iter_frames
from pipeline.extract.frame_models import build_stream
from pipeline.extract.registry import StreamConfig
from pipeline.extract.s3d import S3DHowTo100M

WINDOW = 14  # torchvision's min_temporal_size: the cheapest window its avgpool accepts


@pytest.fixture(scope="module")
def tv_state(tmp_path_factory):
    """(torchvision S3D with non-trivial BatchNorm statistics, its state dict saved to a file)."""
    from torchvision.models.video import s3d

    torch.manual_seed(9)
    lib = s3d(weights=None).eval()
    for m in lib.modules():  # BatchNorm folding and eval mode are exercised
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("tv-s3d") / "s3d-kinetics.pth"
    torch.save(lib.state_dict(), path)
    return lib, path


def test_s3d_kinetics400_equals_torchvision(videos, tv_state):
    from torchvision.models.video import S3D_Weights

    lib, path = tv_state
    # the extractor's decoding for this stream: 5 fps, short side 256 (ffmpeg), no crop; the 320x180 video: 455x256
    frames = np.concatenate(list(iter_frames(str(videos["odd"]), fps=5.0, size=256, crop=False)))[:WINDOW]
    assert frames.shape == (WINDOW, 256, 455, 3)
    stream = {"backbone": "s3d-kinetics400", "weights": str(path), "fps": 5.0, "window": WINDOW}
    cfg = ExtractConfig(precision="fp32", streams={"s": stream})
    ex = Extractor(cfg, device="cpu")
    model, _ = ex.extra.model(ex, "s")
    assert (model.resize, model.squash, model.crop, model.dim) == (256, 256, 224, 1024)
    ours = ex.extra.window_rows(ex, "s", frames[None]).astype(np.float32)
    assert ex._weights["s"].startswith(f"file:{path.name}:sha256:")

    # torchvision: its transforms on the (T, C, H, W) uint8 window, its model; the feature is avgpool's output
    # averaged over its positions, and the logits are the classifier's 1x1x1 conv of exactly that vector
    pooled = []
    hook = lib.avgpool.register_forward_hook(lambda _m, _i, out: pooled.append(out))
    x = S3D_Weights.KINETICS400_V1.transforms()(torch.from_numpy(frames).permute(0, 3, 1, 2))
    with torch.no_grad():
        logits = lib(x[None])
    hook.remove()
    feature = pooled[0].mean(dim=(2, 3, 4))  # (1, 1024)
    conv = lib.classifier[1]
    torch.testing.assert_close(logits, feature @ conv.weight.flatten(1).T + conv.bias, rtol=1e-4, atol=1e-4)
    want = feature.numpy()
    cos = (ours * want).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(want, axis=1)
    print(f"s3d-kinetics400: cos fp32 {cos.min():.6f}")
    assert ours.shape == (1, 1024) and cos.min() >= 0.999, cos


def test_s3d_kinetics400_refuses_another_architecture_and_a_short_window(tmp_path):
    wrong = tmp_path / "s3d_howto100m.pth"
    torch.save(S3DHowTo100M(text=False).state_dict(), wrong)
    with pytest.raises(ValueError, match=r"not a torchvision S3D .*: missing features\.0\.0\.0\.weight \[64, 3, 1, 7, 7\]"
                       r" \(\+\d+ more\); unexpected conv1\.conv1\.weight \[64, 24, 2, 4, 4\]"):  # fmt: skip
        Extractor(ExtractConfig(streams={"s": {"backbone": "s3d-kinetics400", "weights": str(wrong)}}), device="cpu")
    with pytest.raises(ValueError, match=r"window 8 frames; torchvision's S3D needs at least 14"):
        build_stream(StreamConfig(backbone="s3d-kinetics400", window=8), seed=0)
    assert StreamConfig(backbone="s3d-kinetics400").resolved() == (15.0, 128, 128)  # the docs' frame_rate, clip_len
