"""Routing by self-attention (the paper's method, section 3.2 and appendix B).

Axis letters: b batch, c capsules (the same C in and out), d1 primary pose size, d2 secondary pose size.
"""

from __future__ import annotations

import torch
from torch import nn

from model.routing._attention import CapsuleLogit, multi_head_attention


def _two_layer(d_in: int, d_out: int) -> nn.Sequential:
    # The paper's h_K, h_Q, h_V are "two linear layers"; a ReLU between them keeps them from collapsing
    # into one linear map.
    return nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU(), nn.Linear(d_out, d_out))


class SelfAttentionRouting(nn.Module):
    """Activation-weighted poses → K, Q, V (two linear layers each) → multi-head attention over capsules →
    norm, two-layer MLP with dropout, residual from the attention output, norm → secondary poses;
    secondary activations = softmax over capsules of a linear map of the poses (eq. 2).

    There is no output projection after attention: appendix B feeds V0 = Softmax(QKᵀ/√d)V straight on.
    """

    def __init__(
        self,
        *,
        d1: int,
        d2: int,
        heads: int = 8,
        mlp_hidden: int = 1024,
        dropout: float = 0.1,
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        if d2 % heads:
            raise ValueError(f"heads={heads} must divide d2={d2}")
        self.heads = heads
        self.h_q = _two_layer(d1, d2)
        self.h_k = _two_layer(d1, d2)
        self.h_v = _two_layer(d1, d2)
        self.norm1 = norm_layer(d2)
        self.mlp = nn.Sequential(
            nn.Linear(d2, mlp_hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(mlp_hidden, d2), nn.Dropout(dropout)
        )
        self.norm2 = norm_layer(d2)
        self.to_logit = CapsuleLogit(d2)  # W_p of eq. 2 (b_p cancels in the softmax)

    def forward(self, poses: torch.Tensor, activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """poses: [b, c, d1], activations: [b, c] in [0, 1] → (poses [b, c, d2], activations [b, c], sum 1 over c)."""
        x = poses * activations[..., None]  # (b, c, d1) absent capsules (p → 0) enter as zero vectors
        v0 = multi_head_attention(self.h_q(x), self.h_k(x), self.h_v(x), heads=self.heads)  # (b, c, d2)
        out = self.norm2(v0 + self.mlp(self.norm1(v0)))  # (b, c, d2)
        logits = self.to_logit(out).squeeze(-1)  # (b, c)
        return out, torch.softmax(logits.float(), dim=-1).to(out.dtype)
