"""The 2D and 3D backbones, their weights, and the calibration that makes ``random`` weights usable.

``weights`` takes three kinds of value (pipeline/extract/README.md "Weights and real data"):

- ``"random"``: seeded initialisation with damped residual branches (:data:`RESIDUAL_GAMMA`), then BatchNorm
  statistics re-estimated on a fixed, seeded calibration
  set (2D: 64 smooth-noise images with flat-coloured rectangles, 128×128, cheaper than 224 and giving the same per-channel statistics up to
  noise; 3D: 16 such clips at the architecture's input size), every BatchNorm's running mean and variance being
  the average of its batch statistics over that set. A network at random initialisation in eval mode has
  pooled features with norms around 1e9 and carries no linearly decodable information; after this calibration
  features have sane scales and colour/shape are linearly decodable well above chance. It is a stand-in for
  tests and the demo, not a pretrained network. The calibrated state dict is cached in
  ``<cache_dir>/backbones/<arch>-random-seed<seed>-<CALIBRATION>.pt`` (and in-process), so later processes load it.
- a torchvision weights name (2D only, e.g. ``IMAGENET1K_V1``, what the HowTo100M release used): read from
  ``$TORCH_HOME/hub/checkpoints/``; never downloaded unless ``download=True``; a missing file fails at once.
- a local file: a state dict (plain, or under ``state_dict``/``model_state``/``model``, keys optionally
  prefixed ``module.``), loaded strictly; the classifier (``fc.*`` / hub ``proj``) is dropped explicitly.

Every backbone maps a preprocessed batch to ``[B, D]`` features; :class:`Backbone` carries the module with its
preprocessing recipe and the weights id that :class:`pipeline.extract.Extractor` records in ``meta.json``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.extract.config import RANDOM, Rgb2dConfig, Rgb3dConfig, is_weights_file
from pipeline.extract.recipes import CALIBRATION, IMAGENET_MEAN, IMAGENET_STD, RECIPES_3D
from pipeline.extract.resnext3d import load_resnext_state, resnext101
from storage.hashing import sha256_local

# Scale of each residual branch's last BatchNorm (γ) in a random network. At γ = 1 the 50 random residual branches
# of ResNet-152 drown the image's signal (a linear probe for colour on the synthetic corpus scores at chance); at
# 0.2 the shortcut path keeps it (colour 0.96, shape 0.71 held-out on the tiny corpus, 3 classes each), while every
# block still contributes. Same idea as torchvision's ``zero_init_residual`` (Goyal et al., 2017).
RESIDUAL_GAMMA = 0.2


@dataclass
class Backbone:
    """A feature network with what is needed to feed it and to record it."""

    net: nn.Module  # [B, 3, H, W] (2D) or [B, 3, T, H, W] (3D) → [B, dim]
    dim: int
    weights_id: str


class ResNet2D(nn.Module):
    """torchvision ResNet-152 up to the last residual stage, spatial mean: ``[B, 3, H, W] → [B, 2048]``."""

    def __init__(self) -> None:
        super().__init__()
        import torchvision  # noqa: PLC0415  deferred: torchvision

        self.net = torchvision.models.resnet152(weights=None)
        self.net.fc = nn.Identity()  # features stop before the classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        return x.mean(dim=(2, 3))  # (b, c)


class HubTrunk(nn.Module):
    """A pytorchvideo hub network without its classifier: ``[B, 3, T, H, W] → [B, 2048]``.

    The stem and stages run as built; the head's pooling becomes a global mean over (T, H, W) (equal to the hub's
    AvgPool3d when the input has the training size, and defined for any other size). X3D keeps its projection
    (1×1×1 conv + BN + ReLU before the pool, 1×1×1 conv + ReLU after it).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        head = net.blocks[-1]
        self.projected = hasattr(head.pool, "pre_conv")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.net.blocks[:-1]:
            x = block(x)
        pool = self.net.blocks[-1].pool
        if self.projected:
            x = pool.pre_act(pool.pre_norm(pool.pre_conv(x)))
            x = x.mean(dim=(2, 3, 4), keepdim=True)
            x = pool.post_act(pool.post_conv(x))
            return x.flatten(1)
        return x.mean(dim=(2, 3, 4))  # (b, c)


# -- construction ----------------------------------------------------------------------------------------------------
def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _make_3d(arch: str) -> tuple[nn.Module, nn.Module]:
    """(feature module, module whose state dict checkpoints hold) for a 3D architecture."""
    if arch == "resnext101":
        net = resnext101()
        return net, net
    from pytorchvideo.models import hub  # noqa: PLC0415  deferred: pytorchvideo, only for its networks

    builders = {"slow_r50": hub.slow_r50, "x3d_m": hub.x3d_m, "r2plus1d_r50": hub.r2plus1d_r50}
    if arch not in builders:
        raise ValueError(f"unknown 3D architecture {arch!r}; choose one of {sorted(RECIPES_3D)}")
    hub_net = builders[arch](pretrained=False)
    return HubTrunk(hub_net), hub_net


