"""Masked Margin Softmax (MMS) loss (Ilharco et al. 2019), summed over modality pairs (paper section 3.3).

For a pair (X, Y) of [B, D] embeddings of the same B clips: S = X Yᵀ − δ I, and
L_xy = CE(S, diag) + CE(Sᵀ, diag), each cross-entropy averaged over rows. The total is L_va + L_ta + L_vt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PAIRS = (("video", "audio"), ("text", "audio"), ("video", "text"))


def mms_pair_loss(x: torch.Tensor, y: torch.Tensor, margin: float = 0.001) -> torch.Tensor:
    """x, y: [b, D] with row k of each from the same clip → scalar CE(S, diag) + CE(Sᵀ, diag), S = x yᵀ − δ I."""
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(
            f"mms loss needs two [batch, dim] tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    s = x.float() @ y.float().T  # (b, b) similarities, in float32 under autocast too
    s = s - margin * torch.eye(s.shape[0], device=s.device, dtype=s.dtype)
    target = torch.arange(s.shape[0], device=s.device)
    return F.cross_entropy(s, target) + F.cross_entropy(s.T, target)


def mms_loss(
    embeddings: dict[str, torch.Tensor], margin: float = 0.001, audio_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum of MMS losses over the pairs (video, audio), (text, audio), (video, text) present in ``embeddings``.

    embeddings: modality → [B, D]. audio_mask: Bool[B], False for rows whose clip has no audio; those rows are
    dropped from the pairs with audio only (they stay in video-text). Returns (total, {"video-audio": ...}),
    where the parts hold only the pairs computed (an audio pair with no audio row is left out).
    """
    parts: dict[str, torch.Tensor] = {}
    for a, b in PAIRS:
        if a not in embeddings or b not in embeddings:
            continue
        x, y = embeddings[a], embeddings[b]
        if "audio" in (a, b) and audio_mask is not None:
            mask = audio_mask.to(device=x.device, dtype=torch.bool)
            if mask.shape != (x.shape[0],):
                raise ValueError(f"audio_mask must be Bool[{x.shape[0]}], got shape {tuple(mask.shape)}")
            if not bool(mask.any()):
                continue
            x, y = x[mask], y[mask]
        parts[f"{a}-{b}"] = mms_pair_loss(x, y, margin)
    if not parts:
        raise ValueError(f"mms loss needs two modalities with rows in common, got {sorted(embeddings)}")
    total = torch.stack(list(parts.values())).sum()
    return total, parts
