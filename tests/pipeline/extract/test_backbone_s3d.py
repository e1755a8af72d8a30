"""S3D (MIL-NCE, HowTo100M): the key → shape manifest of ``s3d_howto100m.pth``, written here from reading the
release's ``s3dg.py`` (antoine77340/S3D_HowTo100M), loads strictly into ours; the stem's space-to-depth order;
a random stand-in runs. The comparison with the release's own code is ``reference_s3d.py`` beside this file."""

from __future__ import annotations

import torch

from pipeline.extract.frame_models import build_stream
from pipeline.extract.registry import StreamConfig
from pipeline.extract.s3d import S3DHowTo100M, space_to_depth
from pipeline.extract.stream_weights import load_strict

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _unit(prefix: str, cin: int, cout: int, kernel: tuple[int, int, int], separable: bool) -> dict[str, list[int]]:
    """The release's STConv3D: conv1 (+ bn1); separable: conv1 (1, k, k), bn1, conv2 (k, 1, 1), bn2; no conv bias."""
    out: dict[str, list[int]] = {}
    if separable:
        k = kernel[0]
        out[f"{prefix}.conv1.weight"] = [cout, cin, 1, k, k]
        out[f"{prefix}.conv2.weight"] = [cout, cout, k, 1, 1]
        out |= {f"{prefix}.bn2.{p}": ([] if p == "num_batches_tracked" else [cout]) for p in BN}
    else:
        out[f"{prefix}.conv1.weight"] = [cout, cin, *kernel]
    out |= {f"{prefix}.bn1.{p}": ([] if p == "num_batches_tracked" else [cout]) for p in BN}
    return out


def _gate(prefix: str, c: int) -> dict[str, list[int]]:
    return {f"{prefix}.fc.weight": [c, c], f"{prefix}.fc.bias": [c]}


def reference_manifest() -> dict[str, list[int]]:
    """``s3d_howto100m.pth``'s keys and shapes as the release's ``S3D('s3d_dict.npy', 512)`` defines them (read from
    its ``s3dg.py``: ``space_to_depth=True``; its ``self.gating = SelfGating(192)`` replaces the boolean flag, so the
    stem gate is always there; ``Sentence_Embedding`` with 66 250 words of 300, ``output_dim=2048``)."""
    out = _unit("conv1", 24, 64, (2, 4, 4), False)
    out |= _unit("conv_2b", 64, 64, (1, 1, 1), False)
    out |= _unit("conv_2c", 64, 192, (3, 3, 3), True)
    out |= _gate("gating", 192)
    # InceptionBlock(input_dim, 0_0a, 1_0a, 1_0b, 2_0a, 2_0b, 3_0b) as the release's S3D.__init__ builds them
    blocks = {
        "mixed_3b": (192, 64, 96, 128, 16, 32, 32),
        "mixed_3c": (256, 128, 128, 192, 32, 96, 64),
        "mixed_4b": (480, 192, 96, 208, 16, 48, 64),
        "mixed_4c": (512, 160, 112, 224, 24, 64, 64),
        "mixed_4d": (512, 128, 128, 256, 24, 64, 64),
        "mixed_4e": (512, 112, 144, 288, 32, 64, 64),
        "mixed_4f": (528, 256, 160, 320, 32, 128, 128),
        "mixed_5b": (832, 256, 160, 320, 32, 128, 128),
        "mixed_5c": (832, 384, 192, 384, 48, 128, 128),
    }
    for name, (cin, b0, b1a, b1b, b2a, b2b, b3b) in blocks.items():
        out |= _unit(f"{name}.conv_b0", cin, b0, (1, 1, 1), False)
        out |= _unit(f"{name}.conv_b1_a", cin, b1a, (1, 1, 1), False)
        out |= _unit(f"{name}.conv_b1_b", b1a, b1b, (3, 3, 3), True)
        out |= _unit(f"{name}.conv_b2_a", cin, b2a, (1, 1, 1), False)
        out |= _unit(f"{name}.conv_b2_b", b2a, b2b, (3, 3, 3), True)
        out |= _unit(f"{name}.conv_b3_b", cin, b3b, (1, 1, 1), False)
        for i, c in enumerate((b0, b1b, b2b, b3b)):
            out |= _gate(f"{name}.gating_b{i}", c)
    out |= {"fc.weight": [512, 1024], "fc.bias": [512]}
    out |= {"text_module.word_embd.weight": [66250, 300]}
    out |= {"text_module.fc1.weight": [2048, 300], "text_module.fc1.bias": [2048]}
    out |= {"text_module.fc2.weight": [512, 2048], "text_module.fc2.bias": [512]}
    return out


def test_release_manifest_loads_strictly_into_ours():
    manifest = reference_manifest()
    with torch.device("meta"):
        ours = S3DHowTo100M()
    assert {k: list(v.shape) for k, v in ours.state_dict().items()} == manifest
    assert len(manifest) == 537 and sum(torch.Size(s).numel() for s in manifest.values()) == 31_232_500
    state = {k: torch.empty(s, device="meta") for k, s in manifest.items()}
    load_strict(ours, state, where="manifest", arch="S3D")  # what loading s3d_howto100m.pth does


def test_space_to_depth_channel_order():
    x = torch.arange(2 * 3 * 4 * 6 * 8, dtype=torch.float32).reshape(2, 3, 4, 6, 8)
    y = space_to_depth(x)
    assert y.shape == (2, 24, 2, 3, 4)
    for dt, dh, dw, c in ((0, 0, 0, 0), (1, 0, 1, 2), (0, 1, 0, 1), (1, 1, 1, 2)):
        ch = ((dt * 2 + dh) * 2 + dw) * 3 + c  # (time offset, row offset, column offset, colour)
        assert torch.equal(y[:, ch], x[:, c, dt::2, dh::2, dw::2])


def test_a_weights_file_loads_and_runs(tmp_path):
    torch.manual_seed(3)
    state = {k: torch.randn(s) * 0.05 if s else torch.tensor(0) for k, s in reference_manifest().items()}
    for k in state:
        if k.endswith("running_var"):
            state[k] = torch.rand_like(state[k]) + 0.5
    path = tmp_path / "s3d_howto100m.pth"
    torch.save(state, path)
    model = build_stream(StreamConfig(backbone="s3d-howto100m", weights=str(path)), seed=0)
    assert model.net.text_module is None and model.dim == 1024 and model.kind == "clip"
    assert (model.resize, model.crop, model.mean, model.std) == (224, 224, (0.0,) * 3, (1.0,) * 3)  # [0, 1] input
    with torch.no_grad():
        x = torch.rand(1, 3, 8, 64, 64)
        y = model.net(x)
        emb = model.net.video_embedding(x)
    assert y.shape == (1, 1024) and emb.shape == (1, 512) and torch.isfinite(y).all()
    assert torch.allclose(emb, y @ state["fc.weight"].T + state["fc.bias"], atol=1e-4)
