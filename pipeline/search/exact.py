"""Exact top-k by dot product over an embedding matrix, in row blocks, so the matrix is read once per batch of
queries and may be a memory map larger than RAM.

Shapes: Q queries, N clips, D joint dimension, B rows of one block, k results. A candidate matrix may be given as
several parts of the same shape that are summed block by block (``video + audio``: the "video+audio" modality of
evaluation), so no summed copy is ever stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

DEFAULT_BLOCK_ROWS = 65_536  # 64 MiB of float32 at D = 256: large enough for BLAS, small enough for the cache's sake


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
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best rows of ``sum(parts)`` [N, D] for each query [Q, D] by dot product.

    Returns (scores float32 [Q, k'], indices int64 [Q, k']) with k' = min(k, N), best first. Equal scores come in
    an unspecified order (as ``torch.topk``'s). The running top-k of the blocks seen so far is merged with each
    block's own top-k, so memory is O(Q × (B + k)).
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
    if block_rows < 1 or k < 1:
        raise ValueError(f"k and block_rows must be >= 1, got k={k}, block_rows={block_rows}")
    kk = min(k, n)
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


def recall_at_k(found: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor) -> float:
    """Mean over queries of |found_q ∩ truth_q| / |truth_q| (rows of indices [Q, k]): recall@k of an approximate
    search against the exact top-k."""
    f, t = np.asarray(found), np.asarray(truth)
    if f.shape[0] != t.shape[0] or t.size == 0:
        raise ValueError(f"recall needs the same queries on both sides, got {f.shape} and {t.shape}")
    hits = [len(set(fr.tolist()) & set(tr.tolist())) / len(tr) for fr, tr in zip(f, t, strict=True)]
    return float(np.mean(hits))
