"""``CapsuleConfig``: the typed config of the multimodal capsule network, and the named presets.

Presets are YAML files in ``model/presets/`` with two sections: ``model:`` (a :class:`CapsuleConfig`) and
``train:`` (the training engineer's ``TrainConfig`` fields). :func:`load_preset` returns the whole file as a
dict; :meth:`CapsuleConfig.from_preset` validates its ``model:`` section.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from model.fingerprint import FingerprintedConfig

PRESET_DIR = Path(__file__).resolve().parent / "presets"
PAPER_VIDEO_STREAMS = ("rgb2d", "rgb3d")  # ResNet-152 and ResNeXt-101 rows (pipeline/extract/README.md)
_STREAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

Architecture = Literal["capsules", "fully_connected", "plain_self_attention"]
RoutingName = Literal["self_attention", "dynamic", "em", "set_transformer", "none"]


class CapsuleConfig(FingerprintedConfig):
    """Architecture of the network that maps video, audio and text to one D-dim joint space.

    Defaults are the paper's main setting (section 4.1: C=128, d1=32, d2=256, D=4096).
    """

    # "capsules" is the paper's model; the other two are the table 5 baselines (no capsules, no routing).
    architecture: Architecture = "capsules"
    # Routing between primary and secondary capsules (table 3); ignored by the two baselines.
    routing: RoutingName = "self_attention"
    num_capsules: int = Field(128, ge=1, description="C: primary and secondary capsules per modality")
    d1: int = Field(32, ge=1, description="primary capsule pose size")
    d2: int = Field(256, ge=1, description="secondary capsule pose size")
    embed_dim: int = Field(4096, ge=1, description="D: size of the joint embedding space")

    # The feature streams whose pooled rows, concatenated in this order, are the video input: the paper's 2D and 3D
    # CNN features by default; any stream a dataset holds (an extra stream of its extract config: [clip], [s3d],
    # [clip, s3d]...). Training sets video_dim from the dataset (the sum of these streams' dims).
    video_streams: tuple[str, ...] = Field(
        PAPER_VIDEO_STREAMS, min_length=1, description="feature streams of the video input, concatenated in order"
    )
    # Input feature sizes: the video streams' dims summed (2D+3D: 2048+2048), word2vec (300), log-mel bands.
    video_dim: int = Field(4096, ge=1)
    text_dim: int = Field(300, ge=1)
    n_mels: int = Field(40, ge=1)
    # ResDAVEnet: a (n_mels x 1) conv to audio_stem_width channels, then one residual stage per width, each
    # of audio_blocks_per_stage basic blocks of (1 x audio_kernel) convs; the first block of a stage has
    # stride 2, so the time axis shrinks 2**len(audio_widths) times. The last width is the pooled feature size.
    audio_stem_width: int = Field(128, ge=1)
    audio_widths: tuple[int, ...] = (128, 256, 512, 1024)
    audio_blocks_per_stage: int = Field(2, ge=1)
    audio_kernel: int = Field(9, ge=1)

    # Attention heads of self-attention and set-transformer routing (must divide d2) and of the
    # plain_self_attention baseline (must divide d1, its token width).
    heads: int = Field(8, ge=1)
    # Hidden width of the two-layer MLP after attention (appendix B: 1024) and of the no-routing MLP.
    mlp_hidden: int = Field(1024, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # Iterations of dynamic and EM routing (Sabour 2017 and Hinton 2018 use 3).
    routing_iterations: int = Field(3, ge=1)
    # Final inverse temperature lambda of EM routing; the schedule rises towards it over the iterations.
    em_inverse_temperature: float = Field(0.01, gt=0.0)
    # Set-attention blocks stacked in set_transformer routing.
    set_blocks: int = Field(1, ge=1)
    # True: routing and f_out are one module used by all modalities (the paper); False: one per modality
    # (appendix A, table 6). Primary capsules and encoders are always per modality.
    shared_weights: bool = True

    # plain_self_attention baseline: N equal chunks that the input feature is cut into (zero-padded up to a
    # multiple of N); each chunk is embedded to a d1-wide token.
    plain_chunks: int = Field(128, ge=1)
    # fully_connected baseline: hidden width of its two linear layers (None: embed_dim).
    fc_hidden: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check_divisibility(self) -> CapsuleConfig:
        if len(set(self.video_streams)) != len(self.video_streams) or not all(
            _STREAM_NAME.match(name) for name in self.video_streams
        ):
            raise ValueError(f"video_streams must name distinct lower-case streams, got {list(self.video_streams)}")
        if not self.audio_widths:
            raise ValueError("audio_widths must name at least one stage width")
        attention_routing = self.architecture == "capsules" and self.routing in ("self_attention", "set_transformer")
        if attention_routing and self.d2 % self.heads:
            raise ValueError(f"heads={self.heads} must divide d2={self.d2} for {self.routing} routing")
        if self.architecture == "plain_self_attention" and self.d1 % self.heads:
            raise ValueError(f"heads={self.heads} must divide d1={self.d1} (token width of plain_self_attention)")
        return self

    def fingerprint_payload(self) -> dict[str, Any]:
        out = super().fingerprint_payload()
        if tuple(self.video_streams) == PAPER_VIDEO_STREAMS:  # the paper's input: the fingerprint from before the field
            out.pop("video_streams")
        return out

    @property
    def audio_feature_dim(self) -> int:
        """Size of the pooled ResDAVEnet feature (the last stage width)."""
        return self.audio_widths[-1]

    def input_dims(self) -> dict[str, int]:
        """Feature size entering the primary capsules (or a baseline) per modality."""
        return {"video": self.video_dim, "audio": self.audio_feature_dim, "text": self.text_dim}

    @classmethod
    def from_preset(cls, name_or_path: str | Path) -> CapsuleConfig:
        """The validated ``model:`` section of a preset (see :func:`load_preset`)."""
        raw = load_preset(name_or_path)
        try:
            return cls.model_validate(raw["model"])
        except ValueError as exc:
            raise ValueError(f"preset {name_or_path}: invalid model section: {exc}") from exc


def available_presets() -> list[str]:
    """Names of the presets shipped in ``model/presets/``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str | Path) -> dict[str, Any]:
    """A preset as a dict with the sections ``"model"`` and ``"train"``.

    ``name_or_path`` is a shipped preset name (``"demo"``, ``"paper"``, ``"paper-c64-d16"``) or the path of a
    YAML file with the same layout. Unknown names raise ``KeyError`` listing the available presets.
    """
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or path.is_file()):
        path = PRESET_DIR / f"{text}.yaml"
        if not path.is_file():
            raise KeyError(f"unknown preset {text!r}; available: {', '.join(available_presets())}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read preset: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(f"{path}: a preset needs a 'model:' mapping (and a 'train:' mapping)")
    data.setdefault("train", {})
    if not isinstance(data["train"], dict):
        raise ValueError(f"{path}: the 'train:' section must be a mapping")
    return data
