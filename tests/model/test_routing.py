"""Routing variants (model/routing/): shapes, finiteness, gradients, equivalences with naive computations."""

from __future__ import annotations

import math

import pytest
import torch

from model.routing import ROUTING_METHODS, make_routing
from model.routing.em import EMRouting

B, C = 3, 5
# (d1, d2) pairs: unequal sizes, and 16/16 where EM reads the poses as 4x4 matrices without adapters.
SIZES = [(8, 12), (16, 16)]


def _router(name: str, d1: int, d2: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return make_routing(name, num_capsules=C, d1=d1, d2=d2, heads=2 if d2 % 2 == 0 else 1, mlp_hidden=16, dropout=0.1)


def _inputs(d1: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, d1, generator=g), torch.rand(B, C, generator=g)


@pytest.mark.parametrize("d1,d2", SIZES)
@pytest.mark.parametrize("name", ROUTING_METHODS)
def test_shapes_finite_activations_sum_to_one_and_gradients(name: str, d1: int, d2: int) -> None:
    router = _router(name, d1, d2).train()
    poses, acts = _inputs(d1)
    out, out_acts = router(poses, acts)
    assert out.shape == (B, C, d2) and out_acts.shape == (B, C)
    assert torch.isfinite(out).all() and torch.isfinite(out_acts).all()
    assert torch.allclose(out_acts.sum(-1), torch.ones(B), atol=1e-5)
    assert (out_acts >= 0).all()
    # A loss that reaches every output: poses weighted by a non-uniform function of the activations.
    (out.sin() * out_acts[..., None]).sum().add(out_acts.pow(2).sum()).backward()
    missing = [n for n, p in router.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"{name}: parameters without gradient: {missing}"


@pytest.mark.parametrize("name", ROUTING_METHODS)
def test_finite_under_bf16_autocast(name: str) -> None:
    router = _router(name, 16, 16).train()
    poses, acts = _inputs(16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, out_acts = router(poses, acts)
        loss = (out.float() * out_acts.float()[..., None]).sum()
    loss.backward()
    assert torch.isfinite(out.float()).all() and torch.isfinite(out_acts.float()).all()
    assert torch.allclose(out_acts.float().sum(-1), torch.ones(B), atol=2e-2)
    assert all(torch.isfinite(p.grad).all() for p in router.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", ROUTING_METHODS)
def test_batched_equals_per_sample_loop(name: str) -> None:
    router = _router(name, 8, 12).eval()
    poses, acts = _inputs(8)
    with torch.no_grad():
        out, out_acts = router(poses, acts)
        singles = [router(poses[k : k + 1], acts[k : k + 1]) for k in range(B)]
    assert torch.allclose(out, torch.cat([s[0] for s in singles]), atol=1e-5)
    assert torch.allclose(out_acts, torch.cat([s[1] for s in singles]), atol=1e-6)


@pytest.mark.parametrize("name", ROUTING_METHODS)
def test_zero_activation_capsule_pose_has_no_effect(name: str) -> None:
    router = _router(name, 8, 12).eval()
    poses, acts = _inputs(8)
    acts[:, 2] = 0.0
    other = poses.clone()
    other[:, 2] = 100.0 * torch.randn(B, 8)
    with torch.no_grad():
        a, a_acts = router(poses, acts)
        b, b_acts = router(other, acts)
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a_acts, b_acts, atol=1e-7)


def test_factory_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown routing 'k_means'.*self_attention"):
        make_routing("k_means", num_capsules=4, d1=8, d2=8)


def _naive_dynamic(weight: torch.Tensor, poses: torch.Tensor, acts: torch.Tensor, iterations: int):
    """Sabour et al. 2017, procedure 1, one sample at a time, with Python loops over capsules."""
    n_in, n_out = weight.shape[0], weight.shape[1]
    outs, lengths_all = [], []
    for x, a in zip(poses, acts, strict=True):
        u = [a[i] * x[i] for i in range(n_in)]
        u_hat = [[weight[i, j] @ u[i] for j in range(n_out)] for i in range(n_in)]
        logit = [[0.0] * n_out for _ in range(n_in)]
        for _ in range(iterations):
            c = []
            for i in range(n_in):
                z = sum(math.exp(logit[i][j]) for j in range(n_out))
                c.append([math.exp(logit[i][j]) / z for j in range(n_out)])
            v = []
            for j in range(n_out):
                s = sum(c[i][j] * u_hat[i][j] for i in range(n_in))
                norm2 = float(s @ s)
                v.append(norm2 / (1 + norm2) * s / math.sqrt(norm2))
            for i in range(n_in):
                for j in range(n_out):
                    logit[i][j] += float(u_hat[i][j] @ v[j])
        lengths = [math.sqrt(float(vj @ vj)) for vj in v]
        outs.append(torch.stack(v))
        lengths_all.append(torch.tensor([length / sum(lengths) for length in lengths]))
    return torch.stack(outs), torch.stack(lengths_all)


@pytest.mark.parametrize("iterations", [1, 3])
def test_dynamic_routing_matches_naive_reference(iterations: int) -> None:
    torch.manual_seed(0)
    router = make_routing("dynamic", num_capsules=4, d1=6, d2=5, iterations=iterations).double()
    poses = torch.randn(2, 4, 6, dtype=torch.float64)
    acts = torch.rand(2, 4, dtype=torch.float64)
    with torch.no_grad():
        out, out_acts = router(poses.float(), acts.float())
        ref, ref_acts = _naive_dynamic(router.weight.double(), poses, acts, iterations)
    assert torch.allclose(out.double(), ref, atol=1e-5)
    assert torch.allclose(out_acts.double(), ref_acts.double(), atol=1e-5)


def test_em_routing_finite_with_near_zero_variance() -> None:
    torch.manual_seed(0)
    router = EMRouting(num_capsules=C, d1=16, d2=16, iterations=3)
    with torch.no_grad():
        router.weight.copy_(torch.eye(4).expand_as(router.weight))
    # Every capsule has the same pose: every vote for a secondary capsule is identical, so σ² → 0.
    poses = torch.randn(1, 1, 16).expand(B, C, 16).clone()
    poses[1] += 1e-7 * torch.randn(C, 16)  # differences far below the variance floor
    poses.requires_grad_(True)
    acts = torch.ones(B, C)
    acts[2] = 1e-12  # all but absent
    out, out_acts = router(poses, acts)
    (out.sum() + out_acts.pow(2).sum()).backward()
    assert torch.isfinite(out).all() and torch.isfinite(out_acts).all()
    assert torch.isfinite(poses.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in router.parameters())
    # The Gaussian mean of identical votes is the vote itself.
    assert torch.allclose(out[0], poses[0].detach(), atol=1e-5)


@pytest.mark.parametrize("name", ["self_attention", "set_transformer", "none"])
def test_checkpoints_with_the_redundant_logit_bias_still_load(name: str) -> None:
    """The softmax over capsules cancels a bias on the capsule logit, so the routers have none; a state dict that
    holds one (written before it was dropped) loads, and the outputs do not depend on its value."""
    torch.manual_seed(0)
    router = make_routing(name, num_capsules=5, d1=8, d2=16, heads=2, mlp_hidden=32, dropout=0.0).eval()
    state = router.state_dict()
    logit_weight = "to_logit.weight" if "to_logit.weight" in state else "mlp.3.weight"
    old = {**state, logit_weight.replace("weight", "bias"): torch.tensor([3.0])}
    fresh = make_routing(name, num_capsules=5, d1=8, d2=16, heads=2, mlp_hidden=32, dropout=0.0).eval()
    fresh.load_state_dict(old)  # strict
    poses, acts = torch.randn(2, 5, 8), torch.rand(2, 5)
    for a, b in zip(router(poses, acts), fresh(poses, acts), strict=True):
        torch.testing.assert_close(a, b)
