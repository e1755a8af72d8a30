"""Parts shared by the routers: multi-head attention over capsules (``F.scaled_dot_product_attention``) and the
per-capsule logit whose softmax over capsules gives the secondary activations.

Axis letters: b batch, c capsules, h heads, e per-head feature size, d feature size (h * e).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class CapsuleLogit(nn.Linear):
    """``W_p`` of the paper's eq. 2: one logit per capsule from its pose, ``[..., d] → [..., 1]``, without ``b_p``.

    ``b_p`` adds the same constant to every capsule's logit, which the softmax over capsules cancels: it changes no
    output and cannot learn (its gradient is zero up to rounding). Checkpoints that hold it still load.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim, 1, bias=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "bias", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def multi_head_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, heads: int, dropout_p: float = 0.0
) -> torch.Tensor:
    """q, k, v: [b, c, d] → softmax(q kᵀ / sqrt(e)) v per head, heads concatenated: [b, c, d]."""
    q, k, v = (rearrange(x, "b c (h e) -> b h c e", h=heads) for x in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (b, h, c, e)
    return rearrange(out, "b h c e -> b c (h e)")
