"""3D ResNeXt-101 of Hara et al. (2018), with the module names of the released Kinetics checkpoints.

Shapes: input ``[B, 3, T, H, W]`` (T = 16, H = W = 112 in the HowTo100M recipe), output ``[B, 2048]``.

The parameter names follow ``kenshohara/3D-ResNets-PyTorch`` (``conv1``, ``bn1``, ``layer{1..4}.{i}.conv{1,2,3}``,
``layer{i}.0.downsample.{0,1}``), so both layouts in circulation load strictly through :func:`load_resnext_state`:

- ``resnext101.pth`` (what the HowTo100M extractor loads): a plain state dict, keys ``conv1.weight``, ...
- ``resnext-101-kinetics.pth`` (the training checkpoint): ``{"state_dict": {"module.conv1.weight": ...}, ...}``.

Both carry the 400-way Kinetics classifier ``fc.weight``/``fc.bias``; features stop before it, so those two keys are
dropped explicitly (and only those).  Checkpoints written by PyTorch < 0.4 have no ``num_batches_tracked`` buffers;
BatchNorm fills them in when the state dict carries no version metadata, so strict loading still holds.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

CLASSIFIER_KEYS = ("fc.weight", "fc.bias")


class ResNeXtBottleneck(nn.Module):
    """Grouped 3×3×3 bottleneck; output channels ``2 * planes``."""

    expansion = 2

    def __init__(
        self, inplanes: int, planes: int, cardinality: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        mid = cardinality * (planes // 32)
        self.conv1 = nn.Conv3d(inplanes, mid, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.conv2 = nn.Conv3d(mid, mid, kernel_size=3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm3d(mid)
        self.conv3 = nn.Conv3d(mid, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class ResNeXt3D(nn.Module):
    """3D ResNeXt trunk with shortcut type B (1×1×1 projection when the shape changes).

    ``forward(x [B, 3, T, H, W]) -> [B, 2048]``: the last stage averaged over time and space. For the recipe's
    16×112×112 input the last stage is 1×4×4 and the mean equals the original ``AvgPool3d((1, 4, 4))``.
    """

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 23, 3), cardinality: int = 32) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv3d(3, 64, kernel_size=7, stride=(1, 2, 2), padding=(3, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(128, layers[0], cardinality, stride=1)
        self.layer2 = self._make_layer(256, layers[1], cardinality, stride=2)
        self.layer3 = self._make_layer(512, layers[2], cardinality, stride=2)
        self.layer4 = self._make_layer(1024, layers[3], cardinality, stride=2)
        self.out_dim = 1024 * ResNeXtBottleneck.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                # The original initialisation (He normal over kernel_t * kernel_h * out_channels).
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, (2.0 / n) ** 0.5)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, cardinality: int, stride: int) -> nn.Sequential:
        out_planes = planes * ResNeXtBottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_planes:
            downsample = nn.Sequential(
                nn.Conv3d(self.inplanes, out_planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm3d(out_planes),
            )
        layers = [ResNeXtBottleneck(self.inplanes, planes, cardinality, stride, downsample)]
        self.inplanes = out_planes
        layers += [ResNeXtBottleneck(self.inplanes, planes, cardinality) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: [B, 3, T, H, W] mean-subtracted clips → [B, 2048]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3, 4))  # (b, c)


def resnext101(cardinality: int = 32) -> ResNeXt3D:
    """ResNeXt-101 (blocks 3, 4, 23, 3), cardinality 32: the HowTo100M 3D backbone."""
    return ResNeXt3D((3, 4, 23, 3), cardinality)


def normalise_checkpoint_keys(checkpoint: Mapping, *, where: str) -> dict[str, torch.Tensor]:
    """The plain trunk state dict from either checkpoint layout (``state_dict`` wrapper, ``module.`` prefix, fc)."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"{where}: not a state dict (expected a dict of tensors or a dict with 'state_dict')")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{where}: entry {key!r} is not a tensor")
        name = key[len("module.") :] if key.startswith("module.") else key
        if name in CLASSIFIER_KEYS:
            continue  # the Kinetics classifier; features are taken before it
        out[name] = value
    return out


def load_resnext_state(model: nn.Module, checkpoint: Mapping, *, where: str) -> None:
    """Load either checkpoint layout into ``model`` strictly; errors name ``where`` and the mismatching keys."""
    state = normalise_checkpoint_keys(checkpoint, where=where)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{where}: does not match the 3D ResNeXt-101 layout: {str(exc)[:800]}") from exc
