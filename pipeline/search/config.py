"""How a dataset becomes a search index (:class:`IndexConfig`): which clips, which checkpoint, how stored, and when an
approximate index is built beside the exact one."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from model.fingerprint import FingerprintedConfig, runtime_field

Modality = Literal["video", "audio", "video+audio"]
MODALITIES: tuple[Modality, ...] = ("video", "audio", "video+audio")


class IndexConfig(FingerprintedConfig):
    """The clips of every video (sliding windows, plus one per caption), the matrices' dtype, the approximate index.

    ``window``/``stride``/``captions`` decide the rows; with the checkpoint and the dataset they name the index
    (see :mod:`pipeline.search.layout`). The approximate fields change only the FAISS files beside the exact matrices.
    """

    window: float = Field(8.0, gt=0, description="seconds of a sliding-window clip")
    stride: float = Field(4.0, gt=0, description="seconds between the starts of consecutive windows")
    captions: bool = Field(True, description="also one clip per caption (its own time span)")
    checkpoint: str = Field("final", description="final or step-<n> of the run")
    extract_fingerprint: str | None = Field(
        None, description="the dataset's extraction to index (None: the run's own if the dataset has it, else latest)"
    )
    dtype: Literal["float32", "float16"] = Field(
        "float32", description="stored matrices; float16 halves memory and bandwidth (scores then differ ~1e-3)"
    )

    approximate: Literal["auto", "always", "never"] = Field(
        "auto", description="FAISS IVF index beside the exact matrices: auto = only from approximate_min_clips rows"
    )
    approximate_min_clips: int = Field(
        250_000, ge=1, description="below this, exact search is fast enough (README: bench search)"
    )
    # IVF-Flat's lists hold every row in float32 (1 GiB at 1 M x D 256, per modality); IVF-PQ holds D/8 + 8 bytes a
    # row and re-ranks exactly from the stored matrix. At 1 M x 256 (bench search) PQ re-ranked reached recall 0.973 at
    # 1.8 ms a query against Flat's 0.959 at 0.6 ms: below 1 M Flat is faster and small enough, from there on PQ.
    approximate_kind: Literal["auto", "ivf_flat", "ivf_pq"] = Field(
        "auto", description="auto: IVF-PQ from approximate_pq_min_clips rows, IVF-Flat below"
    )
    approximate_pq_min_clips: int = Field(
        1_000_000, ge=1, description="rows from which auto builds IVF-PQ (IVF-Flat's memory is 4 D bytes a row)"
    )
    pq_bytes: int | None = Field(None, ge=1, description="IVF-PQ code bytes a row; None: D/8 (32 at D = 256)")
    rerank: int = Field(100, ge=1, description="IVF-PQ candidates per query re-ranked exactly from the matrices")
    nlist: int | None = Field(None, ge=1, description="IVF lists; None: about sqrt(clips)")
    target_recall: float = Field(
        0.95, gt=0, le=1, description="recall@10 vs exact the nprobe must reach (tuned with a margin, see approx)"
    )
    recall_queries: int = Field(256, ge=2, description="caption texts sampled to measure recall@10 vs exact")
    seed: int = 0

    batch_size: int = runtime_field(256, ge=1, description="clips per forward pass")
    device: str = runtime_field("cpu")
    videos_per_task: int = runtime_field(32, ge=1, description="videos embedded per Prefect task (one part each)")
    capsule_top: int = runtime_field(12, ge=1, description="clips kept per capsule for the capsules view")
    capsule_per_video: int = runtime_field(1, ge=1, description="at most this many of them from one video")

    @model_validator(mode="after")
    def _check(self) -> IndexConfig:
        if self.stride > self.window:
            raise ValueError(f"stride {self.stride} s > window {self.window} s would leave gaps between clips")
        return self

    def approximate_kind_for(self, clips: int) -> Literal["ivf_flat", "ivf_pq"]:
        """The approximate index built over ``clips`` rows: ``approximate_kind``, or by size when it is auto."""
        if self.approximate_kind != "auto":
            return self.approximate_kind
        return "ivf_pq" if clips >= self.approximate_pq_min_clips else "ivf_flat"

    def clip_payload(self) -> dict[str, object]:
        """The fields that decide the rows of a video (what a video's part file depends on, with the checkpoint)."""
        return {"window": self.window, "stride": self.stride, "captions": self.captions}
