"""ResDAVEnet audio encoder (model/encoders.py): stride arithmetic and padding-invariant mean pooling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.encoders import ResDAVEnet, lengths_after_stride

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
