"""The extra streams' networks: construction, strict loading of local weights, and their preprocessing.

:func:`build_stream` turns a :class:`~pipeline.extract.registry.StreamConfig` into a :class:`StreamModel`: the
network (eval mode, CPU) mapping a preprocessed batch to ``[B, dim]``, with how to decode and normalise its input.

- CLIP image towers are built by ``open_clip.create_model(arch, pretrained=None)`` (its visual tower is kept,
  projection included: ``encode_image``); timm models by ``timm.create_model(model, pretrained=False)``, loaded,
  then ``reset_classifier(0)`` (pooled pre-logits features). S3D and VGGish are our own modules
  (:mod:`pipeline.extract.s3d`, :mod:`pipeline.extract.vggish`) in their releases' state-dict layouts; torchvision's
  Kinetics-400 S3D is ``torchvision.models.video.s3d`` up to its classifier (:class:`TorchvisionS3D`), fed as its
  ``S3D_Weights.KINETICS400_V1.transforms()`` feed it (read from torchvision, as open_clip's and timm's recipes are).
- Weights: ``random`` is a seeded initialisation (BatchNorm statistics re-estimated on the seeded calibration set
  of :mod:`pipeline.extract.backbones` where the network has BatchNorm); a file is read with
  ``torch.load(weights_only=True)`` (or safetensors) and loaded strictly. A TorchScript archive (OpenAI's original
  CLIP ``.pt``) is refused with the one line that converts it; a state dict of another architecture is refused
  naming its first missing and unexpected keys with their shapes (:mod:`pipeline.extract.stream_weights`), and
  :func:`check_weights_file` does that on the meta device when the extractor is made. Nothing is downloaded.
- Input: :func:`normalise_frames` / :func:`clip_input` crop and normalise decoded frames (a ``squash`` model's
  frames first resized to a square, :func:`squash_resize`); :class:`Windows` cuts a clip stream's frames into
  windows across decoded chunks.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.extract.registry import OPENAI_MEAN, OPENAI_STD, RANDOM, StreamConfig
from pipeline.extract.s3d import S3DHowTo100M, build_s3d
from pipeline.extract.stream_weights import (
    StreamModel,
    build_from_file,
    calibrate_2d,
    calibrate_bn_3d,
    load_strict,
    read_state_dict,
    seeded,
    weights_id,
)
from pipeline.extract.vggish import VGGish, build_vggish


def _clip_model(cfg: StreamConfig, seed: int) -> StreamModel:
    import open_clip  # noqa: PLC0415  deferred: open_clip

    spec = cfg.spec
    build = functools.partial(open_clip.create_model, spec.arch, pretrained=None)
    if cfg.weights == RANDOM:
        model = seeded(seed, build)
    else:
        state = read_state_dict(cfg.weights, cfg.backbone)

        def load(model: nn.Module) -> None:
            if all(k.startswith("visual.") for k in state):
                visual = {k[len("visual.") :]: v for k, v in state.items()}
                load_strict(model.visual, visual, where=cfg.weights, arch=f"open_clip {spec.arch} image tower")
            else:
                load_strict(model, state, where=cfg.weights, arch=f"open_clip {spec.arch}")

        # open_clip moves the model to its ``device`` argument at the end: on the meta device, it is the meta device.
        model = build_from_file(build, load, functools.partial(build, device="meta"))
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
        model = seeded(seed, build)
    else:
        state = read_state_dict(cfg.weights, cfg.model)
        model = build_from_file(build, lambda net: load_strict(net, state, where=cfg.weights, arch=f"timm {cfg.model}"))
    data = resolve_data_config({}, model=model)
    if data.get("crop_mode", "center") != "center":
        raise ValueError(f"timm model {cfg.model!r}: crop_mode {data['crop_mode']!r} is not supported (center only)")
    size = int(data["input_size"][-1])
    resize = int(size / data["crop_pct"])  # timm's eval transform: Resize(floor(size / crop_pct)), CenterCrop(size)
    model.reset_classifier(0)
    model.eval()
    if cfg.weights == RANDOM:
        calibrate_2d(model, 128, data["mean"], data["std"], seed)
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


TV_S3D = "torchvision S3D (s3d-d76dad2f.pth)"
TV_S3D_MIN_FRAMES = 14  # S3D_Weights.KINETICS400_V1.meta["min_temporal_size"]: avgpool needs 2 time steps


class TorchvisionS3D(nn.Module):
    """torchvision's S3D up to its classifier: normalised ``[B, 3, T, 224, 224] → [B, 1024]``.

    ``features``, then its ``avgpool`` (2×7×7, stride 1), averaged over the positions left: the vector that the
    classifier's 1×1×1 conv maps to the logits (the model averages its logits over the same positions; the conv is
    affine, so logits = classifier(this vector)). Dropout and the classifier are dropped.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.features, self.avgpool = net.features, net.avgpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.avgpool(self.features(x)).mean(dim=(2, 3, 4))  # (b, 1024)


