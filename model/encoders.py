"""Modality encoders: identity for the pre-pooled video and text vectors, ResDAVEnet for audio.

ResDAVEnet can start from AVLnet's trained weights (:func:`load_avlnet_audio`) and be frozen
(:meth:`ResDAVEnet.freeze`), as the paper uses "a pre-trained DAVEnet model" with every feature backbone fixed.
Under DDP its BatchNorm can take its statistics over the clips of every process (:func:`sync_batchnorm`), so that
several processes train exactly as one process with their concatenated batch.

Axis letters used in shape comments:
    b  batch          f  mel bands (n_mels)      t  time frames
    c  channels       d  feature size
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
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

    ``sync = True`` (set by :func:`sync_batchnorm`) sums the statistics over the processes of the default group
    with an autograd-aware all-reduce (two of them: the mean first, then the squared deviations from it), so the
    normalisation, the running statistics and the gradients are those of the processes' concatenated batch.
    """

    sync: bool = False

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [b, c, t]; mask: Bool[b, t] of valid frames (None: all valid). Returns [b, c, t]."""
        if not self.training or mask is None:
            return super().forward(x)
        m = mask[:, None, :].to(x.dtype)  # (b, 1, t)
        synced = self.sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if synced:
            from torch.distributed.nn.functional import all_reduce  # noqa: PLC0415  deferred: torch.distributed, only for gathered DDP losses

            # (c + 1,): per-channel sums of valid frames and their count, summed over processes
            totals = all_reduce(torch.cat([(x * m).sum(dim=(0, 2)), m.sum()[None]]))
            count = totals[-1].clamp_min(1.0)
            mean = totals[:-1] / count  # (c,)
            var = all_reduce((((x - mean[None, :, None]) * m) ** 2).sum(dim=(0, 2))) / count  # (c,)
        else:
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
        self.blocks_per_stage = blocks_per_stage
        self.frozen = False

    def freeze(self) -> ResDAVEnet:
        """Fix the encoder: no parameter takes a gradient, and it stays in eval mode (BatchNorm uses and keeps its
        running statistics) even when the network around it is put in training mode."""
        self.frozen = True
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> ResDAVEnet:
        return super().train(mode and not self.frozen)

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


# --------------------------------------------------------------------------------------------- AVLnet weights

AVLNET_PREFIX = "DAVEnet."
# AVLnet's ResDavenet defines ``batchnorm1`` (a BatchNorm2d over the 1-channel input) but its forward never applies
# it, so its five entries are known and carry nothing this encoder uses.
AVLNET_UNUSED = frozenset(
    f"batchnorm1.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
)
_AVL_BLOCK_PART = {"conv1": "conv1", "bn1": "bn1", "conv2": "conv2", "bn2": "bn2", "downsample.0": "shortcut_conv",
                   "downsample.1": "shortcut_bn"}  # fmt: skip


@dataclass
class AudioWeightsReport:
    """What :func:`load_avlnet_audio` did: every encoder entry was filled from ``mapped`` AVLnet entries."""

    source: str
    mapped: int  # AVLnet ResDavenet entries copied into the encoder (= the encoder's state dict size)
    unused: list[str] = field(default_factory=list)  # ResDavenet entries AVLnet itself never uses (batchnorm1.*)
    other: list[str] = field(default_factory=list)  # entries outside DAVEnet.* (AVLnet's projection and gating)


def avlnet_key(ours: str, blocks_per_stage: int) -> str:
    """The AVLnet ResDavenet key (without ``DAVEnet.``) of one of our encoder's state-dict keys.

    ``stem.weight`` ↔ ``conv1.weight``; ``stem_bn.*`` ↔ ``bn1.*``; ``blocks.<k>.<part>`` ↔
    ``layer<k // n + 1>.<k % n>.<part>`` with n blocks per stage and ``shortcut_conv``/``shortcut_bn`` ↔
    ``downsample.0``/``downsample.1``.
    """
    if ours == "stem.weight":
        return "conv1.weight"
    if ours.startswith("stem_bn."):
        return "bn1." + ours.removeprefix("stem_bn.")
    match = re.match(r"^blocks\.(\d+)\.(conv1|bn1|conv2|bn2|shortcut_conv|shortcut_bn)\.(.+)$", ours)
    if not match:
        raise KeyError(f"ResDAVEnet key {ours!r} has no AVLnet counterpart")
    k, part, rest = int(match.group(1)), match.group(2), match.group(3)
    avl_part = {v: a for a, v in _AVL_BLOCK_PART.items()}[part]
    return f"layer{k // blocks_per_stage + 1}.{k % blocks_per_stage}.{avl_part}.{rest}"


def _read_state_dict(source: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[str, dict[str, torch.Tensor]]:
    if isinstance(source, Mapping):
        return "state dict", dict(source)
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: AVLnet checkpoint not found; put the file there (e.g. AVLnet's released model .pth) or unset "
            "audio_weights to train the audio encoder from scratch"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # bad pickles raise UnpicklingError, truncated archives RuntimeError
        raise ValueError(f"{path}: not a readable AVLnet checkpoint ({type(exc).__name__}: {exc})") from exc
    # AVLnet's amp checkpoint wraps the model's state dict as {"net": ..., "optimizer": ..., "amp": ...}.
    if isinstance(payload, Mapping) and isinstance(payload.get("net"), Mapping):
        payload = payload["net"]
    if not isinstance(payload, Mapping):
        raise ValueError(f"{path}: expected a state dict, got a {type(payload).__name__}")
    return path, dict(payload)


def load_avlnet_audio(encoder: ResDAVEnet, source: str | os.PathLike[str] | Mapping[str, Any]) -> AudioWeightsReport:
    """Copy AVLnet's trained ResDavenet into ``encoder`` with a strict key check.

    ``source``: a file read with ``torch.load(..., weights_only=True)`` or a state dict, in AVLnet's layout — the
    model's plain state dict (``Net.save_checkpoint``: ``DAVEnet.conv1.weight``, ``DAVEnet.layer1.0.bn1.weight``,
    ..., beside ``GU_*`` and ``DAVEnet_projection.*``), its amp checkpoint (``{"net": state dict}``), or
    ResDavenet's own state dict (the same keys without ``DAVEnet.``). AVLnet's convolutions are ``Conv2d`` over a
    ``[b, 1, f, t]`` image: the stem's ``[c, 1, f, 1]`` weight is our ``Conv1d`` ``[c, f, 1]`` and the blocks'
    ``[o, i, 1, k]`` weights are ``[o, i, k]``, the same numbers.

    Every encoder entry must be filled and every ResDavenet entry used (or be one of ``AVLNET_UNUSED``), with
    matching shapes; anything else raises ``ValueError`` listing the keys. Keys outside ``DAVEnet.`` are left
    alone and listed in the report.
    """
    where, state = _read_state_dict(source)
    has_prefix = any(k.startswith(AVLNET_PREFIX) for k in state)
    theirs = {
        k.removeprefix(AVLNET_PREFIX): v for k, v in state.items() if not has_prefix or k.startswith(AVLNET_PREFIX)
    }
    other = sorted(k for k in state if has_prefix and not k.startswith(AVLNET_PREFIX))
    ours = encoder.state_dict()
    wanted = {avlnet_key(k, encoder.blocks_per_stage): k for k in ours}
    missing = sorted(set(wanted) - set(theirs))
    unexpected = sorted(set(theirs) - set(wanted) - AVLNET_UNUSED)
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} ResDavenet entries (e.g. {missing[:4]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ResDavenet entries (e.g. {unexpected[:4]})")
    converted: dict[str, torch.Tensor] = {}
    for avl, key in wanted.items():
        if avl not in theirs:
            continue
        value, target = theirs[avl], ours[key]
        if not isinstance(value, torch.Tensor):
            problems.append(f"{avl} is a {type(value).__name__}, not a tensor")
            continue
        if value.dim() == 4 and target.dim() == 3:
            # Conv2d [o, i, 1, k] → Conv1d [o, i, k]; the stem's [o, 1, f, 1] → [o, f, 1] (height is the band axis)
            value = (
                value.reshape(value.shape[0], -1, value.shape[-1])
                if value.shape[2] == 1
                else value.flatten(1)[..., None]
            )
        if tuple(value.shape) != tuple(target.shape):
            problems.append(f"{avl}: shape {tuple(theirs[avl].shape)} does not fit {key} {tuple(target.shape)}")
            continue
        converted[key] = value.to(target.dtype)
    if problems:
        raise ValueError(
            f"{where}: not an AVLnet ResDavenet for this encoder (stem {encoder.stem.out_channels}, widths "
            f"{[b.conv2.out_channels for b in encoder.blocks[:: encoder.blocks_per_stage]]}, "
            f"{encoder.blocks_per_stage} blocks a stage): " + "; ".join(problems)
        )
    encoder.load_state_dict(converted, strict=True)
    return AudioWeightsReport(
        source=where, mapped=len(converted), unused=sorted(AVLNET_UNUSED & set(theirs)), other=other
    )


def sync_batchnorm(module: nn.Module, enabled: bool = True) -> int:
    """Switch cross-process statistics on (or off) for every :class:`MaskedBatchNorm1d` in ``module``; returns how
    many. Only takes effect when a process group of more than one process is initialised."""
    count = 0
    for m in module.modules():
        if isinstance(m, MaskedBatchNorm1d):
            m.sync = enabled
            count += 1
    return count
