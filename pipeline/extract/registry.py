"""The backbone registry: every network that can make a feature stream beside the paper's four, as data (no torch).

Closed like the routing factory: a stream names a backbone from :data:`BACKBONES` (an unknown name lists the known
ones); ``timm`` takes any timm image model by name (``model: resnet18``). Three kinds:

- ``frame``: one row per frame at ``fps`` (CLIP image towers through ``open_clip``, timm models). Frames are decoded
  with the short side at the model's resize size, centre-cropped to its input size, scaled to [0, 1] and normalised
  with its mean and std: the library's own eval preprocessing (open_clip's ``create_model_and_transforms``, timm's
  ``resolve_data_config`` + ``create_transform``), which a test holds equal.
- ``clip``: one row per window of ``window`` frames at ``fps``, windows starting every ``stride`` frames (S3D as
  released with MIL-NCE on HowTo100M; torchvision's Kinetics-400 S3D, its frames squashed to 256 × 256 as its
  ``transforms()`` do).
- ``audio``: one row per 0.96 s log-mel patch (VGGish).

Weights are ``random`` (a seeded stand-in for tests) or a local state-dict file, loaded strictly with
``weights_only=True`` and named by sha256 in the stream's fingerprint and in its ``meta.json``. Nothing is
downloaded. :class:`StreamConfig` is one such stream's settings; ``ExtractConfig.streams`` maps stream names to them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from model.fingerprint import FingerprintedConfig, runtime_field
from storage.hashing import sha256_local

RANDOM = "random"
Kind = Literal["frame", "clip", "audio"]
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# Names of the paper's streams, of their sample members (mel.npy, w2v.npy) and the model's video modality (the
# concatenated streams): an extra stream may not take them (storage.features.is_stream).
RESERVED = ("rgb2d", "rgb3d", "audio", "text", "mel", "w2v", "video")
_STREAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone: what it is, how it is fed by default, where its weights come from."""

    kind: Kind
    library: str  # the distribution whose code builds it ("mmcaps": our own module)
    reference: str  # the reference implementation and preprocessing it reproduces
    arch: str  # the library's architecture name (open_clip model name, ...); "" for timm (the stream's ``model``)
    dim: int | None  # feature dimension (None: the timm model's)
    fps: float  # default frames per second (frame, clip); 0 for audio
    window: int = 1  # frames per row (clip); 1 for frame models
    stride: int = 1  # frames between windows (clip)
    size: int = 224  # input size (square, after the crop)
    weights_hint: str = ""  # the released file and where to get it (README table)


def _clip(arch: str, dim: int, size: int, hint: str) -> BackboneSpec:
    return BackboneSpec(
        kind="frame",
        library="open_clip_torch",
        reference=f"open_clip {arch}: bicubic resize of the short side, centre crop, OpenAI mean/std",
        arch=arch,
        dim=dim,
        fps=1.0,
        size=size,
        weights_hint=hint,
    )


_LAION = "open_clip_pytorch_model.bin (or .safetensors) of the open_clip model card on the Hugging Face hub"
_OPENAI = "OpenAI's CLIP in open_clip state-dict form (timm/vit_*_clip_*.openai: open_clip_pytorch_model.bin)"
BACKBONES: dict[str, BackboneSpec] = {
    "clip-vit-b-32": _clip("ViT-B-32", 512, 224, _LAION),
    "clip-vit-b-32-quickgelu": _clip("ViT-B-32-quickgelu", 512, 224, _OPENAI),
    "clip-vit-b-16": _clip("ViT-B-16", 512, 224, _LAION),
    "clip-vit-b-16-quickgelu": _clip("ViT-B-16-quickgelu", 512, 224, _OPENAI),
    "clip-vit-l-14": _clip("ViT-L-14", 768, 224, _LAION),
    "clip-vit-l-14-quickgelu": _clip("ViT-L-14-quickgelu", 768, 224, _OPENAI),
    "timm": BackboneSpec(
        kind="frame",
        library="timm",
        reference="timm.create_model(model, num_classes=0): resolve_data_config + create_transform (eval)",
        arch="",
        dim=None,
        fps=1.0,
        weights_hint="the model's pytorch_model.bin / model.safetensors (timm's Hugging Face hub repository)",
    ),
    # antoine77340/S3D_HowTo100M: input B×3×T×H×W in [0, 1] (no mean/std), trained on T = 32 frames (16 also works),
    # H, W 200-256; mixed_5c pooled = 1024-d. Its README gives no frame rate; the MIL-NCE paper samples 10 fps.
    "s3d-howto100m": BackboneSpec(
        kind="clip",
        library="mmcaps",
        reference="antoine77340/S3D_HowTo100M s3dg.S3D (MIL-NCE): mixed_5c mean-pooled, input in [0, 1]",
        arch="s3d",
        dim=1024,
        fps=10.0,
        window=32,
        stride=32,
        size=224,
        weights_hint="s3d_howto100m.pth (and s3d_dict.npy) from the S3D_HowTo100M README's links",
    ),
    # torchvision.models.video.s3d with S3D_Weights.KINETICS400_V1's file. Its transforms(): VideoClassification,
    # resize to (256, 256) - a squash, not aspect-preserving - bilinear without antialias (uint8 rounded), centre
    # crop 224, [0, 1] then Kinetics mean/std. Its docs estimate accuracy at frame_rate 15 with clip_len 128 (meta:
    # min_temporal_size 14, min_size 224). Feature: avgpool (2x7x7, stride 1) averaged over its positions, 1024-d:
    # the input of the 1x1x1 classifier conv (dropped).
    "s3d-kinetics400": BackboneSpec(
        kind="clip",
        library="torchvision",
        reference="torchvision.models.video.s3d KINETICS400_V1: features, avgpool, mean (the classifier's input); "
        "its transforms(): 256x256 squash, crop 224, Kinetics mean/std",
        arch="s3d",
        dim=1024,
        fps=15.0,
        window=128,
        stride=128,
        size=224,
        weights_hint="s3d-d76dad2f.pth, the file of torchvision's S3D_Weights.KINETICS400_V1 "
        "(https://download.pytorch.org/models/s3d-d76dad2f.pth)",
    ),
    # torchvggish (harritaylor): 16 kHz mono, 25 ms Hann windows every 10 ms, 512-point FFT magnitude, 64 HTK mel
    # bands 125-7500 Hz, log(mel + 0.01), patches of 96 frames (0.96 s) every 96 frames; 128-d embedding (before PCA).
    "vggish": BackboneSpec(
        kind="audio",
        library="mmcaps",
        reference="torchvggish VGGish (postprocess=False): 0.96 s log-mel patches, 64 bands, 128-d embedding",
        arch="vggish",
        dim=128,
        fps=0.0,
        size=0,
        weights_hint="vggish-10086976.pth (torchvggish's v0.1 release)",
    ),
}


