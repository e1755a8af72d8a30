"""Querying an index: :class:`SearchIndex` (the stored clip table and matrices, memory-mapped) and :class:`Searcher`
(texts → the run's joint space → the top clips). ``mmcaps search`` and the web app both call
:meth:`Searcher.search`, so they return the same clips and scores.

Methods: ``exact`` scores every clip (:func:`pipeline.search.exact.exact_top_k`); ``approximate`` asks the FAISS
index (only present on large indexes); ``auto`` takes the approximate index where there is one. ``video+audio``
scores the sum of the two embeddings, as evaluation's ``video+audio`` retrieval does.

Shapes: Q queries, N clips, D joint dimension, C capsules, k results.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch

from pipeline.runs import RunFolder
from pipeline.search.approx import ApproxIndex
from pipeline.search.build import load_approximate, load_matrix, open_indexed_dataset, read_table
from pipeline.search.config import MODALITIES, IndexConfig
from pipeline.search.encode import QueryEncoder, checkpoint_sha256, load_model
from pipeline.search.exact import _has_faiss, exact_top_k
from pipeline.search.layout import IndexFolder
from storage.workspace import Workspace

Method = Literal["auto", "exact", "approximate"]


@dataclass(frozen=True)
class Hit:
    """One result: a clip of the index with its score (dot product in the joint space)."""

    rank: int
    clip: int
    video_id: str
    start: float
    end: float
    score: float
    kind: str
    text: str
    source: str
    has_audio: bool


@dataclass
class QueryResult:
    """The hits of one query, how they were found, and which of its words the word vectors do not know."""

    query: str
    modality: str
    method: str
    seconds: float
    in_vocab_words: int
    unknown_words: list[str]
    hits: list[Hit] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TopK:
    scores: np.ndarray  # float32 [Q, k]
    clips: np.ndarray  # int64 [Q, k]; -1 where the approximate index found fewer than k
    method: str
    seconds: float


class SearchIndex:
    """The current generation of a run's index of a dataset (``index.json`` and the files it names)."""

    def __init__(self, folder: IndexFolder, info: dict[str, Any], *, mmap: bool = True) -> None:
        self.folder = folder
        self.info = info
        ws = folder.workspace
        self.gen = folder.generation_dir(info["fingerprint"])
        files = info["files"]
        self.clips: pa.Table = read_table(ws, f"{self.gen}/{files['clips']}")
        self.matrices: dict[str, np.ndarray] = {
            name: load_matrix(ws, f"{self.gen}/{files[name]}", mmap=mmap)
            for name in ("video", "audio", "activations")
            if name in files
        }
        self._approx: dict[str, ApproxIndex | None] = {}
        _has_faiss()  # import it now, not inside the first query's time
        self._columns = {
            name: self.clips.column(name).to_numpy(zero_copy_only=False) for name in self.clips.column_names
        }

    @classmethod
    def open(cls, run: RunFolder, dataset: str, *, mmap: bool = True) -> SearchIndex:
        """The index of ``dataset`` built with ``run``; FileNotFoundError (with the command to build it) if none."""
        folder = IndexFolder(run, dataset)
        return cls(folder, folder.info(), mmap=mmap)

    def __len__(self) -> int:
        return self.clips.num_rows

    @property
    def modalities(self) -> list[str]:
        return [m for m in MODALITIES if m in self.info["modalities"]]

    @property
    def default_modality(self) -> str:
        return "video+audio" if "video+audio" in self.modalities else "video"

    def parts(self, modality: str) -> list[np.ndarray]:
        """The matrices whose sum is the candidates of ``modality`` (each [N, D])."""
        if modality not in self.modalities:
            raise ValueError(f"index has no {modality!r} embeddings; it has {', '.join(self.modalities)}")
        if modality == "video+audio":
            return [self.matrices["video"], self.matrices["audio"]]
        return [self.matrices[modality]]

    def approximate(self, modality: str) -> ApproxIndex | None:
        """The FAISS index of ``modality`` (loaded on first use), or None when the index is small."""
        if modality not in self._approx:
            self._approx[modality] = load_approximate(self.folder.workspace, self.gen, self.info, modality)
        return self._approx[modality]

    def top_k(self, queries: torch.Tensor, k: int, modality: str, method: Method = "auto") -> TopK:
        """The ``k`` best clips per query [Q, D] (see the module doc for ``method``)."""
        parts = self.parts(modality)
        approx = self.approximate(modality) if method != "exact" else None
        if method == "approximate" and approx is None:
            raise ValueError(
                f"index {self.folder.dataset} has no approximate {modality} index ({len(self)} clips; it is built from "
                f"approximate_min_clips={self.info['config']['approximate_min_clips']}, or with approximate=always)"
            )
        started = time.perf_counter()
        if approx is not None:
            scores, idx = approx.search(queries, k)
            name = f"approximate (IVF nprobe={approx.stats.nprobe}, recall@10 {approx.stats.recall:.3f})"
        else:
            s, i = exact_top_k(queries, parts, k)
            scores, idx, name = s.numpy(), i.numpy(), "exact"
        return TopK(scores, idx, name, time.perf_counter() - started)

    def row(self, clip: int) -> dict[str, Any]:
        """The clip table's row ``clip`` as plain values."""
        c = self._columns
        return {
            "clip": int(clip),
            "video_id": str(c["video_id"][clip]),
            "kind": str(c["kind"][clip]),
            "start": float(c["start"][clip]),
            "end": float(c["end"][clip]),
            "text": str(c["text"][clip]),
            "has_audio": bool(c["has_audio"][clip]),
            "source": str(c["source"][clip]),
            "sha256": str(c["sha256"][clip]),
        }

    def capsules(self, n_capsules: int | None = None, top: int | None = None) -> list[dict[str, Any]]:
        """Capsules, most selective first, each with its top clips (rows of the clip table plus ``activation``)."""
        name = self.info["files"].get("capsules")
        if not name:
            return []
        table = read_table(self.folder.workspace, f"{self.gen}/{name}").to_pylist()
        out: dict[int, dict[str, Any]] = {}
        for r in table:
            cap = out.setdefault(
                r["capsule"],
                {"capsule": r["capsule"], "order": r["order"], "spread": r["spread"], "mean": r["mean"], "clips": []},
            )
            if top is None or len(cap["clips"]) < top:
                cap["clips"].append({**self.row(r["clip"]), "activation": r["activation"]})
        caps = sorted(out.values(), key=lambda c: c["order"])
        return caps[:n_capsules] if n_capsules is not None else caps

    def staleness(self) -> list[str]:
        """Why the index may no longer match its run or dataset (empty when it matches): a rewritten checkpoint,
        videos added to or removed from the dataset since it was built."""
        run, info = self.folder.run, self.info
        notes = []
        try:
            if checkpoint_sha256(run, info["checkpoint"]) != info["checkpoint_sha256"]:
                notes.append(f"checkpoint {info['checkpoint']} of run {run.run_id} changed since the index was built")
        except FileNotFoundError as exc:
            notes.append(str(exc))
        try:
            cfg = IndexConfig.model_validate(info["config"])
            ds, _ = open_indexed_dataset(run, self.folder.dataset, cfg)
            if ds.fingerprint != info["dataset_fingerprint"]:
                notes.append(
                    f"dataset {self.folder.dataset} changed since the index was built ({ds.num_videos} videos now, "
                    f"{info['videos']} indexed): run mmcaps index --model {run.run_id} --dataset {self.folder.dataset}"
                )
        except (FileNotFoundError, KeyError, ValueError) as exc:
            notes.append(f"dataset {self.folder.dataset}: {exc}")
        return notes


