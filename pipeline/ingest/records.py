"""What the ingest driver passes around: jobs (one video to ingest), records (what came of it: a manifest row to
be), plans (what a run must do) and summaries (what it did). Small, picklable and JSON-able: executors ship jobs to
worker threads, processes or Dask workers and records back, and Prefect shows them."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, Self

from storage.features import stream_keys
from storage.sample import Captions, captions_digest
from storage.workspace import safe_name


def one_line(text: str, limit: int = 400) -> str:
    """Collapse whitespace to one line and cap its length (manifest errors are one line)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def utc_now() -> str:
    """Now, ISO-8601 UTC with microseconds (the ``extracted_at`` of a record)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def new_run_id() -> str:
    """A sortable, unique run token for shard names: ``20240501T120000-1a2b3c``."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


class JobDict:
    """``to_dict``/``from_dict`` of a job dataclass with a ``captions`` field: plain JSON (the captions as
    :meth:`Captions.to_json`)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)  # type: ignore[call-overload]
        data["captions"] = self.captions.to_json() if self.captions is not None else None  # type: ignore[attr-defined]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        data = dict(data)
        if data.get("captions") is not None:
            data["captions"] = Captions.from_json(data["captions"])
        return cls(**data)


class Job(Protocol):
    """What the driver needs of any job: which video, and where it is (for messages)."""

    video_id: str
    source: str


@dataclass(frozen=True)
class ExtractJob(JobDict):
    """One video to extract (or, for an import, to finish: :meth:`ImportJob.extract_job`)."""

    video_id: str
    source: str
    sha256: str
    size_bytes: int
    extract_fingerprint: str
    stream_fingerprints: dict[str, str]
    captions: Captions | None = None
    reason: str = "new"  # new | changed | retry | captions changed
    error: str = ""  # set at planning time when the video cannot be extracted at all (an unreadable file)
    warning: str = ""  # a problem that keeps the video (its subtitle file could not be read: no captions)

    @property
    def captions_sha256(self) -> str:
        return captions_digest(self.captions)

    def store_keys(self) -> dict[str, str]:
        """The feature store key of each stream: the file's sha256, the captions' digest for text."""
        return stream_keys(self.sha256, self.captions_sha256, self.stream_fingerprints)


@dataclass
class ExtractRecord:
    """The outcome of one video's ingest: a manifest row to be. Its arrays are in the feature store."""

    video_id: str
    source: str
    sha256: str
    size_bytes: int
    status: str  # ok | failed
    error: str
    duration_s: float
    has_audio: bool
    n_captions: int
    extract_fingerprint: str
    extracted_at: str  # ISO-8601 UTC, microseconds
    captions_sha256: str = ""  # captions_digest of the captions extracted with the video
    stream_fingerprints: dict[str, str] = field(default_factory=dict)
    computed: list[str] = field(default_factory=list)  # the streams this run computed (the rest were stored)
    elapsed_s: float = 0.0
    warning: str = ""  # one line: what did not stop the video (captions not read)

    @property
    def key(self) -> str:
        return safe_name(self.video_id, what="video id")

    def store_keys(self) -> dict[str, str]:
        return stream_keys(self.sha256, self.captions_sha256, self.stream_fingerprints)

    def manifest_row(self, shard: str) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "source": self.source,
            "sha256": self.sha256,
            "size_bytes": int(self.size_bytes),
            "status": self.status,
            "error": self.error,
            "warning": self.warning,
            "duration_s": float(self.duration_s),
            "has_audio": bool(self.has_audio),
            "n_captions": int(self.n_captions),
            "captions_sha256": self.captions_sha256,
            "shard": shard,
            "extract_fingerprint": self.extract_fingerprint,
            "extracted_at": self.extracted_at,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExtractRecord:
        return cls(**data)


def failed_record(job: ExtractJob, error: str, started: float | None = None) -> ExtractRecord:
    """The record of a video that could not be ingested (one line, naming the file)."""
    return ExtractRecord(
        video_id=job.video_id,
        source=job.source,
        sha256=job.sha256,
        size_bytes=job.size_bytes,
        status="failed",
        error=one_line(error),
        duration_s=0.0,
        has_audio=False,
        n_captions=len(job.captions) if job.captions is not None else 0,
        extract_fingerprint=job.extract_fingerprint,
        extracted_at=utc_now(),
        captions_sha256=job.captions_sha256,
        stream_fingerprints=dict(job.stream_fingerprints),
        elapsed_s=time.perf_counter() - started if started is not None else 0.0,
        warning=job.warning,
    )


@dataclass
class IngestPlan:
    """What a run must do: the jobs (new, changed, retried videos) and what it leaves alone."""

    dataset: str
    extract_fingerprint: str  # names the shard folder (an import's fingerprint for imports)
    jobs: list[Any]  # ExtractJob or ImportJob, in the source's order
    unchanged: list[str]  # video ids already ingested (ok) with the same bytes, captions and fingerprint
    failed_before: list[str]  # ids whose last attempt failed and that are not retried (retry_failed is off)
    absent: list[str] = field(default_factory=list)  # ids in the manifest that the source no longer lists

    def admits(self, video_id: str, reason: str | None) -> bool:
        """Whether a listed video becomes a job, given why (``pipeline.ingest.videos.job_reason``): None is an
        unchanged video, "failed before" a failure not retried; both are noted here instead."""
        if reason is None:
            self.unchanged.append(video_id)
            return False
        if reason == "failed before":
            self.failed_before.append(video_id)
            return False
        return True


@dataclass
class Tally:
    """What a run's records added up to, kept as it goes (a run over a million videos keeps no list of records)."""

    ok: int = 0
    reused: int = 0  # ok videos whose every stream came from the feature store
    failed: list[tuple[str, str]] = field(default_factory=list)  # (video_id, error)

    def add(self, record: ExtractRecord) -> None:
        if record.status == "ok":
            self.ok += 1
            self.reused += not record.computed
        else:
            self.failed.append((record.video_id, record.error))


@dataclass
class IngestSummary:
    """What a run did (this run's counts) and what the dataset now holds (for its fingerprint)."""

    dataset: str
    extract_fingerprint: str
    extracted: int  # videos ingested ok in this run
    unchanged: int  # videos skipped because the manifest already has them
    failed: list[tuple[str, str]]  # (video_id, error) of this run's failures
    failed_before: int  # earlier failures not retried
    reused: int  # of the ingested videos, those whose every stream came from the feature store
    shards: list[str]  # shards written in this run
    videos: int  # ok videos in the dataset now
    hours: float
    captions: int
    seconds: float
    dataset_fingerprint: str = ""  # names the dataset's content (training run ids derive from it)
    kind: str = "extract"  # extract | import: the words a summary uses

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        done, fp = ("imported", "import") if self.kind == "import" else ("extracted", "extract")
        lines = [
            f"dataset {self.dataset} ({fp} fingerprint {self.extract_fingerprint}): "
            f"{self.extracted} {done}"
            + (f" ({self.reused} wholly from stored features)" if self.reused else "")
            + f", {self.unchanged} unchanged, {len(self.failed)} failed"
            + (f", {self.failed_before} failed before (not retried)" if self.failed_before else ""),
            f"now {self.videos} videos, {self.hours:.2f} h, {self.captions} captions; "
            f"{len(self.shards)} new shard(s); {self.seconds:.1f} s",
        ]
        lines += [f"  failed {vid}: {err}" for vid, err in self.failed]
        return "\n".join(lines)
