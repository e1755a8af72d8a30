"""Multi-head attention over capsules with ``F.scaled_dot_product_attention``, shared by the attention routers.

Axis letters: b batch, c capsules, h heads, e per-head feature size, d feature size (h * e).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def multi_head_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, heads: int, dropout_p: float = 0.0
) -> torch.Tensor:
    """q, k, v: [b, c, d] → softmax(q kᵀ / sqrt(e)) v per head, heads concatenated: [b, c, d]."""
    q, k, v = (rearrange(x, "b c (h e) -> b h c e", h=heads) for x in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (b, h, c, e)
    return rearrange(out, "b h c e -> b c (h e)")
