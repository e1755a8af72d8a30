"""The clips that activate each secondary capsule most (the paper's figure 4), from the per-clip activations.

Capsules are ordered by how selective they are — the spread (standard deviation) of their activation over the
clips, as the evaluation report chooses them — and each keeps its ``top`` clips, at most ``per_video`` from one
video, so overlapping windows of one video do not fill a capsule's row.

Shapes: N clips, C capsules, M candidates per capsule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class CapsuleClips:
    """One capsule: its spread over the clips and its top clips (row ids into the clip table) with activations."""

    capsule: int
    spread: float
    mean: float
    clips: tuple[int, ...]
    activations: tuple[float, ...]


def top_clips_per_capsule(
    activations: np.ndarray, video_ids: np.ndarray | list[str], *, top: int = 12, per_video: int = 1
) -> list[CapsuleClips]:
    """Every capsule of ``activations`` [N, C] with its ``top`` clips (at most ``per_video`` per video), the most
    selective capsules first. Equal activations keep the lower clip id first."""
    acts = np.asarray(activations, dtype=np.float32)
    if acts.ndim != 2:
        raise ValueError(f"activations must be [clips, capsules], got shape {acts.shape}")
    n = acts.shape[0]
    if n == 0:
        return []
    vids = np.asarray(video_ids)
    if len(vids) != n:
        raise ValueError(f"{n} activation rows but {len(vids)} video ids")
    spread = acts.std(axis=0)
    mean = acts.mean(axis=0)
    order = np.argsort(-spread, kind="stable")
    reachable = min(top, len(set(vids.tolist())) * per_video)  # what a full scan could pick at most
    out = []
    m = min(n, top * per_video * 8)  # candidates; grown below when one video holds most of them
    cand = torch.from_numpy(acts).topk(m, dim=0).indices.numpy()  # (m, c)
    for cap in order:
        picked = _pick(acts[:, cap], cand[:, cap], vids, top, per_video)
        if len(picked) < reachable and m < n:
            full = np.argsort(-acts[:, cap], kind="stable")
            picked = _pick(acts[:, cap], full, vids, top, per_video)
        out.append(
            CapsuleClips(
                capsule=int(cap),
                spread=float(spread[cap]),
                mean=float(mean[cap]),
                clips=tuple(int(i) for i in picked),
                activations=tuple(float(acts[i, cap]) for i in picked),
            )
        )
    return out


def _pick(column: np.ndarray, candidates: np.ndarray, vids: np.ndarray, top: int, per_video: int) -> list[int]:
    # stable re-sort of the candidates: by activation, then by clip id (topk does not promise an order among ties)
    ranked = sorted((int(i) for i in candidates), key=lambda i: (-float(column[i]), i))
    used: dict[str, int] = {}
    picked: list[int] = []
    for i in ranked:
        v = str(vids[i])
        if used.get(v, 0) >= per_video:
            continue
        used[v] = used.get(v, 0) + 1
        picked.append(i)
        if len(picked) == top:
            break
    return picked
