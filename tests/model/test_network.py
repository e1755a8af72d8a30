"""The network (model/network.py): every architecture and routing end to end, weight sharing, parameter count."""

from __future__ import annotations

import pytest
import torch

from model import CapsuleConfig, build_model, mms_loss
from model.network import CapsuleNetwork
from model.routing import ROUTING_METHODS

B, L = 4, 40

TINY = dict(
    num_capsules=4,
    d1=16,
    d2=8,
    embed_dim=16,
    video_dim=24,
    text_dim=10,
    n_mels=8,
    audio_stem_width=4,
    audio_widths=(4, 8),
    heads=2,
    mlp_hidden=16,
    plain_chunks=4,
    dropout=0.1,
)
VARIANTS = [("capsules", r) for r in ROUTING_METHODS] + [("fully_connected", "none"), ("plain_self_attention", "none")]


def _cfg(architecture: str, routing: str, **extra) -> CapsuleConfig:
    return CapsuleConfig(architecture=architecture, routing=routing, **{**TINY, **extra})


def _batch(cfg: CapsuleConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "video": torch.randn(B, cfg.video_dim, generator=g),
        "audio": torch.randn(B, cfg.n_mels, L, generator=g),
        "audio_lengths": torch.tensor([L, 30, 17, 5]),
        "text": torch.randn(B, cfg.text_dim, generator=g),
    }


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("architecture,routing", VARIANTS)
def test_forward_shapes_finite_and_gradient_on_every_parameter(architecture: str, routing: str, shared: bool) -> None:
    if architecture != "capsules" and not shared:
        return  # the baselines have no shared part; the shared=True case covers them
    torch.manual_seed(0)
    cfg = _cfg(architecture, routing, shared_weights=shared)
    net = build_model(cfg).train()
    out = net(**_batch(cfg))
    assert set(out.embeddings) == {"video", "audio", "text"}
    assert all(e.shape == (B, cfg.embed_dim) and torch.isfinite(e).all() for e in out.embeddings.values())
    if architecture == "capsules":
        assert set(out.activations) == {"video", "audio", "text"}
        for acts in out.activations.values():
            assert acts.shape == (B, cfg.num_capsules)
            assert torch.allclose(acts.sum(-1), torch.ones(B), atol=1e-5)
    else:
        assert out.activations == {}
    loss, _ = mms_loss(out.embeddings)
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("architecture,routing", VARIANTS)
def test_finite_under_bf16_autocast(architecture: str, routing: str) -> None:
    torch.manual_seed(0)
    cfg = _cfg(architecture, routing)
    net = build_model(cfg).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(**_batch(cfg))
        loss, _ = mms_loss(out.embeddings)
    loss.backward()
    assert all(torch.isfinite(e.float()).all() for e in out.embeddings.values())
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


@pytest.mark.parametrize("routing", ROUTING_METHODS)
def test_zero_activation_primary_capsule_changes_nothing_downstream(routing: str) -> None:
    """Force primary capsule 1 of every modality to activation 0, then move its pose: embeddings and
    secondary activations stay the same."""
    torch.manual_seed(0)
    cfg = _cfg("capsules", routing)
    net = build_model(cfg).eval()
    assert isinstance(net, CapsuleNetwork)
    replacement: dict[str, torch.Tensor] = {}

    def force(_module, _inputs, output):
        poses, acts = output
        poses, acts = poses.clone(), acts.clone()
        acts[:, 1] = 0.0
        poses[:, 1] = replacement["pose"]
        return poses, acts

    handles = [net.primary[m].register_forward_hook(force) for m in ("video", "audio", "text")]
    batch = _batch(cfg)
    outs = []
    with torch.no_grad():
        for scale in (0.0, 50.0):
            replacement["pose"] = scale * torch.randn(B, cfg.d1)
            outs.append(net(**batch))
    for h in handles:
        h.remove()
    for m in ("video", "audio", "text"):
        assert torch.allclose(outs[0].embeddings[m], outs[1].embeddings[m], atol=1e-6)
        assert torch.allclose(outs[0].activations[m], outs[1].activations[m], atol=1e-7)
    # Control: the same pose change with activation left on does change the output.
    with torch.no_grad():
        a = net.head("video")(*net.primary["video"](batch["video"]))[0]
        poses, acts = net.primary["video"](batch["video"])
        poses = poses.clone()
        poses[:, 1] += 50.0
        b = net.head("video")(poses, acts)[0]
    assert not torch.allclose(a, b, atol=1e-4)


