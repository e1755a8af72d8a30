"""The extra streams' networks: construction, strict loading of local weights, and their preprocessing.

:func:`build_stream` turns a :class:`~pipeline.extract.registry.StreamConfig` into a :class:`StreamModel`: the
network (eval mode, CPU) mapping a preprocessed batch to ``[B, dim]``, with how to decode and normalise its input.

- CLIP image towers are built by ``open_clip.create_model(arch, pretrained=None)`` (its visual tower is kept,
  projection included: ``encode_image``); timm models by ``timm.create_model(model, pretrained=False)``, loaded,
  then ``reset_classifier(0)`` (pooled pre-logits features). S3D and VGGish are our own modules
  (:mod:`pipeline.extract.s3d`, :mod:`pipeline.extract.vggish`) in their releases' state-dict layouts.
- Weights: ``random`` is a seeded initialisation (BatchNorm statistics re-estimated on the seeded calibration set
  of :mod:`pipeline.extract.backbones` where the network has BatchNorm); a file is read with
  ``torch.load(weights_only=True)`` (or safetensors) and loaded strictly. A TorchScript archive (OpenAI's original
  CLIP ``.pt``) is refused with the one line that converts it; a state dict of another architecture is refused
  naming its first missing and unexpected keys with their shapes. Nothing is downloaded.
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.extract.backbones import calibrate_batchnorm, calibration_pixels
from pipeline.extract.registry import OPENAI_MEAN, OPENAI_STD, RANDOM, StreamConfig
from storage.hashing import sha256_local


@dataclass
class StreamModel:
    """A stream's network and its input recipe.

    Frame models take ``[B, 3, crop, crop]``, clip models ``[B, 3, T, crop, crop]``, audio models ``[B, 1, 96, 64]``
    log-mel patches; all return ``[B, dim]``. Pixels: decoded with the short side at ``resize``, centre-cropped to
    ``crop``, then ``(pixel / 255 - mean) / std``.
    """

    net: nn.Module
    dim: int
    weights_id: str
    kind: str
    resize: int = 0
    crop: int = 0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)


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


def _from_file(
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
def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _calibrate_2d(net: nn.Module, size: int, mean, std, seed: int) -> None:
    """Random networks with BatchNorm: re-estimate its statistics on the seeded calibration images."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        return
    g = torch.Generator().manual_seed(seed + 1)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    calibrate_batchnorm(net, [(calibration_pixels((8, 3, size, size), g) / 255.0 - m) / s for _ in range(2)])


def _calibrate_bn_3d(net: nn.Module, seed: int, *, frames: int, size: int, mean, std) -> None:
    """A random clip network's BatchNorm statistics from 4 seeded calibration clips ``[3, frames, size, size]``."""
    g = torch.Generator().manual_seed(seed + 2)
    m, s = torch.tensor(mean).view(1, 3, 1, 1, 1), torch.tensor(std).view(1, 3, 1, 1, 1)
    batches = [(calibration_pixels((2, 3, frames, size, size), g) / 255.0 - m) / s for _ in range(2)]
    calibrate_batchnorm(net, batches)


def _clip_model(cfg: StreamConfig, seed: int) -> StreamModel:
    import open_clip  # noqa: PLC0415  deferred: open_clip

    spec = cfg.spec
    build = functools.partial(open_clip.create_model, spec.arch, pretrained=None)
    if cfg.weights == RANDOM:
        model = _seeded(seed, build)
    else:
        state = read_state_dict(cfg.weights, cfg.backbone)

        def load(model: nn.Module) -> None:
            if all(k.startswith("visual.") for k in state):
                visual = {k[len("visual.") :]: v for k, v in state.items()}
                load_strict(model.visual, visual, where=cfg.weights, arch=f"open_clip {spec.arch} image tower")
            else:
                load_strict(model, state, where=cfg.weights, arch=f"open_clip {spec.arch}")

        # open_clip moves the model to its ``device`` argument at the end: on the meta device, it is the meta device.
        model = _from_file(build, load, functools.partial(build, device="meta"))
    net = model.visual.eval()
    pre = net.preprocess_cfg
    size = pre["size"][0] if isinstance(pre["size"], (tuple, list)) else int(pre["size"])
    ident = weights_id(cfg.weights) if cfg.weights != RANDOM else f"random:{spec.arch}:seed{seed}"
    return StreamModel(
        net=net,
        dim=int(net.output_dim),
        weights_id=ident,
        kind="frame",
        resize=size,  # resize_mode "shortest": short side to the input size, then the centre crop
        crop=size,
        mean=tuple(pre.get("mean", OPENAI_MEAN)),
        std=tuple(pre.get("std", OPENAI_STD)),
    )


