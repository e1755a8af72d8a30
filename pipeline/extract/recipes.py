"""The preprocessing recipes of the backbones, as data (no torch): ImageNet normalisation for 2D, and per 3D
architecture its frame rate, window, size and normalisation. The extract fingerprint reads them, so computing a
fingerprint needs neither torch nor torchvision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# How "random" backbones are calibrated (pipeline.extract.backbones); bump when the calibration set or procedure
# changes: it changes "random" features, so it enters the visual streams' fingerprints.
CALIBRATION = "bncal2-res0.2"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Recipe3D:
    """Decoding and normalisation of one 3D architecture: ``(pixel * scale - mean) / std`` per channel."""

    fps: float
    frames: int  # window length (non-overlapping windows; the last one padded with frames of pixel value 0)
    size: int  # short side after scaling, then a centre crop size × size
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float  # 1.0: pixel values on the 0-255 scale; 1/255: on 0-1

    def payload(self) -> dict:
        return asdict(self)


RECIPES_3D: dict[str, Recipe3D] = {
    # HowTo100M / Hara et al.: 0-255 scale, mean subtracted, std 1.
    "resnext101": Recipe3D(fps=24.0, frames=16, size=112, mean=(110.6, 103.2, 96.3), std=(1.0, 1.0, 1.0), scale=1.0),
    # pytorchvideo Kinetics models: 0-1 scale, mean 0.45, std 0.225; frame rates are 30 fps / sampling stride.
    "slow_r50": Recipe3D(fps=30 / 8, frames=8, size=256, mean=(0.45,) * 3, std=(0.225,) * 3, scale=1 / 255),
    "x3d_m": Recipe3D(fps=30 / 5, frames=16, size=256, mean=(0.45,) * 3, std=(0.225,) * 3, scale=1 / 255),
    "r2plus1d_r50": Recipe3D(fps=30 / 4, frames=16, size=224, mean=(0.45,) * 3, std=(0.225,) * 3, scale=1 / 255),
}
