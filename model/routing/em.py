"""EM routing between matrix capsules (Hinton, Sabour and Frosst 2018, "Matrix capsules with EM routing").

Poses are 4x4 matrices. A primary pose of size d1 is read as a 4x4 matrix when d1 = 16 (row-major, rows of 4);
for any other d1 a learned linear map takes it to 16 numbers first. Likewise the 16-number secondary pose (the
Gaussian mean μ_j) is returned as is when d2 = 16 and through a learned linear map to d2 otherwise. The
routing ablation (paper table 3) uses d1 = d2 = 16, so there the poses are exactly 4x4 matrices.

Everything runs in float32 and in log space: Gaussian densities are log-densities, the E-step is a softmax
over log(a_j) + log p_ij, and variances have a floor, so near-zero variances give large but finite numbers.

Axis letters: b batch, i input capsules, j output capsules, r k l matrix rows/columns (4), h = 16 pose entries.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

VAR_FLOOR = 1e-5
POSE_SIDE = 4


class EMRouting(nn.Module):
    """Votes V_ij = M_i W_ij; ``iterations`` rounds of M-step (weighted Gaussian per output capsule, cost,
    activation a_j = sigmoid(λ(β_a − Σ_h cost_jh))) and E-step (R_ij ∝ a_j N(V_ij; μ_j, σ_j²)).

    The primary activations weight the assignments (R_ij · a_i), so a capsule with a_i = 0 has no say.
    Secondary activations are the final a_j normalised to sum 1 over capsules. The inverse temperature λ rises
    as λ_t = λ_final (1 − 0.95^(t+1)).
    """

    def __init__(
        self, *, num_capsules: int, d1: int, d2: int, iterations: int = 3, final_inverse_temperature: float = 0.01
    ) -> None:
        super().__init__()
        side2 = POSE_SIDE * POSE_SIDE
        self.iterations = iterations
        self.final_lambda = final_inverse_temperature
        self.pose_in: nn.Module = nn.Identity() if d1 == side2 else nn.Linear(d1, side2)
        self.pose_out: nn.Module = nn.Identity() if d2 == side2 else nn.Linear(side2, d2)
        # Identity plus noise: votes start near the input poses.
        eye = torch.eye(POSE_SIDE).expand(num_capsules, num_capsules, POSE_SIDE, POSE_SIDE)
        self.weight = nn.Parameter(eye + 0.1 * torch.randn(num_capsules, num_capsules, POSE_SIDE, POSE_SIDE))
        self.beta_u = nn.Parameter(torch.zeros(num_capsules))  # cost of describing a capsule's pose, per j
        self.beta_a = nn.Parameter(torch.zeros(num_capsules))  # cost of not activating it, per j

    def forward(self, poses: torch.Tensor, activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """poses: [b, i, d1], activations: [b, i] in [0, 1] → (poses [b, j, d2], activations [b, j], sum 1)."""
        dtype = poses.dtype
        with torch.autocast(device_type=poses.device.type, enabled=False):
            m = rearrange(self.pose_in(poses.float()), "b i (r k) -> b i r k", r=POSE_SIDE)
            votes = torch.einsum("birk,ijkl->bijrl", m, self.weight.float())
            votes = rearrange(votes, "b i j r l -> b i j (r l)")  # (b, i, j, h)
            a_in = activations.float()[..., None]  # (b, i, 1)
            n_out = votes.shape[2]
            r = votes.new_full(votes.shape[:3], 1.0 / n_out)  # (b, i, j) assignment probabilities
            log_2pi = math.log(2 * math.pi)
            for step in range(self.iterations):
                lam = self.final_lambda * (1.0 - 0.95 ** (step + 1))
                # M-step
                ra = r * a_in  # (b, i, j)
                r_sum = ra.sum(1)  # (b, j)
                coeff = ra / (r_sum[:, None, :] + 1e-8)  # (b, i, j) sums to 1 over i (or is all 0)
                mu = torch.einsum("bij,bijh->bjh", coeff, votes)  # (b, j, h)
                diff2 = (votes - mu[:, None]) ** 2  # (b, i, j, h)
                var = torch.einsum("bij,bijh->bjh", coeff, diff2) + VAR_FLOOR  # (b, j, h)
                log_var = torch.log(var)
                cost = ((self.beta_u[:, None] + 0.5 * log_var) * r_sum[..., None]).sum(-1)  # (b, j)
                log_a = F.logsigmoid(lam * (self.beta_a - cost))  # (b, j)
                if step + 1 == self.iterations:
                    break
                # E-step, in log space: log N(V; μ, σ²) summed over the 16 pose entries.
                log_p = -0.5 * (diff2 / var[:, None] + log_var[:, None] + log_2pi).sum(-1)  # (b, i, j)
                r = torch.softmax(log_a[:, None, :] + log_p, dim=2)
            acts = torch.softmax(log_a, dim=-1)  # (b, j) a_j / Σ_k a_k
            out = self.pose_out(mu)  # (b, j, d2)
        return out.to(dtype), acts.to(dtype)
