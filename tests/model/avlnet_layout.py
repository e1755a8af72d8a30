"""AVLnet's ResDavenet written from its published architecture, to make checkpoints in AVLnet's layout for tests.

The module tree follows roudimit/AVLnet ``model_davenet.py`` so that ``state_dict()`` has AVLnet's key names:
``batchnorm1`` (defined, never applied in forward), ``conv1`` (a ``Conv2d(1, c, (f, 1))`` over the
``[b, 1, f, t]`` spectrogram), ``bn1``, then ``layer1..layer4`` of ``SpeechBasicBlock``s (``conv1``/``conv2``:
``Conv2d`` with ``(1, k)`` kernels, padding ``(0, k // 2)``; the first block of a stage has stride 2 and a
``downsample`` = ``Sequential(Conv2d 1x1, BatchNorm2d)``). AVLnet's ``Net`` stores it under ``DAVEnet.`` beside its
projection and gating units (``DAVEnet_projection``, ``GU_audio``, ``GU_video``); :func:`avlnet_checkpoint` writes
that whole layout, with the real shapes for the given widths (the real model: 131 ``DAVEnet.*`` entries plus 10).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn


class _Block(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int) -> None:
        super().__init__()
        pad = (0, kernel // 2)
        self.conv1 = nn.Conv2d(in_ch, out_ch, (1, kernel), stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, (1, kernel), padding=pad, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + residual)


class AvlnetResDavenet(nn.Module):
    """[b, f, t] log-mel → [b, c, t / 16] (AVLnet's encoder output, before its pooling)."""

    def __init__(
        self, *, n_mels: int = 40, stem: int = 128, widths: Sequence[int] = (128, 256, 512, 1024), blocks: int = 2
    ) -> None:
        super().__init__()
        self.batchnorm1 = nn.BatchNorm2d(1)
        self.conv1 = nn.Conv2d(1, stem, (n_mels, 1), bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        in_ch = stem
        for s, width in enumerate(widths, start=1):
            layer = [_Block(in_ch, width, 9, 2)] + [_Block(width, width, 9, 1) for _ in range(blocks - 1)]
            setattr(self, f"layer{s}", nn.Sequential(*layer))
            in_ch = width
        self.n_stages = len(widths)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(mel[:, None])))  # (b, c, 1, t)
        for s in range(1, self.n_stages + 1):
            x = getattr(self, f"layer{s}")(x)
        return x.squeeze(2)


def randomise_batchnorm(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial affine parameters and running statistics, so a mapping error cannot hide behind 1s and 0s."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.1 * torch.randn(n, generator=g)
            m.running_mean.data = 0.1 * torch.randn(n, generator=g)
            m.running_var.data = 0.5 + torch.rand(n, generator=g)
            m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))


def avlnet_state_dict(encoder: AvlnetResDavenet, embed_dim: int = 64, video_dim: int = 32) -> dict[str, torch.Tensor]:
    """AVLnet ``Net.state_dict()``: the encoder under ``DAVEnet.`` plus the projection and the gated units."""
    feat = encoder.layer4[0].conv2.out_channels if hasattr(encoder, "layer4") else 1024
    state = {f"DAVEnet.{k}": v.clone() for k, v in encoder.state_dict().items()}
    state.update(
        {
            "DAVEnet_projection.weight": torch.randn(embed_dim, feat),
            "DAVEnet_projection.bias": torch.randn(embed_dim),
            "GU_audio.fc.weight": torch.randn(feat, feat),
            "GU_audio.fc.bias": torch.randn(feat),
            "GU_audio.cg.fc.weight": torch.randn(feat, feat),
            "GU_audio.cg.fc.bias": torch.randn(feat),
            "GU_video.fc.weight": torch.randn(embed_dim, video_dim),
            "GU_video.fc.bias": torch.randn(embed_dim),
            "GU_video.cg.fc.weight": torch.randn(embed_dim, embed_dim),
            "GU_video.cg.fc.bias": torch.randn(embed_dim),
        }
    )
    return state


def avlnet_checkpoint(path: Path, *, seed: int = 0, **sizes: object) -> tuple[Path, AvlnetResDavenet]:
    """Write an AVLnet-layout model checkpoint (``torch.save(net.state_dict())``) with a seeded random ResDavenet of
    ``sizes`` (``stem``, ``widths``, ``blocks``, ``n_mels``); returns the path and the encoder (eval mode)."""
    torch.manual_seed(seed)
    encoder = AvlnetResDavenet(**sizes)  # type: ignore[arg-type]
    randomise_batchnorm(encoder, seed)
    torch.save(avlnet_state_dict(encoder), path)
    return path, encoder.eval()
