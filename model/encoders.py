"""Modality encoders: identity for the pre-pooled video and text vectors, ResDAVEnet for audio.

Axis letters used in shape comments:
    b  batch          f  mel bands (n_mels)      t  time frames
    c  channels       d  feature size
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def lengths_after_stride(lengths: torch.Tensor, stride: int) -> torch.Tensor:
    """Valid frames after a conv with ``stride``, kernel ``k`` and padding ``(k-1)//2`` (odd k): ceil(t/stride)."""
    return torch.div(lengths + stride - 1, stride, rounding_mode="floor")


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """Bool[b, t]: True on the first ``lengths[b]`` frames."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over (batch, time) that takes its training statistics from valid frames only.

    Plain BatchNorm would let zero padding shift the batch mean and variance, so the features of a clip
    would depend on how much padding its batch partners needed. In eval mode this is plain BatchNorm.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [b, c, t]; mask: Bool[b, t] of valid frames (None: all valid). Returns [b, c, t]."""
        if not self.training or mask is None:
            return super().forward(x)
        m = mask[:, None, :].to(x.dtype)  # (b, 1, t)
        count = m.sum().clamp_min(1.0)
        mean = (x * m).sum(dim=(0, 2)) / count  # (c,)
        var = (((x - mean[None, :, None]) * m) ** 2).sum(dim=(0, 2)) / count  # (c,) biased, used to normalise
        with torch.no_grad():
            self.num_batches_tracked += 1
            unbiased = var * count / (count - 1).clamp_min(1.0)
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), self.momentum)
        y = (x - mean[None, :, None]) * torch.rsqrt(var[None, :, None] + self.eps)
        return y * self.weight[None, :, None] + self.bias[None, :, None]


class SpeechBasicBlock(nn.Module):
    """Residual block of two (1 x k) convs over time; the first may have stride 2 (then a 1x1 shortcut)."""

    def __init__(self, in_ch: int, out_ch: int, *, kernel: int, stride: int) -> None:
        super().__init__()
        pad = (kernel - 1) // 2
        self.stride = stride
        self.conv1 = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = MaskedBatchNorm1d(out_ch)
        self.conv2 = nn.Conv1d(out_ch, out_ch, kernel, padding=pad, bias=False)
        self.bn2 = MaskedBatchNorm1d(out_ch)
        self.shortcut_conv: nn.Conv1d | None = None
        self.shortcut_bn: MaskedBatchNorm1d | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut_conv = nn.Conv1d(in_ch, out_ch, 1, stride=stride, bias=False)
            self.shortcut_bn = MaskedBatchNorm1d(out_ch)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [b, c_in, t] with zeros past ``lengths``. Returns ([b, c_out, t'], lengths'), zeros past lengths'."""
        out_lengths = lengths_after_stride(lengths, self.stride)
        out = self.conv1(x)  # (b, c_out, t')
        mask = frame_mask(out_lengths, out.shape[-1])
        out = F.relu(self.bn1(out, mask))
        # Re-zero the padding so the next conv sees the same zeros as its own padding would give an unpadded clip.
        out = out * mask[:, None, :]
        out = self.bn2(self.conv2(out), mask)
        residual = x
        if self.shortcut_conv is not None and self.shortcut_bn is not None:
            residual = self.shortcut_bn(self.shortcut_conv(x), mask)
        out = F.relu(out + residual) * mask[:, None, :]
        return out, out_lengths


class ResDAVEnet(nn.Module):
    """Audio encoder over a log-mel spectrogram (Harwath et al. 2018, as used by AVLnet), mean-pooled in time.

    A (n_mels x 1) conv to ``stem_width`` channels, then one stage per entry of ``widths``, each of
    ``blocks_per_stage`` basic blocks whose first has stride 2. Pooling averages the valid frames only, and
    padding is zeroed after every layer (and left out of batch statistics), so padding a clip changes nothing.
    """

    def __init__(
        self,
        *,
        n_mels: int = 40,
        stem_width: int = 128,
        widths: Sequence[int] = (128, 256, 512, 1024),
        blocks_per_stage: int = 2,
        kernel: int = 9,
    ) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"ResDAVEnet kernel must be odd (same padding), got {kernel}")
        self.n_mels = n_mels
        # A (n_mels x 1) 2D conv over a [1, f, t] image equals a kernel-1 1D conv with f input channels.
        self.stem = nn.Conv1d(n_mels, stem_width, 1, bias=False)
        self.stem_bn = MaskedBatchNorm1d(stem_width)
        blocks: list[SpeechBasicBlock] = []
        in_ch = stem_width
        for width in widths:
            for i in range(blocks_per_stage):
                blocks.append(SpeechBasicBlock(in_ch, width, kernel=kernel, stride=2 if i == 0 else 1))
                in_ch = width
        self.blocks = nn.ModuleList(blocks)
        self.out_dim = in_ch

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """mel: [b, f, t] log-mel frames; lengths: Long[b] valid frames (None: all t). Returns [b, d] pooled."""
        if mel.dim() != 3 or mel.shape[1] != self.n_mels:
            raise ValueError(f"audio must be [batch, {self.n_mels}, frames], got {tuple(mel.shape)}")
        b, _, t = mel.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=mel.device)
        lengths = lengths.to(device=mel.device, dtype=torch.long).clamp(0, t)
        mask = frame_mask(lengths, t)
        x = mel * mask[:, None, :]  # (b, f, t) padding may hold anything; make it zero
        x = F.relu(self.stem_bn(self.stem(x), mask)) * mask[:, None, :]  # (b, c, t)
        for block in self.blocks:
            x, lengths = block(x, lengths)
        # Mean over valid frames; a clip with no valid frame pools to zeros rather than NaN.
        return x.sum(dim=-1) / lengths.clamp_min(1)[:, None].to(x.dtype)  # (b, c)
