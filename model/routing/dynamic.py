"""Dynamic routing by agreement (Sabour, Frosst and Hinton 2017, "Dynamic routing between capsules").

Axis letters: b batch, i input (primary) capsules, j output (secondary) capsules, d d1, e d2.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SQUASH_EPS = 1e-8


def squash(s: torch.Tensor, dim: int = -1, eps: float = SQUASH_EPS) -> torch.Tensor:
    """Sabour eq. 1: v = |s|² / (1 + |s|²) · s / |s|; ``eps`` keeps s = 0 (and its gradient) finite."""
    sq = (s * s).sum(dim=dim, keepdim=True)
    return s * (sq / (1.0 + sq)) * torch.rsqrt(sq + eps)


class DynamicRouting(nn.Module):
    """Predictions û_{j|i} = W_ij u_i of the activation-weighted poses u_i = p_i x_i; ``iterations`` rounds of
    c_i = softmax_j(b_i), s_j = Σ_i c_ij û_{j|i}, v_j = squash(s_j), b_ij += û_{j|i} · v_j.

    Secondary poses are v_j; activations are the capsule lengths |v_j| normalised to sum 1 over capsules.
    The routing loop runs in float32 (under autocast too): its logits accumulate agreements.
    """

    def __init__(self, *, num_capsules: int, d1: int, d2: int, iterations: int = 3) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(f"dynamic routing needs at least one iteration, got {iterations}")
        self.iterations = iterations
        # One transformation matrix per (input, output) capsule pair, as in Sabour 2017.
        self.weight = nn.Parameter(torch.randn(num_capsules, num_capsules, d2, d1) / math.sqrt(d1))

    def forward(self, poses: torch.Tensor, activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """poses: [b, i, d1], activations: [b, i] → (poses [b, j, d2], activations [b, j], sum 1 over j)."""
        dtype = poses.dtype
        with torch.autocast(device_type=poses.device.type, enabled=False):
            u = poses.float() * activations.float()[..., None]  # (b, i, d)
            u_hat = torch.einsum("ijed,bid->bije", self.weight.float(), u)  # (b, i, j, e)
            logits = u_hat.new_zeros(u_hat.shape[:3])  # (b, i, j) b_ij
            for step in range(self.iterations):
                c = torch.softmax(logits, dim=2)  # (b, i, j) coupling coefficients
                s = torch.einsum("bij,bije->bje", c, u_hat)  # (b, j, e)
                v = squash(s)  # (b, j, e)
                if step + 1 < self.iterations:
                    logits = logits + torch.einsum("bije,bje->bij", u_hat, v)
            length = torch.sqrt((v * v).sum(-1) + SQUASH_EPS)  # (b, j), in (0, 1)
            acts = length / length.sum(-1, keepdim=True)
        return v.to(dtype), acts.to(dtype)
