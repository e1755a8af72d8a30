"""Retrieval metrics: ranks of the correct candidate, chunked over query blocks, and chance levels.

Rows are queries, columns candidates. Ties are resolved pessimistically: the rank of the correct candidate
is 1 + the number of *other* candidates whose score is >= its score, so a model that scores every candidate
the same gets the worst rank, never the best. A query whose correct candidate is absent (its video is
missing from the folder) gets rank ``n_candidates + 1``: a miss at every K, as the reference protocols count
missing videos.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

Similarity = Literal["dot", "cosine", "euclidean"]

TIE_RULE = (
    "ties are counted pessimistically: rank = 1 + number of other candidates with score >= the correct one's; "
    "queries whose video is missing get rank N+1 (a miss at every K)"
)
MISSING = -1  # target index of a query whose correct candidate is absent


def similarity_scores(queries: torch.Tensor, candidates: torch.Tensor, similarity: Similarity = "dot") -> torch.Tensor:
    """Scores [Q, N] (higher = better) between queries [Q, D] and candidates [N, D].

    ``euclidean`` is the negative squared distance, ranked the same as the distance the paper names.
    """
    if similarity == "dot":
        return queries @ candidates.T
    if similarity == "cosine":
        q = torch.nn.functional.normalize(queries, dim=1)
        c = torch.nn.functional.normalize(candidates, dim=1)
        return q @ c.T
    if similarity == "euclidean":
        # -||q - c||^2 = 2 q.c - ||q||^2 - ||c||^2
        return 2 * queries @ candidates.T - (queries * queries).sum(1, keepdim=True) - (candidates * candidates).sum(1)
    raise ValueError(f"unknown similarity {similarity!r} (expected dot, cosine or euclidean)")


def ranks_from_scores(scores: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray) -> np.ndarray:
    """Pessimistic 1-based ranks [Q] of ``targets`` [Q] (``MISSING`` allowed) in the rows of ``scores`` [Q, N]."""
    scores = torch.as_tensor(scores)
    targets = torch.as_tensor(targets, dtype=torch.long)
    n = scores.shape[1]
    present = targets >= 0
    safe = targets.clamp(min=0)
    correct = scores.gather(1, safe[:, None])  # (q, 1)
    # >= counts the correct candidate itself, which is exactly the "1 +" of the rank.
    ranks = (scores >= correct).sum(1)
    ranks = torch.where(present, ranks, torch.full_like(ranks, n + 1))
    return ranks.cpu().numpy().astype(np.int64)


def retrieval_ranks(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    targets: Sequence[int] | np.ndarray,
    *,
    similarity: Similarity = "dot",
    chunk_size: int = 1024,
) -> np.ndarray:
    """Ranks [Q] of each query's correct candidate, scoring ``chunk_size`` queries at a time.

    queries [Q, D], candidates [N, D]; memory is O(chunk_size * N), so 10k x 10k runs in ~40 MB per block.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    targets_t = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    if targets_t.shape[0] != queries.shape[0]:
        raise ValueError(f"{queries.shape[0]} queries but {targets_t.shape[0]} targets")
    if (targets_t >= candidates.shape[0]).any():
        raise ValueError("a target index is outside the candidates")
    out = []
    for i in range(0, queries.shape[0], chunk_size):
        block = similarity_scores(queries[i : i + chunk_size], candidates, similarity)  # (chunk, n)
        out.append(ranks_from_scores(block, targets_t[i : i + chunk_size]))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def top_k(
    queries: torch.Tensor, candidates: torch.Tensor, k: int, *, similarity: Similarity = "dot"
) -> tuple[np.ndarray, np.ndarray]:
    """Indices [Q, k] and scores [Q, k] of the best candidates per query (for example figures)."""
    scores = similarity_scores(queries, candidates, similarity)
    vals, idx = scores.topk(min(k, candidates.shape[0]), dim=1)
    return idx.cpu().numpy(), vals.cpu().numpy()


def retrieval_metrics(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@K (fraction of queries with rank <= K), median and mean rank from ranks [Q]."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("no queries to score")
    out = {f"R@{k}": float((ranks <= k).mean()) for k in ks}
    out["median_rank"] = float(np.median(ranks))
    out["mean_rank"] = float(ranks.mean())
    return out


def recall_curve(ranks: np.ndarray, max_k: int) -> np.ndarray:
    """R@K for K = 1..max_k, [max_k]."""
    ranks = np.asarray(ranks)
    counts = np.bincount(np.clip(ranks, 1, max_k + 1), minlength=max_k + 2)[1 : max_k + 1]
    return np.cumsum(counts) / max(len(ranks), 1)


def chance_retrieval_metrics(
    n_candidates: int,
    targets: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    *,
    simulations: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """Chance levels of :func:`retrieval_metrics` for a uniformly random ranking of ``n_candidates``.

    R@K and mean rank are exact (a present query's rank is uniform on 1..N; a missing one's is N+1); the
    median rank is the average median over ``simulations`` seeded random rankings.
    """
    targets = np.asarray(targets)
    present = targets >= 0
    n = n_candidates
    frac = present.mean() if targets.size else 0.0
    out = {f"R@{k}": float(frac * min(k, n) / n) if n else 0.0 for k in ks}
    out["mean_rank"] = float(frac * (n + 1) / 2 + (1 - frac) * (n + 1))
    rng = np.random.default_rng(seed)
    sims = rng.integers(1, n + 1, size=(simulations, targets.size)) if n else np.zeros((simulations, targets.size))
    sims[:, ~present] = n + 1
    out["median_rank"] = float(np.median(sims, axis=1).mean())
    return out