def test_encode_methods_match_forward_and_modalities_are_optional() -> None:
    torch.manual_seed(0)
    cfg = _cfg("capsules", "self_attention")
    net = build_model(cfg).eval()
    batch = _batch(cfg)
    with torch.no_grad():
        full = net(**batch)
        assert torch.allclose(net.encode_video(batch["video"]), full.embeddings["video"], atol=1e-6)
        assert torch.allclose(
            net.encode_audio(batch["audio"], batch["audio_lengths"]), full.embeddings["audio"], atol=1e-6
        )
        assert torch.allclose(net.encode_text(batch["text"]), full.embeddings["text"], atol=1e-6)
        only_text = net(text=batch["text"])
    assert set(only_text.embeddings) == {"text"}
    with pytest.raises(ValueError, match=r"video input must be \[batch, 24\]"):
        net(video=torch.randn(B, 23))
    with pytest.raises(ValueError, match="at least one"):
        net()


def test_shared_weights_share_routing_and_f_out() -> None:
    shared = build_model(_cfg("capsules", "self_attention", shared_weights=True))
    separate = build_model(_cfg("capsules", "self_attention", shared_weights=False))
    assert shared.head("video") is shared.head("audio") is shared.head("text")
    assert len({id(separate.head(m)) for m in ("video", "audio", "text")}) == 3
    head_params = sum(p.numel() for p in shared.head("video").parameters())
    n_shared = sum(p.numel() for p in shared.parameters())
    assert sum(p.numel() for p in separate.parameters()) == n_shared + 2 * head_params


def _resdavenet_params(n_mels: int, stem: int, widths: tuple[int, ...], blocks: int, k: int) -> int:
    total = n_mels * stem + 2 * stem  # stem conv (no bias) + BatchNorm scale/shift
    c_in = stem
    for w in widths:
        for i in range(blocks):
            total += c_in * w * k + 2 * w + w * w * k + 2 * w
            if i == 0:  # stride 2: 1x1 shortcut conv + BatchNorm
                total += c_in * w + 2 * w
            c_in = w
    return total


def test_paper_preset_parameter_count_matches_layer_arithmetic() -> None:
    cfg = CapsuleConfig.from_preset("paper")
    assert (cfg.num_capsules, cfg.d1, cfg.d2, cfg.embed_dim) == (128, 32, 256, 4096)
    with torch.device("meta"):  # no memory: only shapes
        net = build_model(cfg)
    counted = sum(p.numel() for p in net.parameters())

    c, d1, d2, dd, hidden = cfg.num_capsules, cfg.d1, cfg.d2, cfg.embed_dim, cfg.mlp_hidden
    audio = _resdavenet_params(40, 128, (128, 256, 512, 1024), 2, 9)
    primary = sum((n_in + 1) * c * (d1 + 1) for n_in in (4096, 1024, 300))  # linear to C x (pose + activation)
    two_layer = (d1 * d2 + d2) + (d2 * d2 + d2)  # h_K, h_Q, h_V each
    routing = 3 * two_layer + 2 * (2 * d2) + (d2 * hidden + hidden + hidden * d2 + d2) + d2  # W_p: b_p cancels
    f_out = c * d2 * dd + dd
    expected = audio + primary + routing + f_out
    print(
        f"\npaper preset parameters: {counted:,} (audio encoder {audio:,}, primary capsules {primary:,}, "
        f"routing {routing:,}, f_out {f_out:,})"
    )
    assert counted == expected


def test_build_model_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="heads=3 must divide d2=8"):
        _cfg("capsules", "self_attention", heads=3)
    with pytest.raises(ValueError):
        _cfg("capsules", "k_means")
