"""Evaluation settings (:class:`EvalConfig`) and what to evaluate on (:class:`EvalSpec`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from model.config import load_preset
from model.fingerprint import FingerprintedConfig, runtime_field

Modality = Literal["video", "video+audio"]
Figure = Literal["recall", "topk", "capsules", "localisation"]

# kind -> (the spec form, what it evaluates); "synthetic" takes one folder. The CLI's help is made from this table.
SPEC_FORMS = {
    "youcook2": ("youcook2=youcookii_annotations_trainval.json:VIDEO_DIR", "validation clips, text -> clip retrieval"),
    "msrvtt": ("msrvtt=MSRVTT_JSFUSION_test.csv:VIDEO_DIR", "1k-A, text -> video retrieval"),
    "crosstask": ("crosstask=CROSSTASK_ROOT:VIDEO_DIR", "tasks_primary.txt, videos.csv, annotations/"),
    "mining": ("mining=SRT_DIR:VIDEO_DIR", "Mining YouTube per-video SRT annotations (+ mapping_without_meta.txt)"),
    "csv": ("csv=CLIPS_CSV:VIDEO_DIR", "your own video_id,start,end,text"),
    "synthetic": ("synthetic=CORPUS_DIR", "the synthetic corpus's eval split"),
    "youcook2-features": (
        "youcook2-features=youcook_val.pkl",
        "released pooled clip features, no video (howto100m's; AVLnet's youcook_val_audio.pkl with audio)",
    ),
    "msrvtt-features": (
        "msrvtt-features=MSRVTT_JSFUSION_test.pth[:MSRVTT_JSFUSION_test.csv]",
        "released 1k-A features, no video (howto100m's .pth; AVLnet's msrvtt_jsfusion_test.pkl)",
    ),
}
# Kinds whose spec is one path (no video folder), and kinds whose candidates come as features in a file.
ONE_PATH_KINDS = ("synthetic", "youcook2-features")
BASELINE_FIELDS = ("baseline_weights", "baseline_dictionary", "baseline_extract")
FEATURE_KINDS = ("youcook2-features", "msrvtt-features")


def spec_forms_help() -> str:
    """The spec forms, one per line, for command-line help."""
    width = max(len(form) for form, _ in SPEC_FORMS.values()) + 3
    return "\n".join(f"  {form:<{width}}{what}" for form, what in SPEC_FORMS.values())


# Evaluation settings under which a training preset's published numbers were computed, by preset name
# (EvalConfig.from_preset). The paper ranks by euclidean distance in the joint space (section 4); the loss
# trains dot products, which stays the default for every other run.


class EvalConfig(FingerprintedConfig):
    """How to score and what to draw. Fields marked runtime change speed or figures, never a number.

    Every benchmark is scored under both protocols (``strict`` and ``reference``, see
    :mod:`pipeline.evaluate.metrics`); no field chooses between them.
    """

    modalities: tuple[Modality, ...] = Field(
        ("video", "video+audio"), description="query against video, and video+audio (the sum of the two embeddings)"
    )
    ks: tuple[int, ...] = Field((1, 5, 10), description="the K of R@K")
    # Every report names the similarity used.
    similarity: Literal["dot", "cosine", "euclidean"] = Field(
        "dot",
        description="dot (what the loss trains), cosine, or euclidean (negative squared distance: the paper's "
        "ranking; the paper preset sets it)",
    )
    youcook2_subset: str = Field("validation", description="YouCook2 subset scored (the release has no test labels)")
    # Ordered segmentation (Mining YouTube, and CrossTask's IoU/IoD): a background second scores log(1/K) + this,
    # on per-second log-softmax over the video's K distinct classes (a second goes to a class when that class is
    # more probable than uniform by this margin).
    background_margin: float = Field(0.0, description="ordered segmentation: a background second's margin over 1/K")
    # As MCN's evaluation (cvpr19_dataloader.py: [t-4, t+4) s, shifted inside the video at its ends).
    localisation_audio_window_s: float = Field(8.0, gt=0, description="seconds of audio around each localised second")
    mining_dictionary: str | None = Field(
        None, description="Mining YouTube's mapping_without_meta.txt; unset: found beside the annotations"
    )
    mining_ground_truth: str | None = Field(
        None, description="Mining YouTube frame-level groundTruth/ folder; unset: a groundTruth/ beside them"
    )
    chance_simulations: int = Field(
        200, ge=1, description="seeded random rankings/segmentations behind the chance medians and IoU"
    )
    seed: int = Field(0, description="seed of the chance simulations")
    # The MIL-NCE zero-shot baseline (mmcaps evaluate --baseline milnce; pipeline.evaluate.baseline). Left out of the
    # fingerprint (fingerprint_payload): they do not touch a trained run's numbers, and a baseline's metrics.json names
    # its weights and dictionary by sha256 and its folder by the weights' hash.
    baseline_weights: str = Field(
        "s3d_howto100m.pth", description="--baseline milnce: the release's s3d_howto100m.pth, or random (tests)"
    )
    baseline_dictionary: str | None = Field(
        None,
        description="--baseline milnce: s3d_dict.npy; unset: the one beside baseline_weights (random weights: the "
        "benchmark's own words)",
    )
    baseline_extract: str | None = Field(
        None,
        description="--baseline milnce: the extract config (YAML or shipped name) that the s3d stream is added to; "
        "the same as a run's shares its other streams in the feature store; unset: the default",
    )

    chunk_size: int = runtime_field(1024, ge=1, description="queries scored per block (memory ~ chunk x candidates)")
    batch_size: int = runtime_field(256, ge=1, description="clips per forward pass")
    device: str = runtime_field("cpu", description="cpu, cuda or cuda:N")
    figures: tuple[Figure, ...] = runtime_field(
        ("recall", "topk", "capsules", "localisation"), description="figures drawn in the report"
    )
    n_examples: int = runtime_field(3, ge=0, description="queries shown with their top-k clips")
    top_k_shown: int = runtime_field(5, ge=1, description="clips shown per example query")
    n_capsules: int = runtime_field(4, ge=0, description="capsules shown with the clips that activate them most")
    capsule_top: int = runtime_field(4, ge=1, description="clips shown per capsule")
    thumbnail_width: int = runtime_field(160, ge=16, description="thumbnail width in pixels")

    @classmethod
    def from_preset(cls, name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> EvalConfig:
        """The ``evaluate:`` section of a preset (``model/presets/<name>.yaml`` or a YAML file of that layout:
        ``paper`` ranks by euclidean distance, as the paper); then dotted ``overrides``."""
        data = load_preset(name_or_path).get("evaluate") or {}
        if not isinstance(data, dict):
            raise ValueError(f"preset {name_or_path}: the 'evaluate:' section must be a mapping")
        try:
            cfg = cls.model_validate(data)
        except ValueError as exc:
            raise ValueError(f"preset {name_or_path}: invalid evaluate settings: {exc}") from exc
        return cfg.with_updates(dict(overrides)) if overrides else cfg

    def fingerprint_payload(self) -> dict[str, Any]:
        out = super().fingerprint_payload()
        for name in BASELINE_FIELDS:  # see the fields: the baseline names its files in its own metrics.json
            out.pop(name, None)
        return out

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
    ``synthetic`` takes the corpus folder as ``annotations`` and no ``videos``. The released-feature kinds
    (:data:`FEATURE_KINDS`) have no ``videos``: ``features`` is the features file, ``annotations`` the file
    naming the queries (the features file itself for ``youcook2-features``, the CSV for ``msrvtt-features``).
    """

    kind: str
    annotations: Path
    videos: Path | None = None
    name: str | None = None
    features: Path | None = None

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
        if kind in ONE_PATH_KINDS:
            if not value:
                raise ValueError(f"expected {SPEC_FORMS[kind][0]}, got {text!r}")
            features = Path(value) if kind in FEATURE_KINDS else None
            return cls(kind, Path(value), None, name or None, features)
        if kind == "msrvtt-features":  # FEATURES[:CSV]
            feats, _, csv = value.partition(":")
            if not feats:
                raise ValueError(f"expected {SPEC_FORMS[kind][0]}, got {text!r}")
            return cls(kind, Path(csv or feats), None, name or None, Path(feats))
        ann, sep, videos = value.partition(":")
        if not sep or not ann or not videos:
            raise ValueError(f"expected {SPEC_FORMS[kind][0]}, got {text!r}")
        return cls(kind, Path(ann), Path(videos), name or None)
