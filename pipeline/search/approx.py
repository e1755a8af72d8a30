"""The approximate index: FAISS IVF-Flat by inner product, built beside the exact matrices only when they are large,
with its recall@10 against exact search measured at build time and kept with it.

IVF-Flat splits the rows into ``nlist`` k-means cells and scans only the ``nprobe`` cells nearest each query; the
scores of the rows it scans are exact. ``nprobe`` is chosen as the smallest power of 2 whose recall@10 against exact
search reaches the target plus half the distance to 1 (0.975 for 0.95: a margin for the sampling noise of a few
hundred queries) on one half of the recall queries; the recall reported is measured on the other half, at that
``nprobe`` (so the figure is not the one the choice was fitted to).

Beside it, IVF-PQ for corpora whose rows do not fit in memory (136 M clips x D 256 is 70 GB in float16): each row is
kept as a product-quantisation code of ``D / 8`` bytes (32 bytes at D = 256, 1/16 of its float16 row; M
sub-quantizers of 8 bits, :func:`pq_layout`), and the ``rerank`` best candidates of a query by those approximate
scores are scored again exactly against the float16 rows, memory-mapped from disk (:class:`RerankedPQ`). Its stats
give the re-ranked recall@10 against exact search on held-out queries and the PQ scores' own beside it.

``faiss`` is imported on first use: ``pipeline.search`` loads without it, and only large indexes need it.
"""

from __future__ import annotations

import math
import time
import warnings
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
    # IVF-PQ only: code bits per row (sub-quantizers x bits each), candidates re-ranked exactly, and the recall of
    # the PQ scores alone on the same held-out queries (what the exact re-ranking adds)
    code_bits: int = 0
    rerank: int = 0
    pq_recall: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApproxStats:
        data = dict(data)
        data["sweep"] = [RecallPoint(**p) for p in data.get("sweep", [])]
        return cls(**data)

    def line(self) -> str:
        if self.kind == "ivf_pq":
            return (
                f"IVF-PQ nlist={self.nlist} nprobe={self.nprobe}, {self.code_bits / 8:g} bytes a row "
                f"({self.code_bits} bits), top {self.rerank} re-ranked exactly from float16 rows: recall@{K_RECALL} "
                f"vs exact {self.recall:.3f} (PQ alone {self.pq_recall:.3f}) on {self.queries} held-out "
                f"{self.query_source} queries, {self.ms_per_query:.2f} ms/query (exact {self.exact_ms_per_query:.2f})"
            )
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


def _timed_search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    _, idx = index.search(queries, k)
    return idx, 1000.0 * (time.perf_counter() - started) / max(1, len(queries))


