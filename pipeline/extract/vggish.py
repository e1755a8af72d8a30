"""VGGish (Hershey et al., 2017) in the ``torchvggish`` weights layout, and its log-mel patches, written for mmcaps.

The recipe (torchvggish's ``vggish_params`` / ``mel_features``, the port of the TensorFlow release):

- 16 kHz mono; 25 ms periodic-Hann windows (400 samples) every 10 ms (160), no padding; magnitude of a 512-point
  real FFT (257 bins);
- 64 triangular mel bands on the HTK scale (``1127 ln(1 + f / 700)``) between 125 and 7500 Hz, equally spaced in
  mel, the DC bin given weight 0; ``log(mel + 0.01)``;
- patches of 96 frames (0.96 s) every 96 frames (no overlap), an incomplete last patch dropped;
- the network: four VGG stages (conv 3×3 + ReLU, max-pool 2×2; channels 64, 128, 256×2, 512×2), the ``[512, 6, 4]``
  map flattened in (row, column, channel) order as TensorFlow did, three fully connected layers 12288 → 4096 →
  4096 → 128, each with ReLU. Features are this 128-d embedding; the release's PCA whitening and 8-bit
  quantisation (a separate file) are not applied.

State-dict keys: ``features.{0,3,6,8,11,13}.{weight,bias}`` and ``embeddings.{0,2,4}.{weight,bias}``
(``vggish-10086976.pth`` loads strictly).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.extract.registry import RANDOM, StreamConfig
from pipeline.extract.stream_weights import StreamModel, load_strict, read_state_dict, weights_id

SAMPLE_RATE = 16000
WINDOW, HOP, FFT = 400, 160, 512  # samples: 25 ms, 10 ms, the next power of two
BANDS, FMIN, FMAX, LOG_OFFSET = 64, 125.0, 7500.0, 0.01
PATCH = 96  # frames per example (0.96 s), also the hop between examples
EMBEDDING = 128


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_matrix() -> np.ndarray:
    """float64 ``[257, 64]``: the triangular HTK mel weights (spectrogram rows @ matrix = mel rows)."""
    bins_mel = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, FFT // 2 + 1))
    edges = np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), BANDS + 2)
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lo) / (mid - lo)
    falling = (hi - bins_mel[:, None]) / (hi - mid)
    out = np.maximum(0.0, np.minimum(rising, falling))
    out[0, :] = 0.0  # the DC bin contributes to no band
    return out


def log_mel_examples(wave: np.ndarray) -> np.ndarray:
    """16 kHz mono float ``[n]`` → float32 ``[k, 96, 64]`` log-mel patches, ``k = (frames - 96) // 96 + 1``."""
    wave = np.asarray(wave, np.float64)
    n_frames = 1 + (len(wave) - WINDOW) // HOP if len(wave) >= WINDOW else 0
    k = 1 + (n_frames - PATCH) // PATCH if n_frames >= PATCH else 0
    if k == 0:
        return np.zeros((0, PATCH, BANDS), np.float32)
    n_frames = k * PATCH  # frames past the last whole patch are never used
    idx = np.arange(WINDOW)[None, :] + HOP * np.arange(n_frames)[:, None]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)  # periodic Hann
    spectrum = np.abs(np.fft.rfft(wave[idx] * hann, FFT))
    mel = np.log(spectrum @ mel_matrix() + LOG_OFFSET)
    return mel.reshape(k, PATCH, BANDS).astype(np.float32)


class VGGish(nn.Module):
    """``[B, 1, 96, 64]`` log-mel patches → ``[B, 128]`` embeddings (torchvggish's ``VGG`` with postprocess off)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).permute(0, 2, 3, 1)  # (b, 6, 4, 512): TensorFlow's flattening order
        return self.embeddings(x.reshape(x.shape[0], -1))


def build_vggish(cfg: StreamConfig, *, seed: int) -> StreamModel:
    """VGGish (eval, CPU) for the ``vggish`` stream, a weights file loaded strictly."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = VGGish()
    if cfg.weights != RANDOM:
        load_strict(net, read_state_dict(cfg.weights, "vggish"), where=cfg.weights, arch="torchvggish VGGish")
        ident = weights_id(cfg.weights)
    else:
        ident = f"random:vggish:seed{seed}"
    return StreamModel(net=net.eval(), dim=EMBEDDING, weights_id=ident, kind="audio")
