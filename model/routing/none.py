"""No routing (table 3's "no routing" row): secondary capsules are a shared linear map of each primary
capsule, and an MLP gives their existence probabilities.

Axis letters: b batch, c capsules, d1 primary pose size, d2 secondary pose size.
"""

from __future__ import annotations

import torch
from torch import nn

from model.routing._attention import CapsuleLogit


class NoRouting(nn.Module):
    """Per-capsule linear map d1 → d2 of the activation-weighted poses; activations = softmax over capsules of
    a two-layer MLP of each secondary pose. No capsule sees another."""

    def __init__(self, *, d1: int, d2: int, mlp_hidden: int = 1024, dropout: float = 0.1) -> None:
        super().__init__()
        self.proj = nn.Linear(d1, d2)
        self.mlp = nn.Sequential(nn.Linear(d2, mlp_hidden), nn.ReLU(), nn.Dropout(dropout), CapsuleLogit(mlp_hidden))

    def forward(self, poses: torch.Tensor, activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """poses: [b, c, d1], activations: [b, c] → (poses [b, c, d2], activations [b, c], sum 1 over c)."""
        out = self.proj(poses * activations[..., None])  # (b, c, d2)
        logits = self.mlp(out).squeeze(-1)  # (b, c)
        return out, torch.softmax(logits.float(), dim=-1).to(out.dtype)
