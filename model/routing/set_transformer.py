"""Set-transformer routing (Lee et al. 2019): set-attention blocks (SAB) over the capsules.

Axis letters: b batch, c capsules, d1 primary pose size, d2 secondary pose size.
"""

from __future__ import annotations

import torch
from torch import nn

from model.routing._attention import CapsuleLogit, multi_head_attention


class SetAttentionBlock(nn.Module):
    """SAB(X) = MAB(X, X): H = LN(X + MultiHead(X, X, X)); out = LN(H + rFF(H)) (Lee 2019, eqs. 6-8)."""

    def __init__(self, *, dim: int, heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.rff = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [b, c, d] → [b, c, d]."""
        attn = multi_head_attention(self.to_q(x), self.to_k(x), self.to_v(x), heads=self.heads)  # (b, c, d)
        h = self.norm1(x + self.out(attn))
        return self.norm2(h + self.rff(h))


class SetTransformerRouting(nn.Module):
    """Activation-weighted poses → linear d1 → d2 → ``blocks`` SABs → secondary poses; activations = softmax
    over capsules of a linear map of the poses (as in self-attention routing, so only the router differs)."""

    def __init__(
        self, *, d1: int, d2: int, heads: int = 8, mlp_hidden: int = 1024, dropout: float = 0.1, blocks: int = 1
    ) -> None:
        super().__init__()
        if d2 % heads:
            raise ValueError(f"heads={heads} must divide d2={d2}")
        self.embed = nn.Linear(d1, d2)
        self.blocks = nn.ModuleList(
            SetAttentionBlock(dim=d2, heads=heads, hidden=mlp_hidden, dropout=dropout) for _ in range(blocks)
        )
        self.to_logit = CapsuleLogit(d2)

    def forward(self, poses: torch.Tensor, activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """poses: [b, c, d1], activations: [b, c] → (poses [b, c, d2], activations [b, c], sum 1 over c)."""
        x = self.embed(poses * activations[..., None])  # (b, c, d2)
        for block in self.blocks:
            x = block(x)
        logits = self.to_logit(x).squeeze(-1)  # (b, c)
        return x, torch.softmax(logits.float(), dim=-1).to(x.dtype)
