"""MMS loss (model/loss.py): a hand computation, alignment, and missing audio."""

from __future__ import annotations

import math

import pytest
import torch

from model.loss import mms_loss, mms_pair_loss


def test_pair_loss_equals_hand_computation_on_3x3() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    y = torch.tensor([[0.5, 0.0], [1.0, 1.0], [0.0, -1.0]])
    delta = 0.1
    s = [[sum(a * b for a, b in zip(xi, yj, strict=True)) for yj in y.tolist()] for xi in x.tolist()]
    for k in range(3):
        s[k][k] -= delta

    def ce_rows(m: list[list[float]]) -> float:
        return sum(math.log(sum(math.exp(v) for v in row)) - row[k] for k, row in enumerate(m)) / len(m)

    expected = ce_rows(s) + ce_rows([list(col) for col in zip(*s, strict=True)])
    assert mms_pair_loss(x, y, margin=delta).item() == pytest.approx(expected, rel=1e-6)
    total, parts = mms_loss({"video": x, "text": y}, margin=delta)
    assert set(parts) == {"video-text"}
    assert total.item() == pytest.approx(expected, rel=1e-6)


def test_aligned_pairs_score_lower_than_shuffled() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 8, generator=g)
    y = x + 0.1 * torch.randn(16, 8, generator=g)
    perm = torch.roll(torch.arange(16), 1)
    assert mms_pair_loss(x, y) < mms_pair_loss(x, y[perm])


def test_total_is_the_sum_of_the_three_pairs() -> None:
    g = torch.Generator().manual_seed(1)
    emb = {m: torch.randn(5, 4, generator=g) for m in ("video", "audio", "text")}
    total, parts = mms_loss(emb)
    assert set(parts) == {"video-audio", "text-audio", "video-text"}
    assert torch.allclose(parts["text-audio"], mms_pair_loss(emb["text"], emb["audio"]))
    assert torch.allclose(total, sum(parts.values()))


def test_rows_without_audio_drop_only_from_audio_pairs() -> None:
    g = torch.Generator().manual_seed(2)
    emb = {m: torch.randn(4, 3, generator=g) for m in ("video", "audio", "text")}
    mask = torch.tensor([True, False, True, True])
    total, parts = mms_loss(emb, audio_mask=mask)
    assert torch.allclose(parts["video-text"], mms_pair_loss(emb["video"], emb["text"]))
    assert torch.allclose(parts["video-audio"], mms_pair_loss(emb["video"][mask], emb["audio"][mask]))
    assert torch.allclose(parts["text-audio"], mms_pair_loss(emb["text"][mask], emb["audio"][mask]))
    # Changing the audio embedding of a row without audio changes nothing.
    emb2 = dict(emb, audio=emb["audio"].clone())
    emb2["audio"][1] = 100.0
    assert torch.allclose(mms_loss(emb2, audio_mask=mask)[0], total)
    # No row with audio: only video-text remains.
    total_none, parts_none = mms_loss(emb, audio_mask=torch.zeros(4, dtype=torch.bool))
    assert set(parts_none) == {"video-text"}
    assert torch.allclose(total_none, parts["video-text"])


def test_one_modality_is_an_error() -> None:
    with pytest.raises(ValueError, match="two modalities"):
        mms_loss({"video": torch.randn(3, 4)})