def _torchvision_s3d(cfg: StreamConfig, seed: int) -> StreamModel:
    from torchvision.models.video import S3D_Weights, s3d  # noqa: PLC0415  deferred: torchvision
    from torchvision.transforms import InterpolationMode  # noqa: PLC0415  deferred: torchvision

    _, window, _ = cfg.resolved()
    if window < TV_S3D_MIN_FRAMES:
        raise ValueError(
            f"{cfg.backbone}: window {window} frames; torchvision's S3D needs at least {TV_S3D_MIN_FRAMES} "
            "(its min_temporal_size: the avgpool after the features needs 2 time steps)"
        )
    recipe = S3D_Weights.KINETICS400_V1.transforms()  # VideoClassification: no file, only its settings
    (squash, other), crop = recipe.resize_size, recipe.crop_size[0]
    if squash != other or recipe.interpolation != InterpolationMode.BILINEAR:  # what squash_resize reproduces
        raise RuntimeError(f"torchvision's S3D transforms changed ({recipe}); mmcaps reproduces a square bilinear one")
    build = functools.partial(s3d, weights=None)
    if cfg.weights == RANDOM:
        net = seeded(seed, build)
        # its BatchNorms are all in features; 8 frames of 64 x 64 suffice to estimate them (avgpool needs 224)
        calibrate_bn_3d(net.features, seed, frames=8, size=64, mean=recipe.mean, std=recipe.std)
        ident = f"random:torchvision-s3d:seed{seed}"
    else:
        state = read_state_dict(cfg.weights, cfg.backbone)
        net = build_from_file(build, lambda m: load_strict(m, state, where=cfg.weights, arch=TV_S3D))
        ident = weights_id(cfg.weights)
    return StreamModel(
        net=TorchvisionS3D(net).eval(),
        dim=int(net.classifier[1].in_channels),
        weights_id=ident,
        kind="clip",
        resize=squash,  # ffmpeg: short side 256, then squash_resize makes it 256 x 256
        crop=crop,
        mean=tuple(recipe.mean),
        std=tuple(recipe.std),
        squash=squash,
    )


def build_stream(cfg: StreamConfig, *, seed: int) -> StreamModel:
    """The network of one extra stream (eval mode, CPU), with its weights loaded strictly (see the module doc)."""
    if cfg.spec.library == "open_clip_torch":
        return _clip_model(cfg, seed)
    if cfg.backbone == "timm":
        return _timm_model(cfg, seed)
    if cfg.backbone == "s3d-howto100m":
        return build_s3d(cfg, seed=seed)
    if cfg.backbone == "s3d-kinetics400":
        return _torchvision_s3d(cfg, seed)
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


def squash_resize(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[n, 3, H, W] → [n, 3, size, size]`` as torchvision's tensor ``resize`` to ``(size, size)`` in its video
    transforms: bilinear, ``align_corners=False``, antialias off, rounded back to uint8; the aspect is not kept."""
    out = F.interpolate(frames.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return out.round_().to(torch.uint8)


def clip_input(frames: torch.Tensor, model: StreamModel) -> torch.Tensor:
    """uint8 windows ``[B, T, H, W, 3]`` (short side ``model.resize``) → float32 ``[B, 3, T, crop, crop]``."""
    if model.squash:  # window by window: a float copy of a batch of 128-frame windows would take gigabytes
        frames = torch.stack([squash_resize(w.permute(0, 3, 1, 2), model.squash).permute(0, 2, 3, 1) for w in frames])
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
            net, arch = S3DHowTo100M(), "S3D HowTo100M (s3d_howto100m.pth)"
        elif cfg.backbone == "s3d-kinetics400":
            from torchvision.models.video import s3d  # noqa: PLC0415  deferred: torchvision

            net, arch = s3d(weights=None), TV_S3D
        else:
            net, arch = VGGish(), "torchvggish VGGish"
    meta_state = {k: torch.empty(v.shape, device="meta") for k, v in state.items()}
    load_strict(net, meta_state, where=cfg.weights, arch=arch)