def _train_sample(parts: Sequence[np.ndarray], nlist: int, seed: int) -> np.ndarray:
    """A seeded sample of ``sum(parts)``'s rows to train the coarse quantizer on: float32 [min(N, 64 nlist, >=10k), D]."""
    n = int(parts[0].shape[0])
    if n < nlist:
        raise ValueError(f"an IVF index with {nlist} lists needs at least as many rows, got {n}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, max(64 * nlist, 10_000)), replace=False))
    sample = sum(np.asarray(p[rows], dtype=np.float32) for p in parts)  # fancy indexing reads only those rows
    return np.ascontiguousarray(sample, dtype=np.float32)


def _train_and_fill(
    parts: Sequence[np.ndarray], nlist: int, codes: str, seed: int, block_rows: int, sample: np.ndarray | None = None
) -> tuple[Any, int]:
    """An ``IVF{nlist},{codes}`` inner-product index trained on ``sample`` (default :func:`_train_sample`) and
    filled with every row of ``sum(parts)`` [N, D], ``block_rows`` at a time; and the rows it was trained on."""
    faiss = _faiss()
    sample = _train_sample(parts, nlist, seed) if sample is None else sample
    index = faiss.index_factory(int(parts[0].shape[1]), f"IVF{nlist},{codes}", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.cp.niter = 10  # FAISS's default 25 buys little recall for IVF at 2.5x the training time
    ivf.cp.seed = seed
    if codes.startswith("PQ"):
        ivf.pq.cp.niter = 10  # the same for each sub-quantizer's k-means
        # Hamming-ordered codes serve FAISS's polysemous filter, which this search does not use; ordering them
        # costs seconds per sub-quantizer (most of the training time on two cores)
        ivf.do_polysemous_training = False
    index.train(sample)
    n = int(parts[0].shape[0])
    for lo in range(0, n, block_rows):
        index.add(np.ascontiguousarray(_block(parts, lo, min(n, lo + block_rows)).numpy()))
    return index, len(sample)


def _choose_nprobe(index: Any, tune: np.ndarray, truth: np.ndarray, nlist: int, target: float) -> tuple[int, list]:
    """The smallest power-of-2 ``nprobe`` whose recall@k on ``tune`` [Q, D] against ``truth`` [Q, k] reaches the
    target plus half its distance to 1 (``nlist`` when none does), and the sweep that found it. ``index`` has
    ``set_nprobe`` and ``search``."""
    sweep: list[RecallPoint] = []
    nprobe = 1
    while nprobe <= nlist:
        index.set_nprobe(nprobe)
        found, ms = _timed_search(index, tune, truth.shape[1])
        sweep.append(RecallPoint(nprobe, recall_at_k(found, truth), ms))
        if sweep[-1].recall >= target + (1.0 - target) / 2:
            return nprobe, sweep
        nprobe *= 2
    return nlist, sweep


def _query_rows(queries: Any) -> np.ndarray:
    """Recall queries [Q, D] as contiguous float32; Q >= 2 (one half tunes nprobe, the other measures)."""
    q = np.ascontiguousarray(torch.as_tensor(queries).float().numpy())
    if len(q) < 2:
        raise ValueError("recall needs at least two queries (one half tunes nprobe, the other measures)")
    return q


def _exact_truth(q: np.ndarray, parts: Sequence[Any], k: int, block_rows: int) -> tuple[np.ndarray, float]:
    """Exact top-``k`` ids of every query [Q, k] over ``sum(parts)``, and the exact search's ms per query."""
    t0 = time.perf_counter()
    exact_idx = exact_top_k(torch.from_numpy(q), parts, k, block_rows=block_rows)[1].numpy()
    return exact_idx, 1000.0 * (time.perf_counter() - t0) / len(q)


def _tune_and_time(
    index: Any, q: np.ndarray, truth: np.ndarray, nlist: int, target: float, k: int
) -> tuple[int, list, np.ndarray, float]:
    """nprobe chosen on the first half of the queries (set on ``index``), then the second half searched and timed:
    (nprobe, sweep, found ids [Q - Q/2, k], ms per query)."""
    half = len(q) // 2
    chosen, sweep = _choose_nprobe(index, q[:half], truth[:half], nlist, target)
    index.set_nprobe(chosen)
    found, ms = _timed_search(index, q[half:], k)
    return chosen, sweep, found, ms


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
    started = time.perf_counter()
    n = int(parts[0].shape[0])
    nlist = int(nlist or default_nlist(n))
    index, n_train = _train_and_fill(parts, nlist, "Flat", seed, block_rows)

    q = _query_rows(queries)
    half, k = len(q) // 2, min(K_RECALL, n)
    exact_idx, exact_ms = _exact_truth(q, parts, k, block_rows)
    tmp = ApproxIndex(index, ApproxStats("ivf_flat", nlist, 1, 0.0, 0.0, exact_ms, 0, query_source, n_train, 0.0))
    chosen, sweep, found, ms = _tune_and_time(tmp, q, exact_idx, nlist, target_recall, k)
    stats = ApproxStats(
        kind="ivf_flat",
        nlist=nlist,
        nprobe=chosen,
        recall=recall_at_k(found, exact_idx[half:]),
        ms_per_query=ms,
        exact_ms_per_query=exact_ms,
        queries=len(q) - half,
        query_source=query_source,
        train_rows=n_train,
        build_seconds=time.perf_counter() - started,
        sweep=sweep,
    )
    return ApproxIndex(index, stats)


# -- IVF-PQ re-ranked exactly ----------------------------------------------------------------------------------------
def pq_layout(d: int, n_train: int, code_bytes: int | None = None) -> tuple[int, int]:
    """(sub-quantizers M, bits each) of the PQ code of a D-wide row: ``code_bytes`` sub-quantizers (default D / 8:
    32 bytes a row at D = 256, 1/16 of its float16 bytes), lowered to a divisor of D, of 8 bits each; fewer bits
    only where the training sample cannot give each of the 2^bits centroids FAISS's 39 points (tiny indexes)."""
    m = max(1, min(d, int(code_bytes or d // 8)))
    while d % m:
        m -= 1
    bits = 8
    while bits > 1 and n_train < 39 * 2**bits:
        bits -= 1
    return m, bits


def rerank_exact(
    rows: np.ndarray, queries: np.ndarray | torch.Tensor, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of each query's ``candidates`` [Q, C] (row numbers, -1 for none) by the exact inner product of
    ``queries`` [Q, D] with ``rows`` [N, D] (float16 or any dtype, read as float32): (scores float32 [Q, k'],
    indices int64 [Q, k']) best first, k' = min(k, C), index -1 and score -inf past the candidates. Each distinct
    candidate row is read once, in row order (from a memory map only the pages holding them)."""
    q = torch.as_tensor(np.asarray(queries, dtype=np.float32))
    cand = np.asarray(candidates, dtype=np.int64)
    valid = cand >= 0
    uniq, inverse = np.unique(np.where(valid, cand, 0).ravel(), return_inverse=True)
    vectors = torch.from_numpy(np.asarray(rows[uniq], dtype=np.float32))  # (u, d)
    gathered = vectors[torch.from_numpy(inverse.reshape(cand.shape))]  # (q, c, d)
    scores = torch.einsum("qcd,qd->qc", gathered, q)
    scores[torch.from_numpy(~valid)] = -math.inf
    top = scores.topk(min(k, cand.shape[1]), dim=1)
    idx = torch.gather(torch.from_numpy(cand), 1, top.indices)
    idx[torch.isinf(top.values)] = -1
    return top.values.numpy(), idx.numpy()


class RerankedPQ:
    """An IVF-PQ index (a few bytes a row in memory) whose ``rerank`` best candidates per query are scored again
    exactly against the float16 rows [N, D], typically memory-mapped (``np.load(path, mmap_mode="r")``): the index
    finds the neighbourhood, the rows give the exact order and scores."""

    def __init__(self, index: ApproxIndex, rows: np.ndarray, rerank: int) -> None:
        self.pq, self.rows, self.rerank = index, rows, int(rerank)

    @property
    def stats(self) -> ApproxStats:
        return self.pq.stats

    @property
    def ntotal(self) -> int:
        return self.pq.ntotal

    def set_nprobe(self, nprobe: int) -> None:
        self.pq.set_nprobe(nprobe)

    def search_codes(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The PQ scores alone (approximate): (scores float32 [Q, k], indices int64 [Q, k])."""
        return self.pq.search(queries, k)

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(exact scores float32 [Q, k], indices int64 [Q, k]) best first among the PQ's ``max(k, rerank)``
        candidates; -1 where fewer were found."""
        q = np.ascontiguousarray(torch.as_tensor(queries).float().numpy())
        _, cand = self.pq.search(q, max(k, self.rerank))
        return rerank_exact(self.rows, q, cand, k)


def build_ivf_pq(
    rows: np.ndarray,
    queries: np.ndarray,
    *,
    query_source: str,
    nlist: int | None = None,
    code_bytes: int | None = None,
    rerank: int = 100,
    target_recall: float = 0.95,
    seed: int = 0,
    block_rows: int = 65_536,
) -> RerankedPQ:
    """Train IVF-PQ (:func:`pq_layout`) on a seeded sample of ``rows`` [N, D] (float16, memory-mapped or not), add
    every row, and choose ``nprobe`` as :func:`build_ivf` does, for the exactly re-ranked search (module doc).

    ``queries`` [Q, D] (Q >= 2): one half tunes nprobe; on the other the stats give the re-ranked recall@10 against
    exact search over ``rows`` and the PQ scores' own (``pq_recall``).
    """
    started = time.perf_counter()
    n, d = int(rows.shape[0]), int(rows.shape[1])
    nlist = int(nlist or default_nlist(n))
    q = _query_rows(queries)
    half, k = len(q) // 2, min(K_RECALL, n)
    with warnings.catch_warnings():  # a read-only memory map's blocks become tensors that are only read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        sample = _train_sample([rows], nlist, seed)
        m, bits = pq_layout(d, len(sample), code_bytes)
        index, n_train = _train_and_fill([rows], nlist, f"PQ{m}x{bits}", seed, block_rows, sample)
        exact_idx, exact_ms = _exact_truth(q, [rows], k, block_rows)
    first = ApproxStats("ivf_pq", nlist, 1, 0.0, 0.0, exact_ms, 0, query_source, n_train, 0.0)
    out = RerankedPQ(ApproxIndex(index, first), rows, rerank)
    chosen, sweep, found, ms = _tune_and_time(out, q, exact_idx, nlist, target_recall, k)
    pq_found = out.search_codes(q[half:], k)[1]
    out.pq.stats = ApproxStats(
        kind="ivf_pq",
        nlist=nlist,
        nprobe=chosen,
        recall=recall_at_k(found, exact_idx[half:]),
        ms_per_query=ms,
        exact_ms_per_query=exact_ms,
        queries=len(q) - half,
        query_source=query_source,
        train_rows=n_train,
        build_seconds=time.perf_counter() - started,
        sweep=sweep,
        code_bits=m * bits,
        rerank=out.rerank,
        pq_recall=recall_at_k(pq_found, exact_idx[half:]),
    )
    return out
