"""Where an index lives and what names it. One folder per (run, dataset)::

    <root>/models/<run-id>/index/<dataset>/
        index.json                       the current generation: fingerprints, config, counts, files (written last)
        <fingerprint>/clips.parquet      the clip table, one row per clip (CLIP_SCHEMA)
        <fingerprint>/video.npy          float32|float16 [N, D] video embeddings, row i = clip i
        <fingerprint>/audio.npy          [N, D] audio embeddings (zeros where the video has no sound); audio models
        <fingerprint>/activations.npy    float32 [N, C] secondary-capsule activations of the video branch
        <fingerprint>/capsules.parquet   the top clips of every capsule (CAPSULE_SCHEMA), most selective first
        <fingerprint>/<modality>.faiss   the approximate index of a modality, when one was built
        parts/<parts-key>/<video>-<sha16>.parquet   one video's rows and embeddings (PART_SCHEMA)

``parts-key`` names everything a video's rows depend on besides the video: the checkpoint's sha256, the dataset's
extract fingerprint, the clip plan (window, stride, captions) and the audio crop length. A video whose part exists
is never embedded again; a new video adds one part. ``fingerprint`` (the generation) adds the dataset's content
fingerprint and the rest of the IndexConfig (dtype, approximate settings): an unchanged dataset re-uses its
generation, a changed one writes a new generation and then points ``index.json`` at it, so a reader sees the old
index or the new one, never a mix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from model.fingerprint import content_fingerprint
from pipeline.runs import RunFolder
from pipeline.search.config import IndexConfig
from storage.workspace import Workspace, safe_name

INDEX_FORMAT = 1

CLIP_SCHEMA = pa.schema(
    [
        pa.field("clip", pa.int64(), nullable=False),  # row of the matrices
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # window | caption
        pa.field("start", pa.float64(), nullable=False),  # seconds
        pa.field("end", pa.float64(), nullable=False),
        pa.field("text", pa.string(), nullable=False),  # the caption, or the captions overlapping the window
        pa.field("has_audio", pa.bool_(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),  # of the source video
        pa.field("source", pa.string(), nullable=False),  # the video file as the manifest gives it
    ]
)
CAPSULE_SCHEMA = pa.schema(
    [
        pa.field("capsule", pa.int64(), nullable=False),
        pa.field("order", pa.int64(), nullable=False),  # 0 = the most selective capsule
        pa.field("spread", pa.float64(), nullable=False),  # std of its activation over all clips
        pa.field("mean", pa.float64(), nullable=False),
        pa.field("rank", pa.int64(), nullable=False),  # 0 = the clip that activates it most
        pa.field("clip", pa.int64(), nullable=False),
        pa.field("activation", pa.float64(), nullable=False),
    ]
)


def part_schema(dim: int, capsules: int, with_audio: bool) -> pa.Schema:
    """One video's part: its clip rows (without ``clip``, ``sha256``, ``source``) and their embeddings."""
    fields = [f for f in CLIP_SCHEMA if f.name not in ("clip", "sha256", "source")]
    fields.append(pa.field("video", pa.list_(pa.float32(), dim), nullable=False))
    if with_audio:
        fields.append(pa.field("audio", pa.list_(pa.float32(), dim), nullable=False))
    if capsules:
        fields.append(pa.field("activations", pa.list_(pa.float32(), capsules), nullable=False))
    return pa.schema(fields)


@dataclass(frozen=True)
class IndexFolder:
    """The index of ``dataset`` under one run folder (see the module doc for the layout)."""

    run: RunFolder
    dataset: str

    @property
    def workspace(self) -> Workspace:
        return self.run.workspace

    @property
    def path(self) -> str:
        return self.run.index_dir(self.dataset)

    @property
    def info_path(self) -> str:
        return f"{self.path}/index.json"

    def parts_dir(self, parts_key: str) -> str:
        return f"{self.path}/parts/{safe_name(parts_key)}"

    def part_path(self, parts_key: str, video_id: str, sha256: str) -> str:
        return f"{self.parts_dir(parts_key)}/{safe_name(video_id, what='video id')}-{sha256[:16]}.parquet"

    def generation_dir(self, fingerprint: str) -> str:
        return f"{self.path}/{safe_name(fingerprint)}"

    def exists(self) -> bool:
        return self.workspace.exists(self.info_path)

    def info(self) -> dict[str, Any]:
        """index.json; raises FileNotFoundError naming the run and dataset when there is no index."""
        if not self.exists():
            raise FileNotFoundError(
                f"run {self.run.run_id} has no index of dataset {self.dataset!r} ({self.info_path}); build it with "
                f"mmcaps index --model {self.run.run_id} --dataset {self.dataset}"
            )
        try:
            return json.loads(self.workspace.read_bytes(self.info_path))
        except ValueError as exc:
            raise ValueError(f"{self.info_path}: not valid JSON ({exc})") from exc


def parts_key(checkpoint_sha256: str, extract_fp: str, cfg: IndexConfig, audio_frames: int) -> str:
    """What a video's part depends on besides the video itself (module doc)."""
    return content_fingerprint(
        "SearchIndexParts",
        {
            "checkpoint": checkpoint_sha256,
            "extract": extract_fp,
            "clips": cfg.clip_payload(),
            "audio_frames": audio_frames,
            "format": INDEX_FORMAT,
        },
        16,
    )


def generation_fingerprint(parts: str, dataset_fp: str, cfg: IndexConfig) -> str:
    """The index's name: checkpoint, dataset content and windowing (through ``parts``), and the stored form."""
    return content_fingerprint("SearchIndex", {"parts": parts, "dataset": dataset_fp, "config": cfg.fingerprint()}, 16)
