"""``ExtractConfig``: every setting of feature extraction; the fingerprint names the shard folder.

Fields that change features are fingerprinted; batch sizes, chunk sizes, the device and timeouts are runtime
fields. Files named by the config (local weights, word vectors) enter the fingerprint by content hash, not path,
so moving a file keeps the fingerprint and replacing it changes it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from model.fingerprint import FingerprintedConfig, content_fingerprint, plain_errors, runtime_field
from pipeline.extract.ffmpeg import ffmpeg_binary
from pipeline.extract.recipes import CALIBRATION, RECIPES_3D
from pipeline.extract.registry import StreamConfig, StreamName
from pipeline.hardware import ResolvesPrecision
from storage.hashing import sha256_local

RANDOM = "random"
PRESET_DIR = Path(__file__).resolve().parent / "presets"  # shipped example configs (package data)


def is_weights_file(weights: str) -> bool:
    """A weights value that names a local file (as opposed to ``random`` or a torchvision weights name)."""
    return weights != RANDOM and (
        os.sep in weights or "/" in weights or weights.endswith((".pth", ".pt", ".pyth", ".bin", ".ckpt"))
    )


def _file_payload(value: str, what: str) -> str:
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{value}: {what} file not found (needed for the extract fingerprint)")
    return "sha256:" + sha256_local(path)


class Rgb2dConfig(FingerprintedConfig):
    """2D appearance features: ResNet-152 pooled over space, one row per ``fps`` frame."""

    arch: Literal["resnet152"] = Field("resnet152", description="the 2D network (HowTo100M: ResNet-152)")
    weights: str = Field(
        RANDOM,
        description="random (seeded, BatchNorm-calibrated stand-in), a torchvision weights name (IMAGENET1K_V1, the "
        "release's), or a local state-dict file",
    )
    fps: float = Field(1.0, gt=0, description="frames per second fed to the network (one feature row each)")
    size: int = Field(224, ge=32, description="short side after scaling, in pixels; no crop")
    batch_size: int = runtime_field(16, ge=1, description="frames per forward pass (also the decoded chunk)")

    def fingerprint_payload(self) -> dict[str, Any]:
        out = super().fingerprint_payload()
        if is_weights_file(self.weights):
            out["weights"] = _file_payload(self.weights, "rgb2d weights")
        return out


class Rgb3dConfig(FingerprintedConfig):
    """3D motion features: ResNeXt-101 (HowTo100M) or a pytorchvideo hub architecture, one row per window.

    The frame rate, window length, size, crop and normalisation of each architecture are fixed in
    ``pipeline.extract.recipes.RECIPES_3D`` and enter the fingerprint with the architecture's name.
    """

    arch: Literal["resnext101", "slow_r50", "x3d_m", "r2plus1d_r50"] = Field(
        "resnext101", description="the 3D network (HowTo100M: ResNeXt-101); each has its own frame rate and window"
    )
    weights: str = Field(
        RANDOM,
        description="random (seeded stand-in) or a local checkpoint (resnext101.pth or resnext-101-kinetics.pth)",
    )
    batch_size: int = runtime_field(4, ge=1, description="windows per forward pass (also the decoded chunk)")

    def fingerprint_payload(self) -> dict[str, Any]:
        out = super().fingerprint_payload()
        out["recipe"] = RECIPES_3D[self.arch].payload()
        if is_weights_file(self.weights):
            out["weights"] = _file_payload(self.weights, "rgb3d weights")
        return out


class AudioConfig(FingerprintedConfig):
    """Log-mel spectrogram (recipe constants in ``pipeline.extract.audio``)."""

    enabled: bool = Field(True, description="extract the log-mel audio stream (off: every video has no audio)")
    sample_rate: Literal[16000] = Field(16000, description="Hz, mono")
    n_mels: int = Field(40, ge=1, description="mel bands")
    fmin: float = Field(20.0, ge=0, description="lowest mel band edge, Hz")


class TextConfig(FingerprintedConfig):
    """Caption vectors: max over word2vec vectors of in-vocabulary tokens."""

    # Fingerprinted by content hash, not path: moving the file keeps the fingerprint, replacing it changes it.
    # False (spelled none): no word vectors, said on purpose; the command line refuses captions without vectors
    # otherwise (flows/commands/_checks.py). Unset and none make the same zero vectors, hence the same fingerprint.
    word2vec: str | Literal[False] | None = Field(
        None,
        description="word2vec binary or text file (GoogleNews-vectors-negative300.bin); none: no text features, "
        "every caption gets a zero vector (mmcaps extract refuses captions without vectors unless told so)",
    )
    dim: int = Field(300, ge=1, description="dimension of the word vectors")

    @field_validator("word2vec", mode="before")
    @classmethod
    def _none_means_no_vectors(cls, value: Any) -> Any:
        return False if isinstance(value, str) and value.strip().lower() == "none" else value

    def fingerprint_payload(self) -> dict[str, Any]:
        out = super().fingerprint_payload()
        if self.word2vec:
            out["word2vec"] = _file_payload(self.word2vec, "word2vec")
        elif self.word2vec is False:
            out["word2vec"] = None
        return out


class ExtractConfig(ResolvesPrecision, FingerprintedConfig):
    """All extraction settings. ``ExtractConfig()`` is the HowTo100M recipe with seeded random backbones.

    Each stream has its own fingerprint (:meth:`stream_fingerprints`); the config's fingerprint, which names a
    dataset's shard folder, is theirs together. ``precision`` and ``ffmpeg`` enter by what they resolve to on this
    host (the precision actually used, the ffmpeg build's version), so features made differently get different
    fingerprints and features made the same way share them, whatever the spelling of the setting.
    """

    rgb2d: Rgb2dConfig = Field(default_factory=Rgb2dConfig, description="2D appearance stream (1 row per second)")
    rgb3d: Rgb3dConfig = Field(default_factory=Rgb3dConfig, description="3D motion stream (1.5 rows per second)")
    audio: AudioConfig = Field(default_factory=AudioConfig, description="log-mel audio stream (100 columns per second)")
    text: TextConfig = Field(default_factory=TextConfig, description="caption vectors (one row per caption)")
    streams: dict[StreamName, StreamConfig] = Field(
        default_factory=dict,
        description="extra feature streams by name, a registered backbone each (pipeline.extract.registry), e.g. "
        "{clip: {backbone: clip-vit-b-32, weights: open_clip_pytorch_model.bin}}",
    )
    # An explicit bf16 where it is only emulated warns: it is 2-80x slower than fp32 there (pipeline.hardware).
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 where the GPU or CPU multiplies in bf16 (sm80+, AVX-512 BF16, AMX), else fp32"
    )
    # Builds decode to slightly different lengths, hence the version in the fingerprint.
    ffmpeg: str = Field(
        "pinned",
        description="pinned (the imageio-ffmpeg build, the same on every host), system (ffmpeg on PATH), or a path",
    )
    seed: int = Field(0, description="initialisation and calibration of random backbones")
    max_seconds: float | None = Field(
        None, gt=0, description="extract only the first max_seconds of every video (previews, tests); unset: whole"
    )
    device: str | None = runtime_field(None, description="cpu, cuda, cuda:N; unset: cuda when available")
    # Same features up to rounding, so not fingerprinted (pipeline.extract.runner).
    compile: bool = runtime_field(
        False, description="torch.compile the backbones: faster after 10-30 s of compilation; for long extractions"
    )
    threads: int | None = runtime_field(
        None,
        ge=1,
        description="intra-op threads of the backbones; unset: torch's configured count (the cores). Features depend "
        "on it in the last bit of a few values; each sample's meta.json records it",
    )
    queue_chunks: int = runtime_field(4, ge=1, description="decoded chunks buffered ahead of the networks")
    timeout_s: float = runtime_field(120.0, gt=0, description="longest ffmpeg may go without output, seconds")
    download: bool = runtime_field(False, description="let torchvision download named weights into $TORCH_HOME")

    def stand_ins(self) -> list[str]:
        """What in this config makes features that are stand-ins, not the paper's (said at the start of a run, in its
        artifact and by ``mmcaps inspect``): random backbones, no word vectors, a cut to ``max_seconds``."""
        out = []
        if self.rgb2d.weights == RANDOM:
            out.append("rgb2d.weights=random: a seeded, calibrated random ResNet-152, not ImageNet weights")
        if self.rgb3d.weights == RANDOM:
            out.append("rgb3d.weights=random: a seeded, calibrated random 3D network, not Kinetics weights")
        if self.text.word2vec is False:
            out.append("text.word2vec=none: every caption gets a zero vector, as asked (text retrieval cannot work)")
        elif not self.text.word2vec:
            out.append("text.word2vec is not set: every caption gets a zero vector (text retrieval cannot work)")
        out += [
            f"streams.{n}.weights=random: a seeded random {s.backbone}"
            for n, s in self.streams.items()
            if s.weights == RANDOM
        ]
        if self.max_seconds is not None:
            out.append(f"max_seconds={self.max_seconds:g}: only the first {self.max_seconds:g} s of every video")
        return out

    @classmethod
    def from_file_or_preset(cls, name_or_path: str | Path) -> ExtractConfig:
        """A config from a YAML file, or a shipped example by name (``pipeline/extract/presets/<name>.yaml``:
        ``howto100m`` is the HowTo100M release's recipe with pretrained weights)."""
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            named = PRESET_DIR / f"{name_or_path}.yaml"
            if not named.is_file():
                shipped = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
                raise FileNotFoundError(f"extract config {name_or_path}: no such file or shipped config ({shipped})")
            path = named
        try:
            return cls.from_yaml(path)
        except ValueError as exc:  # pydantic's ValidationError is one: name the file, keep it one line
            raise ValueError(f"{path}: invalid extract config: {' '.join(str(exc).split())}") from exc

    def with_updates(self, updates: dict[str, Any]) -> ExtractConfig:
        """:meth:`FingerprintedConfig.with_updates`, where ``streams`` is a map by name: ``streams.clip.backbone=...``
        adds stream ``clip`` (its other fields from the other ``streams.clip.*`` keys), as ``mmcaps extract --set``
        spells it."""
        added: dict[str, dict[str, Any]] = {}
        rest: dict[str, Any] = {}
        for dotted, value in updates.items():
            parts = dotted.split(".")
            if len(parts) == 3 and parts[0] == "streams" and parts[1] not in self.streams:
                added.setdefault(parts[1], {})[parts[2]] = value
            else:
                rest[dotted] = value
        base = self
        if added:
            data = self.model_dump()
            data["streams"] = {**data["streams"], **added}
            try:
                base = type(self).model_validate(data)
            except ValidationError as exc:
                raise ValueError(plain_errors(exc)) from exc
        return FingerprintedConfig.with_updates(base, rest) if rest else base

    def stream_fingerprints(self) -> dict[str, str]:
        """Each stream's fingerprint (``rgb2d``, ``rgb3d``, ``audio``, ``text``): the settings that shape that stream's
        arrays and nothing else. The feature store keys a video's arrays by them (:mod:`storage.features`)."""
        decoding = {"ffmpeg": ffmpeg_binary(self.ffmpeg).version, "max_seconds": self.max_seconds}
        precision = self.resolve_precision().precision if self.precision == "auto" else self.precision
        visual = {**decoding, "precision": precision, "seed": self.seed, "calibration": CALIBRATION}
        parts = {
            "rgb2d": {"rgb2d": self.rgb2d.fingerprint_payload(), **visual},
            "rgb3d": {"rgb3d": self.rgb3d.fingerprint_payload(), **visual},
            "audio": {"audio": self.audio.fingerprint_payload(), **decoding},
            "text": {"text": self.text.fingerprint_payload()},
        }
        for name, stream in self.streams.items():  # extra streams: adding one leaves the others' fingerprints
            parts[name] = {name: stream.fingerprint_payload(), **(decoding if stream.spec.kind == "audio" else visual)}
        return {name: content_fingerprint(f"stream:{name}", payload) for name, payload in parts.items()}

    def fingerprint_payload(self) -> dict[str, Any]:
        # A dataset's extract fingerprint (its shard folder) is that of its four streams together.
        return {"streams": self.stream_fingerprints()}
