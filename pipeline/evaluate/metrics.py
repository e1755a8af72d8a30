"""Retrieval metrics: ranks of the correct candidate, chunked over query blocks, the two protocols, chance levels.

Rows are queries, columns candidates. Ties are resolved pessimistically: the rank of the correct candidate
is 1 + the number of *other* candidates whose score is >= its score, so a model that scores every candidate
the same gets the worst rank, never the best.

Candidates are the clips that can be ranked: their video is present (and, for text -> video+audio, the clip
has audio, as AVLnet's pickles hold only clips with audio). A query whose clip is not a candidate gets rank
``n_candidates + 1``. Two protocols read the same ranks (:data:`PROTOCOLS`):

- ``strict``: every listed query counts; a query whose video is missing is a miss at every K and ranks N+1 in
  the median.
- ``reference``: over the present videos, as howto100m's and AVLnet's ``compute_metrics`` and MCN compute
  (their matrices hold only the clips they have): queries of missing videos are left out; for video+audio a
  query whose clip has no audio is a miss in R@K (AVLnet's MSR-VTT rule: "we count the 32 test clips without
  audio as mistakes") and is left out of the median (AVLnet's median runs over the clips it has).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

Similarity = Literal["dot", "cosine", "euclidean"]

TIE_RULE = (
    "ties are counted pessimistically: rank = 1 + number of other candidates with score >= the correct one's "
    "(howto100m's and AVLnet's compute_metrics count a tied row several times instead); a query whose clip is "
    "not a candidate gets rank N+1"
)
MISSING = -1  # target index of a query whose correct candidate is absent

PROTOCOLS = {
    "strict": "every listed query counts: a query whose video is missing (for video+audio: or whose clip has no "
    "audio) is a miss at every K and ranks N+1; R@K, median and mean rank over all queries",
    "reference": "over the present videos, as howto100m, AVLnet and MCN compute: queries whose video is missing "
    "are left out; R@K over the queries of present videos (for video+audio a clip without audio is a miss, as "
    "AVLnet counts MSR-VTT's 32), median and mean rank over the queries that were ranked",
}
PAPER_PROTOCOL = "reference"
PAPER_NOTE = (
    "The paper's tables compare with numbers that the howto100m, AVLnet and MCN code computed over the videos "
    "they had: they correspond to the reference protocol."
)
SIMILARITY_RULE = {
    "dot": "dot product of the embeddings, what the training loss scores",
    "cosine": "cosine of the embeddings",
    "euclidean": "euclidean distance, smaller is better (ranked as the negative squared distance), as the paper",
}


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


def reference_metrics(
    ranks: np.ndarray, counted: np.ndarray, ranked: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """The ``reference`` protocol from the same ranks [Q]: R@K over the ``counted`` queries (bool [Q]; a counted
    query that is not ``ranked`` is a miss), median and mean rank over the ``ranked`` ones (bool [Q], within
    counted). Raises when no query was ranked."""
    ranks = np.asarray(ranks, dtype=np.float64)
    counted = np.asarray(counted, dtype=bool)
    ranked = np.asarray(ranked, dtype=bool) & counted
    if not ranked.any():
        raise ValueError("no query was ranked: the reference protocol has nothing to score")
    n = int(counted.sum())
    out = {f"R@{k}": float(((ranks <= k) & ranked).sum() / n) for k in ks}
    out["median_rank"] = float(np.median(ranks[ranked]))
    out["mean_rank"] = float(ranks[ranked].mean())
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


def chance_reference_metrics(
    n_candidates: int,
    counted: np.ndarray,
    ranked: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    *,
    simulations: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """Chance levels of :func:`reference_metrics` for a uniformly random ranking of ``n_candidates``: R@K and
    mean rank exact, the median the average over ``simulations`` seeded rankings of the ranked queries."""
    counted = np.asarray(counted, dtype=bool)
    ranked = np.asarray(ranked, dtype=bool) & counted
    n = n_candidates
    frac = ranked.sum() / counted.sum() if counted.any() else 0.0
    out = {f"R@{k}": float(frac * min(k, n) / n) if n else 0.0 for k in ks}
    out["mean_rank"] = float((n + 1) / 2)
    rng = np.random.default_rng(seed)
    sims = rng.integers(1, n + 1, size=(simulations, int(ranked.sum()))) if n else np.zeros((simulations, 1))
    out["median_rank"] = float(np.median(sims, axis=1).mean()) if sims.size else float("nan")
    return out
