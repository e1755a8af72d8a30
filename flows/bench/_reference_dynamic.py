"""Dynamic routing written as public PyTorch capsule code writes it, for ``mmcaps bench routing`` only.

The model's :class:`model.routing.dynamic.DynamicRouting` computes the same forward values with ``einsum``,
which never materialises a broadcast product. Reference implementations (e.g. XifengGuo/CapsNet-Pytorch's
``DenseCapsule``) do: this module reproduces their memory pattern so the benchmark can show where the paper's
gap between dynamic and self-attention routing comes from. It is not a model option.

Axis letters: b batch, i input capsules, j output capsules, d d1, e d2.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model.routing.dynamic import SQUASH_EPS, squash


class ReferenceDynamicRouting(nn.Module):
    """Same forward values as ``DynamicRouting`` (whose weight is this one's with the first two axes swapped),
    with the reference implementations' memory pattern:

    * the predictions come from a broadcast ``torch.matmul`` of W [j, i, e, d] with u [b, 1, i, d, 1], which
      copies W expanded to [b, j, i, e, d] (C²·d1·d2 numbers per sample), keeps it for backward and builds a
      gradient of that size before reducing it over the batch;
    * each iteration forms the products c_ij û_{j|i} and û_{j|i} v_j as [b, j, i, e] tensors before summing;
    * as there, only the last iteration passes gradients (earlier ones use detached predictions).
    """

    def __init__(self, *, num_capsules: int, d1: int, d2: int, iterations: int = 3) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(f"dynamic routing needs at least one iteration, got {iterations}")
        self.iterations = iterations
        self.weight = nn.Parameter(torch.randn(num_capsules, num_capsules, d2, d1) / math.sqrt(d1))  # (j, i, e, d)

    def forward(self, poses: torch.Tensor, activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """poses: [b, i, d1], activations: [b, i] → (poses [b, j, d2], activations [b, j], sum 1 over j)."""
        u = poses * activations[..., None]  # (b, i, d)
        u_hat = torch.matmul(self.weight, u[:, None, :, :, None]).squeeze(-1)  # (b, j, i, e)
        detached = u_hat.detach()
        logits = u_hat.new_zeros(u_hat.shape[:3])  # (b, j, i)
        for step in range(self.iterations):
            c = torch.softmax(logits, dim=1)  # (b, j, i) over the output capsules j
            last = step + 1 == self.iterations
            v = squash((c[..., None] * (u_hat if last else detached)).sum(dim=2))  # (b, j, e)
            if not last:
                logits = logits + (v[:, :, None, :] * detached).sum(-1)  # (b, j, i)
        length = torch.sqrt((v * v).sum(-1) + SQUASH_EPS)  # (b, j)
        return v, length / length.sum(-1, keepdim=True)
