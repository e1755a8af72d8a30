"""ResDAVEnet audio encoder (model/encoders.py): stride arithmetic, padding-invariant mean pooling, AVLnet's
checkpoint layout (every key mapped, the same outputs), and freezing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.encoders import AVLNET_UNUSED, ResDAVEnet, lengths_after_stride, load_avlnet_audio
from tests.model.avlnet_layout import avlnet_checkpoint, avlnet_state_dict

N_MELS = 6


def _encoder() -> ResDAVEnet:
    torch.manual_seed(0)
    return ResDAVEnet(n_mels=N_MELS, stem_width=4, widths=(4, 8, 8), blocks_per_stage=2, kernel=9)


@pytest.mark.parametrize("frames", [1, 2, 7, 16, 33])
def test_length_arithmetic_matches_conv_output(frames: int) -> None:
    conv = torch.nn.Conv1d(1, 1, 9, stride=2, padding=4)
    out = conv(torch.zeros(1, 1, frames))
    assert out.shape[-1] == int(lengths_after_stride(torch.tensor([frames]), 2))


def test_mean_pool_is_the_mean_of_the_last_feature_map_over_valid_frames() -> None:
    enc = _encoder().eval()
    mel = torch.randn(1, N_MELS, 37)
    feats = {}
    enc.blocks[-1].register_forward_hook(lambda _m, _i, out: feats.setdefault("last", out))
    with torch.no_grad():
        pooled = enc(mel, torch.tensor([37]))
    last, lengths = feats["last"]
    assert int(lengths) == 5 == last.shape[-1]  # ceil(37 / 2**3)
    assert torch.allclose(pooled, last.mean(-1), atol=1e-6)


def test_padding_changes_nothing_in_eval_mode() -> None:
    enc = _encoder().eval()
    g = torch.Generator().manual_seed(1)
    clips = [torch.randn(N_MELS, n, generator=g) for n in (37, 20, 9)]
    with torch.no_grad():
        alone = torch.cat([enc(c[None], torch.tensor([c.shape[1]])) for c in clips])
        # Pad to 64 frames with garbage: the encoder must zero and ignore it.
        padded = torch.stack([F.pad(c, (0, 64 - c.shape[1]), value=7.0) for c in clips])
        batched = enc(padded, torch.tensor([37, 20, 9]))
    assert torch.allclose(alone, batched, atol=1e-5)


def test_padding_changes_nothing_in_train_mode_batch_statistics() -> None:
    g = torch.Generator().manual_seed(2)
    clips = [torch.randn(N_MELS, n, generator=g) for n in (30, 13)]
    lengths = torch.tensor([30, 13])
    outs = []
    for total, fill in ((30, 0.0), (80, -3.0)):
        enc = _encoder().train()
        padded = torch.stack([F.pad(c, (0, total - c.shape[1]), value=fill) for c in clips])
        outs.append((enc(padded, lengths), enc.stem_bn.running_mean.clone()))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
    assert torch.allclose(outs[0][1], outs[1][1], atol=1e-6)


def test_bad_audio_shape_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"audio must be \[batch, 6, frames\]"):
        _encoder()(torch.randn(2, 40, 10))


# ------------------------------------------------------------------------------------ AVLnet weights, freezing

SMALL = {"stem": 8, "widths": (8, 16, 16, 24), "blocks": 2}


def _ours(n_mels: int = 40, stem: int = 8, widths=(8, 16, 16, 24), blocks: int = 2) -> ResDAVEnet:
    return ResDAVEnet(n_mels=n_mels, stem_width=stem, widths=widths, blocks_per_stage=blocks)


def test_avlnet_checkpoint_maps_every_key_and_computes_what_avlnet_computes(tmp_path) -> None:
    path, reference = avlnet_checkpoint(tmp_path / "avlnet.pth", seed=3, **SMALL)
    enc = _ours()
    report = load_avlnet_audio(enc, path)
    assert report.mapped == len(enc.state_dict()) == 126  # stem 1 + 5, 8 blocks x 12, 4 shortcuts x 6
    assert report.unused == sorted(AVLNET_UNUSED)  # batchnorm1.*: AVLnet defines it and never applies it
    assert len(report.other) == 10 and "DAVEnet_projection.weight" in report.other
    enc.eval()
    mel = torch.randn(3, 40, 64)
    with torch.no_grad():
        expect = reference(mel).mean(-1)  # AVLnet: mean over the output frames of an unpadded clip
        got = enc(mel, torch.full((3,), 64))
    assert torch.allclose(got, expect, atol=1e-5, rtol=1e-5)


def test_full_size_avlnet_layout_has_the_real_keys_and_shapes(tmp_path) -> None:
    path, _ = avlnet_checkpoint(tmp_path / "avlnet.pth")
    state = torch.load(path, weights_only=True)
    davenet = [k for k in state if k.startswith("DAVEnet.")]
    assert len(davenet) == 131 and len(state) == 141  # as AVLnet's released 4096-d model lists them
    for key, shape in {
        "DAVEnet.batchnorm1.running_var": (1,),
        "DAVEnet.conv1.weight": (128, 1, 40, 1),
        "DAVEnet.layer1.0.downsample.0.weight": (128, 128, 1, 1),
        "DAVEnet.layer2.0.conv1.weight": (256, 128, 1, 9),
        "DAVEnet.layer4.1.conv2.weight": (1024, 1024, 1, 9),
        "DAVEnet.layer4.0.downsample.1.num_batches_tracked": (),
    }.items():
        assert tuple(state[key].shape) == shape, key
    enc = ResDAVEnet()  # the paper preset's encoder
    assert load_avlnet_audio(enc, path).mapped == 126
    assert torch.equal(enc.stem.weight, state["DAVEnet.conv1.weight"].reshape(128, 40, 1))
    assert torch.equal(enc.blocks[7].conv2.weight, state["DAVEnet.layer4.1.conv2.weight"].squeeze(2))


def test_bare_resdavenet_and_amp_wrapped_state_dicts_load(tmp_path) -> None:
    _, reference = avlnet_checkpoint(tmp_path / "a.pth", **SMALL)
    bare = reference.state_dict()
    torch.save({"net": avlnet_state_dict(reference), "optimizer": {}, "amp": {}}, tmp_path / "amp_checkpoint.pt")
    for source in (bare, tmp_path / "amp_checkpoint.pt"):
        enc = _ours()
        assert load_avlnet_audio(enc, source).mapped == 126
        assert torch.equal(enc.blocks[2].shortcut_bn.running_var, bare["layer2.0.downsample.1.running_var"])


def test_strict_key_check_refuses_missing_extra_and_misshapen_entries(tmp_path) -> None:
    _, reference = avlnet_checkpoint(tmp_path / "a.pth", **SMALL)
    good = avlnet_state_dict(reference)
    missing = {k: v for k, v in good.items() if k != "DAVEnet.layer3.1.bn2.running_mean"}
    extra = {**good, "DAVEnet.layer5.0.conv1.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"missing 1 ResDavenet entries.*layer3\.1\.bn2\.running_mean"):
        load_avlnet_audio(_ours(), missing)
    with pytest.raises(ValueError, match=r"1 unexpected ResDavenet entries.*layer5"):
        load_avlnet_audio(_ours(), extra)
    with pytest.raises(ValueError, match=r"shape .* does not fit"):
        load_avlnet_audio(_ours(widths=(8, 16, 16, 32)), good)
    with pytest.raises(FileNotFoundError, match="AVLnet checkpoint not found"):
        load_avlnet_audio(_ours(), tmp_path / "nowhere.pth")


class NotATensor:
    """An arbitrary class: a weights_only load must refuse to build it."""


def test_avlnet_checkpoint_is_read_with_weights_only(tmp_path) -> None:
    torch.save({"DAVEnet.conv1.weight": NotATensor()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="not a readable AVLnet checkpoint"):
        load_avlnet_audio(_ours(), tmp_path / "evil.pth")


def test_frozen_encoder_takes_no_gradient_and_keeps_its_statistics() -> None:
    from model import build_model, mms_loss
    from model.config import CapsuleConfig

    cfg = CapsuleConfig(
        num_capsules=4, d1=4, d2=8, embed_dim=16, audio_stem_width=8, audio_widths=(8, 8), heads=2, mlp_hidden=16
    )
    torch.manual_seed(0)
    net = build_model(cfg)
    net.audio_encoder.freeze()
    net.train()
    assert not net.audio_encoder.training and all(not m.training for m in net.audio_encoder.modules())
    assert net.primary.training
    before = {k: v.clone() for k, v in net.audio_encoder.state_dict().items()}
    others = {k: v.detach().clone() for k, v in net.named_parameters() if not k.startswith("audio_encoder.")}
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        out = net(
            video=torch.randn(6, 4096),
            audio=torch.randn(6, 40, 32),
            audio_lengths=torch.tensor([32, 20, 9, 32, 5, 1]),
            text=torch.randn(6, 300),
        )
        opt.zero_grad()
        mms_loss(out.embeddings)[0].backward()
        assert all(p.grad is None for p in net.audio_encoder.parameters())
        opt.step()
    after = net.audio_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights, running stats, batch counts
    moved = [k for k, v in net.named_parameters() if k in others and not torch.equal(v, others[k])]
    assert len(moved) == len(others)  # every other parameter trained