class Searcher:
    """An index and the run's text encoder: ``search(["put the egg in the pan"], k=10)``."""

    def __init__(self, index: SearchIndex, encoder: QueryEncoder) -> None:
        self.index = index
        self.encoder = encoder

    @classmethod
    def open(cls, workspace: Workspace | str | None, run_id: str, dataset: str, *, device: str = "cpu") -> Searcher:
        """Open the index of ``dataset`` built with run ``run_id`` and load the checkpoint it was built with.

        Raises ValueError when that checkpoint was rewritten since (the index would answer for another model).
        """
        ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        run = RunFolder(ws, run_id).require()
        index = SearchIndex.open(run, dataset)
        model = load_model(run, index.info["checkpoint"], device)
        if model.sha256 != index.info["checkpoint_sha256"]:
            raise ValueError(
                f"run {run_id}: checkpoint {index.info['checkpoint']} changed since index {dataset} was built; "
                f"rebuild it with mmcaps index --model {run_id} --dataset {dataset}"
            )
        searcher = cls(index, QueryEncoder.for_run(run, model, device))
        searcher.search(["warm up"], 1)  # first calls initialise torch kernels and worker threads: not a query's time
        return searcher

    def search(
        self, texts: list[str], k: int = 10, *, modality: str | None = None, method: Method = "auto"
    ) -> list[QueryResult]:
        """The top ``k`` clips of each text (all texts scored in one pass over the matrices)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        modality = modality or self.index.default_modality
        started = time.perf_counter()
        enc = self.encoder.encode(list(texts))
        if not texts:
            return []
        top = self.index.top_k(enc.embeddings, k, modality, method)
        seconds = time.perf_counter() - started
        out = []
        for q, text in enumerate(texts):
            hits = []
            for rank, (clip, score) in enumerate(zip(top.clips[q], top.scores[q], strict=True), start=1):
                if clip < 0:
                    continue
                row = self.index.row(int(clip))
                hits.append(
                    Hit(
                        rank=rank,
                        clip=int(clip),
                        video_id=row["video_id"],
                        start=row["start"],
                        end=row["end"],
                        score=float(score),
                        kind=row["kind"],
                        text=row["text"],
                        source=row["source"],
                        has_audio=row["has_audio"],
                    )
                )
            out.append(
                QueryResult(
                    query=text,
                    modality=modality,
                    method=top.method,
                    seconds=seconds,
                    in_vocab_words=enc.in_vocab[q],
                    unknown_words=enc.unknown[q],
                    hits=hits,
                )
            )
        return out