class TimmFeatures(nn.Module):
    """A timm model without its classifier: ``[B, 3, S, S] → [B, num_features]`` (pooled pre-logits)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _timm_model(cfg: StreamConfig, seed: int) -> StreamModel:
    import timm  # noqa: PLC0415  deferred: timm
    from timm.data import resolve_data_config  # noqa: PLC0415  deferred: timm

    assert cfg.model is not None
    if cfg.model not in timm.list_models():
        raise ValueError(f"timm model {cfg.model!r}: unknown to timm {timm.__version__}; see timm.list_models()")
    build = functools.partial(timm.create_model, cfg.model, pretrained=False)
    if cfg.weights == RANDOM:
        model = _seeded(seed, build)
    else:
        state = read_state_dict(cfg.weights, cfg.model)
        model = _from_file(build, lambda net: load_strict(net, state, where=cfg.weights, arch=f"timm {cfg.model}"))
    data = resolve_data_config({}, model=model)
    if data.get("crop_mode", "center") != "center":
        raise ValueError(f"timm model {cfg.model!r}: crop_mode {data['crop_mode']!r} is not supported (center only)")
    size = int(data["input_size"][-1])
    resize = int(size / data["crop_pct"])  # timm's eval transform: Resize(floor(size / crop_pct)), CenterCrop(size)
    model.reset_classifier(0)
    model.eval()
    if cfg.weights == RANDOM:
        _calibrate_2d(model, 128, data["mean"], data["std"], seed)
    ident = weights_id(cfg.weights) if cfg.weights != RANDOM else f"random:timm:{cfg.model}:seed{seed}"
    return StreamModel(
        net=TimmFeatures(model).eval(),
        dim=int(model.num_features),
        weights_id=ident,
        kind="frame",
        resize=resize,
        crop=size,
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
    )


def build_stream(cfg: StreamConfig, *, seed: int) -> StreamModel:
    """The network of one extra stream (eval mode, CPU), with its weights loaded strictly (see the module doc)."""
    if cfg.spec.library == "open_clip_torch":
        return _clip_model(cfg, seed)
    if cfg.backbone == "timm":
        return _timm_model(cfg, seed)
    if cfg.backbone == "s3d-howto100m":
        from pipeline.extract.s3d import build_s3d  # noqa: PLC0415  deferred: keeps this module's import light

        return build_s3d(cfg, seed=seed)
    from pipeline.extract.vggish import build_vggish  # noqa: PLC0415  deferred: keeps this module's import light

    return build_vggish(cfg, seed=seed)


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """``[..., H, W] → [..., size, size]`` at torchvision's ``CenterCrop`` offsets (``round((H - size) / 2)``)."""
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"frames of {h}x{w} are smaller than the crop {size}")
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)
    return x[..., top : top + size, left : left + size]