def backbone_spec(name: str) -> BackboneSpec:
    """The registered backbone ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def is_weights_path(weights: str) -> bool:
    """A weights value that names a local file (anything but ``random``)."""
    return weights != RANDOM


def library_version(library: str) -> str:
    """The installed version of ``library`` ("mmcaps" for our own modules), without importing it."""
    if library == "mmcaps":
        return "own"
    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        return "not installed"


def check_stream_name(name: str) -> str:
    """A valid extra stream name: lower-case identifier, not one of the paper's streams."""
    if not _STREAM_NAME.match(name) or name in RESERVED:
        raise ValueError(f"stream name {name!r}: use a lower-case identifier other than {', '.join(RESERVED)}")
    return name


StreamName = Annotated[str, AfterValidator(check_stream_name)]  # a key of ExtractConfig.streams


class StreamConfig(FingerprintedConfig):
    """One extra feature stream: a registered backbone, its weights, and how it is fed.

    ``fps``/``window``/``stride`` default to the backbone's reference (unset = reference). Fingerprinted: every field
    but ``batch_size``, the weights file by content (sha256), and the building library's version.
    """

    backbone: str = Field(description=f"a registered backbone: {', '.join(sorted(BACKBONES))}")
    model: str | None = Field(None, description="the timm model name (backbone: timm), e.g. resnet18")
    weights: str = Field(RANDOM, description="random (seeded stand-in) or a local state-dict file (.bin/.pth/...)")
    fps: float | None = Field(None, gt=0, description="frames per second (frame and clip models); unset: reference")
    window: int | None = Field(None, ge=1, description="frames per row (clip models); unset: reference")
    stride: int | None = Field(None, ge=1, description="frames between window starts (clip models); unset: window")
    batch_size: int = runtime_field(16, ge=1, description="frames (frame models) or windows per forward pass")

    @field_validator("backbone")
    @classmethod
    def _known(cls, value: str) -> str:
        backbone_spec(value)
        return value

    @model_validator(mode="after")
    def _timm_model(self) -> StreamConfig:
        if (self.backbone == "timm") != (self.model is not None):
            raise ValueError("model: set it (a timm model name) exactly when backbone is timm")
        return self

    @property
    def spec(self) -> BackboneSpec:
        return BACKBONES[self.backbone]

    def resolved(self) -> tuple[float, int, int]:
        """(fps, window, stride) with the reference's values where unset."""
        spec = self.spec
        window = self.window or spec.window
        return self.fps or spec.fps, window, self.stride or (spec.stride if self.window is None else window)

    def fingerprint_payload(self) -> dict[str, Any]:
        out = super().fingerprint_payload()
        for unset_means_reference in ("fps", "window", "stride"):  # enter as resolved: unset = the reference's
            out.pop(unset_means_reference)
        out["resolved"] = list(self.resolved())
        out["library"] = f"{self.spec.library}=={library_version(self.spec.library)}"
        if is_weights_path(self.weights):
            path = Path(self.weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"{self.weights}: {self.backbone} weights file not found")
            out["weights"] = "sha256:" + sha256_local(path)
        return out


__all__ = ["BACKBONES", "RANDOM", "BackboneSpec", "StreamConfig", "StreamName", "backbone_spec", "check_stream_name"]
