"""The approximate index: FAISS IVF-Flat by inner product, built beside the exact matrices only when they are large,
with its recall@10 against exact search measured at build time and kept with it.

IVF-Flat splits the rows into ``nlist`` k-means cells and scans only the ``nprobe`` cells nearest each query; the
scores of the rows it scans are exact. ``nprobe`` is chosen as the smallest power of 2 whose recall@10 against exact
search reaches the target plus half the distance to 1 (0.975 for 0.95: a margin for the sampling noise of a few
hundred queries) on one half of the recall queries; the recall reported is measured on the other half, at that
``nprobe`` (so the figure is not the one the choice was fitted to).

``faiss`` is imported on first use: ``pipeline.search`` loads without it, and only large indexes need it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.search.exact import _block, exact_top_k, recall_at_k

K_RECALL = 10


def _faiss() -> Any:
    try:
        import faiss  # noqa: PLC0415  deferred: faiss
    except ImportError as exc:  # pragma: no cover - declared in pyproject; only a broken install lacks it
        raise ImportError("the approximate index needs faiss (pip install faiss-cpu)") from exc
    faiss.omp_set_num_threads(max(1, torch.get_num_threads()))
    return faiss


def default_nlist(n: int) -> int:
    """About sqrt(N) cells (FAISS's rule of thumb is 4-16 sqrt(N); fewer cells train faster on two cores and need a
    smaller nprobe for the same recall), at least 8, and at most N / 39 so k-means has its 39 points per cell."""
    return int(max(1, min(max(8, round(math.sqrt(n))), n // 39)))


@dataclass
class RecallPoint:
    """One row of the nprobe sweep: recall@10 vs exact on the tuning queries and the mean latency per query."""

    nprobe: int
    recall: float
    ms_per_query: float


@dataclass
class ApproxStats:
    """What the build measured. ``recall`` is on held-out queries at the chosen ``nprobe``; ``exact_ms`` is the exact
    search time per query on the same queries, batched the same way."""

    kind: str
    nlist: int
    nprobe: int
    recall: float
    ms_per_query: float
    exact_ms_per_query: float
    queries: int
    query_source: str
    train_rows: int
    build_seconds: float
    sweep: list[RecallPoint] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApproxStats:
        data = dict(data)
        data["sweep"] = [RecallPoint(**p) for p in data.get("sweep", [])]
        return cls(**data)

    def line(self) -> str:
        return (
            f"IVF-Flat nlist={self.nlist} nprobe={self.nprobe}: recall@{K_RECALL} vs exact {self.recall:.3f} on "
            f"{self.queries} held-out {self.query_source} queries, {self.ms_per_query:.2f} ms/query "
            f"(exact {self.exact_ms_per_query:.2f} ms/query)"
        )


class ApproxIndex:
    """A trained and filled FAISS IVF index over one modality's rows, and its measured recall."""

    def __init__(self, index: Any, stats: ApproxStats) -> None:
        self.index = index
        self.stats = stats
        self.set_nprobe(stats.nprobe)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def set_nprobe(self, nprobe: int) -> None:
        _faiss().extract_index_ivf(self.index).nprobe = int(nprobe)

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 [Q, k], indices int64 [Q, k]) best first; -1 where fewer than k rows were scanned."""
        q = np.ascontiguousarray(torch.as_tensor(queries).float().numpy())
        scores, idx = self.index.search(q, int(k))
        return scores, idx

    def to_bytes(self) -> bytes:
        return _faiss().serialize_index(self.index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, stats: ApproxStats) -> ApproxIndex:
        index = _faiss().deserialize_index(np.frombuffer(data, dtype=np.uint8))
        return cls(index, stats)


def _timed_search(index: ApproxIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    _, idx = index.search(queries, k)
    return idx, 1000.0 * (time.perf_counter() - started) / max(1, len(queries))


def build_ivf(
    parts: Sequence[np.ndarray],
    queries: np.ndarray,
    *,
    query_source: str,
    nlist: int | None = None,
    target_recall: float = 0.95,
    seed: int = 0,
    block_rows: int = 65_536,  # rows added to the index at a time
) -> ApproxIndex:
    """Train IVF-Flat on a seeded sample of ``sum(parts)`` [N, D], add every row, choose nprobe (module doc).

    ``queries`` [Q, D] (Q >= 2): what recall is measured with, e.g. the text embeddings of the dataset's captions.
    """
    faiss = _faiss()
    started = time.perf_counter()
    n, d = int(parts[0].shape[0]), int(parts[0].shape[1])
    nlist = int(nlist or default_nlist(n))
    if n < nlist:
        raise ValueError(f"an IVF index with {nlist} lists needs at least as many rows, got {n}")
    index = faiss.index_factory(d, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.niter = 10  # FAISS's default 25 buys little recall for IVF at 2.5x the training time
    ivf.cp.seed = seed
    rng = np.random.default_rng(seed)
    n_train = min(n, max(64 * nlist, 10_000))
    rows = np.sort(rng.choice(n, size=n_train, replace=False))
    sample = sum(np.asarray(p[rows], dtype=np.float32) for p in parts)  # fancy indexing reads only those rows
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    for lo in range(0, n, block_rows):
        index.add(np.ascontiguousarray(_block(parts, lo, min(n, lo + block_rows)).numpy()))

    q = np.ascontiguousarray(torch.as_tensor(queries).float().numpy())
    if len(q) < 2:
        raise ValueError("recall needs at least two queries (one half tunes nprobe, the other measures)")
    half = len(q) // 2
    tune, held = q[:half], q[half:]
    k = min(K_RECALL, n)
    t0 = time.perf_counter()
    exact_idx = exact_top_k(torch.from_numpy(q), parts, k, block_rows=block_rows)[1].numpy()
    exact_ms = 1000.0 * (time.perf_counter() - t0) / len(q)
    tmp = ApproxIndex(index, ApproxStats("ivf_flat", nlist, 1, 0.0, 0.0, exact_ms, 0, query_source, n_train, 0.0))
    sweep: list[RecallPoint] = []
    chosen = nlist
    nprobe = 1
    while nprobe <= nlist:
        tmp.set_nprobe(nprobe)
        found, ms = _timed_search(tmp, tune, k)
        sweep.append(RecallPoint(nprobe, recall_at_k(found, exact_idx[:half]), ms))
        if sweep[-1].recall >= target_recall + (1.0 - target_recall) / 2:
            chosen = nprobe
            break
        nprobe *= 2
    chosen = min(chosen, nlist)
    tmp.set_nprobe(chosen)
    found, ms = _timed_search(tmp, held, k)
    stats = ApproxStats(
        kind="ivf_flat",
        nlist=nlist,
        nprobe=chosen,
        recall=recall_at_k(found, exact_idx[half:]),
        ms_per_query=ms,
        exact_ms_per_query=exact_ms,
        queries=len(held),
        query_source=query_source,
        train_rows=n_train,
        build_seconds=time.perf_counter() - started,
        sweep=sweep,
    )
    return ApproxIndex(index, stats)