def normalise_frames(frames: torch.Tensor, model: StreamModel) -> torch.Tensor:
    """uint8 ``[n, H, W, 3]`` (short side ``model.resize``) → float32 ``[n, 3, crop, crop]``, normalised."""
    x = centre_crop(frames.permute(0, 3, 1, 2), model.crop).float() / 255.0
    mean = torch.tensor(model.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(model.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def clip_input(frames: torch.Tensor, model: StreamModel) -> torch.Tensor:
    """uint8 windows ``[B, T, H, W, 3]`` (short side ``model.resize``) → float32 ``[B, 3, T, crop, crop]``."""
    x = centre_crop(frames.permute(0, 4, 1, 2, 3), model.crop).float() / 255.0
    mean = torch.tensor(model.mean, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(model.std, device=x.device).view(1, 3, 1, 1, 1)
    return (x - mean) / std


class Windows:
    """Cuts a stream of frames, arriving in chunks, into windows of ``window`` frames starting every ``stride``.

    A window starts at every multiple of ``stride`` before the last frame; windows that run past the end are
    completed by repeating the last frame (so ``stride == window`` gives ``ceil(n / window)`` rows). Only the frames
    a later window still needs are kept between chunks.
    """

    def __init__(self, window: int, stride: int) -> None:
        self.window, self.stride = window, stride
        self._buf: np.ndarray | None = None  # frames from index self._start on
        self._start = 0  # video index of self._buf[0]
        self._next = 0  # video index where the next window starts

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Add ``[n, H, W, 3]`` frames; returns the windows now complete, ``[k, window, H, W, 3]``."""
        self._buf = chunk if self._buf is None else np.concatenate([self._buf, chunk])
        out = []
        end = self._start + len(self._buf)
        while self._next + self.window <= end:
            i = self._next - self._start
            out.append(self._buf[i : i + self.window])
            self._next += self.stride
        keep = max(0, self._next - self._start)
        self._buf = self._buf[min(keep, len(self._buf)) :]
        self._start += min(keep, end - self._start)
        return np.stack(out) if out else np.zeros((0, self.window, *chunk.shape[1:]), chunk.dtype)

    def finish(self) -> np.ndarray:
        """The windows that start before the end but run past it, padded with the last frame."""
        out = []
        if self._buf is None:
            return np.zeros((0, self.window, 0, 0, 3), np.uint8)
        end = self._start + len(self._buf)
        while self._next < end:
            part = self._buf[self._next - self._start :]
            pad = np.repeat(part[-1:], self.window - len(part), axis=0)
            out.append(np.concatenate([part, pad]))
            self._next += self.stride
        return np.stack(out) if out else np.zeros((0, self.window, *self._buf.shape[1:]), self._buf.dtype)


def check_weights_file(cfg: StreamConfig) -> None:
    """Refuse a weights file that is missing, TorchScript, or of another architecture, without building the network:
    its skeleton is made on the meta device (no memory, no initialisation) and its state dict's keys and shapes
    compared with the file's (read memory-mapped where the format allows)."""
    if cfg.weights == RANDOM:
        return
    state = read_state_dict(cfg.weights, cfg.backbone)
    with torch.device("meta"):
        if cfg.spec.library == "open_clip_torch":
            import open_clip  # noqa: PLC0415  deferred: open_clip

            net = open_clip.create_model(cfg.spec.arch, pretrained=None, device="meta")
            if all(k.startswith("visual.") for k in state):
                net, state = net.visual, {k[len("visual.") :]: v for k, v in state.items()}
            arch = f"open_clip {cfg.spec.arch}"
        elif cfg.backbone == "timm":
            import timm  # noqa: PLC0415  deferred: timm

            net, arch = timm.create_model(cfg.model, pretrained=False), f"timm {cfg.model}"
        elif cfg.backbone == "s3d-howto100m":
            from pipeline.extract.s3d import S3DHowTo100M  # noqa: PLC0415  deferred: keeps this module light

            net, arch = S3DHowTo100M(), "S3D HowTo100M (s3d_howto100m.pth)"
        else:
            from pipeline.extract.vggish import VGGish  # noqa: PLC0415  deferred: keeps this module light

            net, arch = VGGish(), "torchvggish VGGish"
    meta_state = {k: torch.empty(v.shape, device="meta") for k, v in state.items()}
    load_strict(net, meta_state, where=cfg.weights, arch=arch)
