"""Exact top-k by dot product over an embedding matrix, in row blocks, so the matrix is read once per batch of
queries and may be a memory map larger than RAM.

Two exact kernels, chosen by the number of queries (``backend="auto"``):

- ``torch``: blocked matrix products ``Q x B`` in torch and a running top-k — the kernel for batches, where BLAS GEMM
  is compute-bound and a batch of queries shares one pass over the matrix;
- ``scan``: for one or a few queries over short rows (D <= 1024), FAISS's exact brute-force inner-product scan
  (``faiss.knn``: SIMD dot products and a k-heap, no index) over row blocks, the blocks spread over ``threads`` worker
  threads of one OpenMP thread each. On the two-core machines torch's matrix-vector product reads a D = 256 matrix at
  about a third of the memory bandwidth (at D = 4096 it keeps up), and one query cannot amortise that
  (``mmcaps bench search`` prints both).

Both return the same clips (up to the order of equal scores) and scores to float32 rounding.

Shapes: Q queries, N clips, D joint dimension, B rows of one block, k results. A candidate matrix may be given as
several parts of the same shape that are summed block by block (``video + audio``: the "video+audio" modality of
evaluation), so no summed copy is ever stored.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import torch

BLOCK_BYTES = 64 << 20  # rows of one block: 64 MiB of float32 (65536 rows at D = 256), enough work per BLAS call
SCAN_MAX_QUERIES = 8  # up to here one pass is memory-bound (scan); beyond, GEMM's reuse of each row pays (torch)
SCAN_MAX_DIM = 1024  # torch's matrix-vector product keeps up with memory on long rows (D = 4096), not on short ones
Backend = Literal["auto", "torch", "scan"]
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()


def _block(parts: Sequence[np.ndarray | torch.Tensor], lo: int, hi: int) -> torch.Tensor:
    """Rows ``lo:hi`` of the sum of ``parts`` as a float32 tensor [B, D] (no copy for one float32 part)."""
    out: torch.Tensor | None = None
    for part in parts:
        rows = part[lo:hi]
        t = rows if isinstance(rows, torch.Tensor) else torch.from_numpy(np.asarray(rows))
        t = t.float()
        out = t if out is None else out + t
    assert out is not None
    return out


def exact_top_k(
    queries: torch.Tensor,
    parts: Sequence[np.ndarray | torch.Tensor],
    k: int,
    *,
    block_rows: int | None = None,
    backend: Backend = "auto",
    threads: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best rows of ``sum(parts)`` [N, D] for each query [Q, D] by dot product.

    Returns (scores float32 [Q, k'], indices int64 [Q, k']) with k' = min(k, N), best first. Equal scores come in
    an unspecified order (as ``torch.topk``'s). The running top-k of the blocks seen so far is merged with each
    block's own top-k, so memory is O(Q × (B + k)); ``block_rows`` defaults to 64 MiB of rows. ``backend``: see the module doc; ``threads`` (scan): worker
    threads (default torch's intra-op thread count).
    """
    if not parts:
        raise ValueError("exact_top_k needs at least one candidate matrix")
    n, d = int(parts[0].shape[0]), int(parts[0].shape[1])
    for p in parts[1:]:
        if tuple(p.shape) != (n, d):
            raise ValueError(f"candidate parts differ in shape: {tuple(parts[0].shape)} vs {tuple(p.shape)}")
    q = queries.float()
    if q.dim() != 2 or q.shape[1] != d:
        raise ValueError(f"queries must be [Q, {d}], got {tuple(q.shape)}")
    block_rows = block_rows or max(1024, BLOCK_BYTES // (4 * d))
    if block_rows < 1 or k < 1:
        raise ValueError(f"k and block_rows must be >= 1, got k={k}, block_rows={block_rows}")
    kk = min(k, n)
    if backend == "auto":
        small = q.shape[0] <= SCAN_MAX_QUERIES and d <= SCAN_MAX_DIM
        backend = "scan" if small and _has_faiss() else "torch"
    if backend == "scan":
        return _scan_top_k(q, parts, kk, block_rows, threads or torch.get_num_threads())
    if backend != "torch":
        raise ValueError(f"backend must be auto, torch or scan, got {backend!r}")
    best_s = torch.empty(q.shape[0], 0)
    best_i = torch.empty(q.shape[0], 0, dtype=torch.long)
    with torch.no_grad():
        for lo in range(0, n, block_rows):
            hi = min(n, lo + block_rows)
            scores = q @ _block(parts, lo, hi).T  # (q, b)
            s, i = scores.topk(min(kk, hi - lo), dim=1)
            cat_s = torch.cat([best_s, s], dim=1)
            cat_i = torch.cat([best_i, i + lo], dim=1)
            keep = cat_s.topk(min(kk, cat_s.shape[1]), dim=1).indices
            best_s, best_i = cat_s.gather(1, keep), cat_i.gather(1, keep)
    return best_s, best_i


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401, PLC0415  deferred: faiss (declared dependency; a broken install falls back to torch)
    except ImportError:
        return False
    return True


def _pool(threads: int) -> ThreadPoolExecutor:
    """Worker threads of one OpenMP thread each (the OpenMP thread count is per calling thread): parallelism comes
    from the blocks, not from OpenMP teams, whose barriers stall on a busy machine."""
    import faiss  # noqa: PLC0415  deferred: faiss

    with _POOL_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(
                threads, thread_name_prefix="mmcaps-scan", initializer=faiss.omp_set_num_threads, initargs=(1,)
            )
        return _POOLS[threads]


def _scan_block(q: np.ndarray, parts: Sequence[np.ndarray | torch.Tensor], lo: int, hi: int, k: int):
    import faiss  # noqa: PLC0415  deferred: faiss

    block = np.ascontiguousarray(_block(parts, lo, hi).numpy())  # a view of a float32 part; a sum otherwise
    scores, idx = faiss.knn(q, block, min(k, hi - lo), metric=faiss.METRIC_INNER_PRODUCT)
    return scores, idx + lo


def _scan_top_k(
    q: torch.Tensor, parts: Sequence[np.ndarray | torch.Tensor], k: int, block_rows: int, threads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    n = int(parts[0].shape[0])
    qn = np.ascontiguousarray(q.numpy(), dtype=np.float32)
    bounds = [(lo, min(n, lo + block_rows)) for lo in range(0, n, block_rows)]
    # Always in the pool's threads: faiss.omp_set_num_threads changes the calling thread's OpenMP count, which torch
    # shares, and a caller that goes on to run networks (a test process, the app) must keep its own.
    pool = _pool(1 if threads <= 1 or len(bounds) == 1 else threads)
    found = list(pool.map(lambda b: _scan_block(qn, parts, b[0], b[1], k), bounds))
    scores = torch.from_numpy(np.concatenate([s for s, _ in found], axis=1))
    idx = torch.from_numpy(np.concatenate([i for _, i in found], axis=1))
    best = scores.topk(k, dim=1)
    return best.values, idx.gather(1, best.indices)


def recall_at_k(found: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor) -> float:
    """Mean over queries of |found_q ∩ truth_q| / |truth_q| (rows of indices [Q, k]): recall@k of an approximate
    search against the exact top-k."""
    f, t = np.asarray(found), np.asarray(truth)
    if f.shape[0] != t.shape[0] or t.size == 0:
        raise ValueError(f"recall needs the same queries on both sides, got {f.shape} and {t.shape}")
    hits = [len(set(fr.tolist()) & set(tr.tolist())) / len(tr) for fr, tr in zip(f, t, strict=True)]
    return float(np.mean(hits))
