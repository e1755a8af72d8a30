"""Evaluation settings (:class:`EvalConfig`) and what to evaluate on (:class:`EvalSpec`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from model.fingerprint import FingerprintedConfig, runtime_field

Modality = Literal["video", "video+audio"]
Figure = Literal["recall", "topk", "capsules", "localisation"]

# kind -> (the spec form, what it evaluates); "synthetic" takes one folder. The CLI's help is made from this table.
SPEC_FORMS = {
    "youcook2": ("youcook2=youcookii_annotations_trainval.json:VIDEO_DIR", "validation clips, text -> clip retrieval"),
    "msrvtt": ("msrvtt=MSRVTT_JSFUSION_test.csv:VIDEO_DIR", "1k-A, text -> video retrieval"),
    "crosstask": ("crosstask=CROSSTASK_ROOT:VIDEO_DIR", "tasks_primary.txt, videos.csv, annotations/"),
    "mining": ("mining=SRT_DIR:VIDEO_DIR", "Mining YouTube per-video SRT annotations"),
    "csv": ("csv=CLIPS_CSV:VIDEO_DIR", "your own video_id,start,end,text"),
    "synthetic": ("synthetic=CORPUS_DIR", "the synthetic corpus's eval split"),
}


def spec_forms_help() -> str:
    """The spec forms, one per line, for command-line help."""
    width = max(len(form) for form, _ in SPEC_FORMS.values()) + 3
    return "\n".join(f"  {form:<{width}}{what}" for form, what in SPEC_FORMS.values())


class EvalConfig(FingerprintedConfig):
    """How to score and what to draw. Fields marked runtime change speed or figures, never a number."""

    modalities: tuple[Modality, ...] = ("video", "video+audio")  # "video+audio": sum of the two embeddings
    ks: tuple[int, ...] = (1, 5, 10)
    similarity: Literal["dot", "cosine", "euclidean"] = "dot"  # euclidean = negative squared distance
    youcook2_subset: str = "validation"
    # Mining YouTube: background seconds score log(1/K) + this, on per-second log-softmax over the K steps
    # (a second goes to a step when that step is more probable than uniform by this margin).
    mining_background_margin: float = 0.0
    chance_simulations: int = Field(200, ge=1)  # seeded random rankings/segmentations for chance medians, IoU
    seed: int = 0

    chunk_size: int = runtime_field(1024, ge=1)  # queries scored per block (memory ~ chunk_size x candidates)
    batch_size: int = runtime_field(256, ge=1)  # clips per forward pass
    device: str = runtime_field("cpu")
    figures: tuple[Figure, ...] = runtime_field(("recall", "topk", "capsules", "localisation"))
    n_examples: int = runtime_field(3, ge=0)  # queries shown with their top-k clips
    top_k_shown: int = runtime_field(5, ge=1)
    n_capsules: int = runtime_field(4, ge=0)  # capsules shown with the clips that activate them most
    capsule_top: int = runtime_field(4, ge=1)
    thumbnail_width: int = runtime_field(160, ge=16)

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, ks: tuple[int, ...]) -> tuple[int, ...]:
        if not ks or any(k < 1 for k in ks):
            raise ValueError(f"ks must be positive integers, got {ks}")
        return tuple(sorted(set(ks)))

    @field_validator("modalities")
    @classmethod
    def _some_modality(cls, mods: tuple[str, ...]) -> tuple[str, ...]:
        if not mods:
            raise ValueError("modalities must name at least one of video, video+audio")
        return tuple(dict.fromkeys(mods))


@dataclass(frozen=True)
class EvalSpec:
    """One benchmark to evaluate: adapter ``kind``, its annotation file/folder, its video folder.

    ``name`` (default: the kind) names the extracted dataset ``eval-<name>`` and the report folder.
    ``synthetic`` takes the corpus folder as ``annotations`` and no ``videos``.
    """

    kind: str
    annotations: Path
    videos: Path | None = None
    name: str | None = None

    @property
    def dataset_name(self) -> str:
        return self.name or self.kind

    @classmethod
    def parse(cls, text: str) -> EvalSpec:
        """Parse ``KIND=ANNOTATIONS:VIDEO_DIR`` (``synthetic=CORPUS_DIR``); ``KIND/NAME=...`` sets the name."""
        if "=" not in text:
            raise ValueError(
                f"a benchmark is KIND=..., got {text!r}; forms: {', '.join(f for f, _ in SPEC_FORMS.values())}"
            )
        key, value = text.split("=", 1)
        kind, _, name = key.strip().partition("/")
        if kind not in SPEC_FORMS:
            raise ValueError(f"unknown benchmark {kind!r}; forms: {', '.join(f for f, _ in SPEC_FORMS.values())}")
        if kind == "synthetic":
            if not value:
                raise ValueError(f"expected {SPEC_FORMS[kind][0]}, got {text!r}")
            return cls(kind, Path(value), None, name or None)
        ann, sep, videos = value.partition(":")
        if not sep or not ann or not videos:
            raise ValueError(f"expected {SPEC_FORMS[kind][0]}, got {text!r}")
        return cls(kind, Path(ann), Path(videos), name or None)