# -- calibration of random weights -----------------------------------------------------------------------------------
def smooth_noise(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Smooth random pixels on the 0-255 scale: sum of noise octaves upsampled to ``shape`` = [N, 3, (T,) H, W]."""
    n, c, *spatial = shape
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    out = torch.zeros(shape)
    for level, weight in ((4, 0.5), (16, 0.3), (64, 0.2)):
        low = [max(1, min(s, s * level // max(spatial))) for s in spatial]
        noise = torch.rand((n, c, *low), generator=generator)
        out += weight * nn.functional.interpolate(noise, size=spatial, mode=mode, align_corners=False)
    return (out * 255.0).clamp(0, 255)


def calibration_pixels(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Calibration inputs on the 0-255 scale, [N, 3, (T,) H, W]: smooth noise with 1-3 flat-coloured rectangles.

    Noise alone leaves BatchNorm statistics that flat regions and sharp edges (most real and synthetic frames)
    overshoot by orders of magnitude in the deep layers; the rectangles put such content in the set.
    """
    x = smooth_noise(shape, generator)
    h = shape[-2]
    for i in range(shape[0]):
        for _ in range(int(torch.randint(1, 4, (1,), generator=generator))):
            bh, bw = (int(v) for v in torch.randint(h // 8, h // 2, (2,), generator=generator))
            y0, x0 = (int(v) for v in torch.randint(0, h - h // 8, (2,), generator=generator))
            colour = torch.rand(3, generator=generator) * 255
            x[i, :, ..., y0 : y0 + bh, x0 : x0 + bw] = colour.view(3, *([1] * (x.ndim - 2)))
    return x


@torch.no_grad()
def damp_residual_branches(net: nn.Module, gamma: float = RESIDUAL_GAMMA) -> int:
    """Set the last BatchNorm γ of every residual branch to ``gamma``; returns how many branches were damped.

    Knows torchvision's and our ResNeXt's bottlenecks (``bn3``) and pytorchvideo's ``BottleneckBlock``
    (``norm_c``).
    """
    count = 0
    for module in net.modules():
        last = getattr(module, "bn3", None) or getattr(module, "norm_c", None)
        if isinstance(last, nn.modules.batchnorm._BatchNorm) and last.weight is not None:
            last.weight.fill_(gamma)
            count += 1
    return count


@torch.no_grad()
def calibrate_batchnorm(net: nn.Module, batches: list[torch.Tensor]) -> None:
    """Re-estimate every BatchNorm's running statistics as the average of its batch statistics over ``batches``."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    net.eval()
    for bn in bns:
        bn.train()
    for batch in batches:
        net(batch)
    net.eval()
    for bn in bns:
        bn.momentum = 0.1


def _calibration_2d(seed: int, size: int = 128) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return [(calibration_pixels((16, 3, size, size), g) / 255.0 - mean) / std for _ in range(4)]


def _calibration_3d(arch: str, seed: int) -> list[torch.Tensor]:
    r = RECIPES_3D[arch]
    g = torch.Generator().manual_seed(seed + 2)
    mean = torch.tensor(r.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(r.std).view(1, 3, 1, 1, 1)
    return [(calibration_pixels((4, 3, r.frames, r.size, r.size), g) * r.scale - mean) / std for _ in range(4)]


_MEMO: dict[str, dict[str, torch.Tensor]] = {}
_MEMO_LOCK = threading.Lock()


def _random_state(key: str, holder: nn.Module, feature_net: nn.Module, batches, cache_dir: str | None) -> None:
    """Load the calibrated state for ``key`` (memo, then cache file) or calibrate ``holder`` and store it."""
    path = Path(cache_dir) / "backbones" / f"{key}.pt" if cache_dir else None
    with _MEMO_LOCK:
        state = _MEMO.get(key)
        if state is None and path is not None and path.is_file():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:
                state = None  # a damaged cache file is recomputed, never trusted
        if state is None:
            damp_residual_branches(holder)
            calibrate_batchnorm(feature_net, batches() if callable(batches) else batches)
            state = {k: v.detach().clone() for k, v in holder.state_dict().items()}
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
                torch.save(state, tmp)
                os.replace(tmp, path)
        _MEMO[key] = state
    holder.load_state_dict(state, strict=True)


# -- loading ---------------------------------------------------------------------------------------------------------
def _read_checkpoint(path: str, what: str) -> Mapping:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{path}: {what} weights file not found; put the file there or set weights=random")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot load {what} weights with weights_only=True ({exc})") from exc


def _plain_state(checkpoint: Mapping, *, where: str, drop_prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    state = checkpoint
    for wrapper in ("state_dict", "model_state", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    if not isinstance(state, Mapping):
        raise ValueError(f"{where}: not a state dict")
    out = {}
    for key, value in state.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        if name.startswith(drop_prefixes):
            continue  # the classifier: features are taken before it
        out[name] = value
    return out


def _file_id(path: str) -> str:
    return f"file:{Path(path).name}:sha256:{sha256_local(Path(path).expanduser())[:12]}"


def _torchvision_weights(value: str, download: bool):  # -> torchvision.models.WeightsEnum member
    """The named ResNet-152 weights; their file must be in ``$TORCH_HOME/hub/checkpoints`` unless ``download``."""
    import torchvision  # noqa: PLC0415  deferred: torchvision's import costs seconds and only named weights need it

    enum = torchvision.models.ResNet152_Weights
    name = value.split(".")[-1]
    if name not in enum.__members__:
        raise ValueError(f"rgb2d weights {value!r}: not 'random', a file, or one of {sorted(enum.__members__)}")
    weights = enum[name]
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    file = hub_dir / os.path.basename(weights.url)
    if not file.is_file() and not download:
        raise FileNotFoundError(
            f"rgb2d weights {weights}: {file} not found. Download {weights.url} into {hub_dir} "
            "(set TORCH_HOME to choose the folder), pass the file's path as rgb2d.weights, or allow download=True"
        )
    return weights


def check_weights(cfg: Rgb2dConfig | Rgb3dConfig, *, download: bool = False) -> None:
    """Fail at once, naming where to put the file, when ``cfg.weights`` names weights that are not here — without
    building the network (extraction builds backbones only when a video needs them)."""
    if cfg.weights == RANDOM:
        return
    what = "rgb2d" if isinstance(cfg, Rgb2dConfig) else "rgb3d"
    if is_weights_file(cfg.weights):
        if not Path(cfg.weights).expanduser().is_file():
            raise FileNotFoundError(
                f"{cfg.weights}: {what} weights file not found; put the file there or set weights=random"
            )
    elif what == "rgb3d":
        raise ValueError(f"rgb3d weights {cfg.weights!r}: expected 'random' or a path to a checkpoint file")
    else:
        _torchvision_weights(cfg.weights, download)


def build_2d(cfg: Rgb2dConfig, *, seed: int, cache_dir: str | None = None, download: bool = False) -> Backbone:
    """ResNet-152 trunk (eval mode, CPU) with ``cfg.weights``; see the module docstring for the weights rules."""
    net = _seeded(seed, ResNet2D).eval()
    if cfg.weights == RANDOM:
        key = f"{cfg.arch}-random-seed{seed}-{CALIBRATION}"
        _random_state(key, net.net, net, lambda: _calibration_2d(seed), cache_dir)
        return Backbone(net, 2048, f"random:{cfg.arch}:seed{seed}:{CALIBRATION}")
    if is_weights_file(cfg.weights):
        state = _plain_state(_read_checkpoint(cfg.weights, "rgb2d"), where=cfg.weights, drop_prefixes=("fc.",))
        try:
            net.net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{cfg.weights}: not a torchvision ResNet-152 state dict: {str(exc)[:600]}") from exc
        return Backbone(net, 2048, _file_id(cfg.weights))
    weights = _torchvision_weights(cfg.weights, download)
    state = weights.get_state_dict(progress=False, check_hash=False)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    net.net.load_state_dict(state, strict=True)
    return Backbone(net, 2048, f"torchvision:{weights}")


def build_3d(cfg: Rgb3dConfig, *, seed: int, cache_dir: str | None = None) -> Backbone:
    """ResNeXt-101 (or a pytorchvideo hub network) in eval mode on the CPU, with ``cfg.weights``."""
    net, holder = _seeded(seed, lambda: _make_3d(cfg.arch))
    net.eval()
    if cfg.weights == RANDOM:
        key = f"{cfg.arch}-random-seed{seed}-{CALIBRATION}"
        _random_state(key, holder, net, lambda: _calibration_3d(cfg.arch, seed), cache_dir)
        return Backbone(net, 2048, f"random:{cfg.arch}:seed{seed}:{CALIBRATION}")
    if not is_weights_file(cfg.weights):
        raise ValueError(f"rgb3d weights {cfg.weights!r}: expected 'random' or a path to a checkpoint file")
    checkpoint = _read_checkpoint(cfg.weights, "rgb3d")
    if cfg.arch == "resnext101":
        load_resnext_state(net, checkpoint, where=cfg.weights)
    else:
        state = _plain_state(checkpoint, where=cfg.weights, drop_prefixes=("blocks.5.proj.", "blocks.4.proj."))
        missing, unexpected = holder.load_state_dict(state, strict=False)
        missing = [k for k in missing if ".proj." not in k]
        if missing or unexpected:
            raise ValueError(
                f"{cfg.weights}: does not match {cfg.arch}: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
    return Backbone(net, 2048, _file_id(cfg.weights))
