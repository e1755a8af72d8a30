"""What the extra streams' networks share: :class:`StreamModel`, reading a local weights file (``weights_only=True``
or safetensors; TorchScript refused with the line that converts it), strict loading that names the first missing
and unexpected keys with their shapes, building without the initialisation a file replaces, and the seeded
BatchNorm calibration of random stand-ins (the calibration set of :mod:`pipeline.extract.backbones`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.extract.backbones import calibrate_batchnorm, calibration_pixels
from storage.hashing import sha256_local


@dataclass
class StreamModel:
    """A stream's network and its input recipe.

    Frame models take ``[B, 3, crop, crop]``, clip models ``[B, 3, T, crop, crop]``, audio models ``[B, 1, 96, 64]``
    log-mel patches; all return ``[B, dim]``. Pixels: decoded with the short side at ``resize``, centre-cropped to
    ``crop``, then ``(pixel / 255 - mean) / std``; with ``squash``, resized to ``squash × squash`` (aspect not kept:
    torchvision's video transforms) before the crop.
    """

    net: nn.Module
    dim: int
    weights_id: str
    kind: str
    resize: int = 0
    crop: int = 0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    squash: int = 0  # > 0: frames resized to squash × squash before the crop (frame_models.squash_resize)


# -- weights files ---------------------------------------------------------------------------------------------------
def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist()[:200])


def read_state_dict(path: str, what: str) -> dict[str, torch.Tensor]:
    """A local weights file as a flat state dict (``state_dict``/``model``/``module.`` wrappers removed).

    ``.safetensors`` through safetensors, anything else through ``torch.load(weights_only=True)``; a TorchScript
    archive is refused with the one line that converts it.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{path}: {what} weights file not found; put the file there or set weights=random")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file  # noqa: PLC0415  deferred: safetensors

        state: Mapping = load_file(str(p))
    elif _is_torchscript(p):
        raise ValueError(
            f"{path}: a TorchScript archive (OpenAI's CLIP .pt), which weights_only=True cannot load; convert it once: "
            f"python -c \"import open_clip, torch; m = open_clip.load_openai_model('{path}', device='cpu'); "
            "torch.save(m.state_dict(), 'clip-state.pth')\" and name clip-state.pth with a *-quickgelu backbone"
        )
    else:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            raise ValueError(f"{path}: cannot load {what} weights with weights_only=True ({exc})") from exc
    for wrapper in ("state_dict", "model_state", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors ({what})")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], *, where: str, arch: str) -> None:
    """``module.load_state_dict(state, strict=True)``; on a mismatch one ``ValueError`` naming the first missing and
    unexpected keys (and mismatched shapes) with their shapes."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[0]} {_shape(expected[missing[0]])} (+{len(missing) - 1} more)")
        if unexpected:
            parts.append(f"unexpected {unexpected[0]} {_shape(state[unexpected[0]])} (+{len(unexpected) - 1} more)")
        if wrong:
            k = wrong[0]
            parts.append(f"shape of {k}: {_shape(state[k])}, {arch} has {_shape(expected[k])}")
        raise ValueError(f"{where}: not a {arch} state dict: {'; '.join(parts)}")
    module.load_state_dict(state, strict=True, assign=any(t.is_meta for t in module.state_dict().values()))


def build_from_file(
    build: Callable[[], nn.Module], load: Callable[[nn.Module], None], meta_build: Callable[[], nn.Module] | None = None
) -> nn.Module:
    """``build()`` then ``load(net)``, skipping the random initialisation that the file's weights replace: built on
    the meta device and loaded by assignment (seconds for a CLIP model), unless the network holds tensors that no
    state dict carries (non-persistent buffers), then built for real."""
    with torch.device("meta"):
        net = (meta_build or build)()
    load(net)
    if any(t.is_meta for t in [*net.parameters(), *net.buffers()]):
        net = build()
        load(net)
    return net


def weights_id(weights: str) -> str:
    """How ``meta.json`` names weights: ``file:<name>:sha256:<hex>`` (the whole hash) or ``random:seed<N>``."""
    p = Path(weights).expanduser()
    return f"file:{p.name}:sha256:{sha256_local(p)}"


# -- construction ----------------------------------------------------------------------------------------------------
def seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def calibrate_2d(net: nn.Module, size: int, mean, std, seed: int) -> None:
    """Random networks with BatchNorm: re-estimate its statistics on the seeded calibration images."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        return
    g = torch.Generator().manual_seed(seed + 1)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    calibrate_batchnorm(net, [(calibration_pixels((8, 3, size, size), g) / 255.0 - m) / s for _ in range(2)])


def calibrate_bn_3d(net: nn.Module, seed: int, *, frames: int, size: int, mean, std) -> None:
    """A random clip network's BatchNorm statistics from 4 seeded calibration clips ``[3, frames, size, size]``."""
    g = torch.Generator().manual_seed(seed + 2)
    m, s = torch.tensor(mean).view(1, 3, 1, 1, 1), torch.tensor(std).view(1, 3, 1, 1, 1)
    batches = [(calibration_pixels((2, 3, frames, size, size), g) / 255.0 - m) / s for _ in range(2)]
    calibrate_batchnorm(net, batches)
