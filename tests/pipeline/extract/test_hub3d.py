"""pytorchvideo hub backbones: the classifier-free trunk equals the hub network's own pooled features."""

from __future__ import annotations

import pytest
import torch

from pipeline.extract.backbones import HubTrunk, _make_3d


@pytest.mark.slow
def test_x3d_trunk_equals_hub_head_without_classifier():
    torch.manual_seed(0)
    trunk, hub = _make_3d("x3d_m")
    assert isinstance(trunk, HubTrunk)
    trunk.eval()
    head = hub.blocks[-1]
    x = torch.randn(1, 3, 16, 224, 224)  # X3D-M's training size: the hub pool (16, 7, 7) covers the map exactly
    with torch.inference_mode():
        ours = trunk(x)
        y = x
        for block in hub.blocks[:-1]:
            y = block(y)
        ref = head.pool(y).flatten(1)  # ProjectedPool output before dropout/proj/softmax
    assert ours.shape == (1, 2048)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
