"""The 3D ResNeXt-101 loads both released checkpoint layouts strictly."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from pipeline.extract.resnext3d import ResNeXt3D, load_resnext_state, resnext101


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return resnext101().eval()


def _original_layout(net, *, fresh_values: bool = False) -> OrderedDict:
    """The state dict as the 2018 checkpoints hold it: no num_batches_tracked (PyTorch < 0.4), plus fc (400-way)."""
    state = OrderedDict(
        (k, torch.randn_like(v) if fresh_values and v.is_floating_point() else v)
        for k, v in net.state_dict().items()
        if not k.endswith("num_batches_tracked")
    )
    state["fc.weight"] = torch.randn(400, 2048)
    state["fc.bias"] = torch.randn(400)
    return state


def _as_kinetics_checkpoint(state: OrderedDict) -> dict:
    return {
        "epoch": 200,
        "arch": "resnext-101",
        "state_dict": OrderedDict(("module." + k, v) for k, v in state.items()),
    }


def test_architecture_matches_hara_resnext101(net):
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["conv1.weight"] == (64, 3, 7, 7, 7)
    assert shapes["layer1.0.conv1.weight"] == (128, 64, 1, 1, 1)
    assert shapes["layer1.0.conv2.weight"] == (128, 4, 3, 3, 3)  # cardinality 32: 128 / 32 channels per group
    assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1, 1)  # shortcut B
    assert shapes["layer4.2.conv3.weight"] == (2048, 1024, 1, 1, 1)
    assert "layer3.22.bn3.running_var" in shapes and "layer3.23.conv1.weight" not in shapes
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params + 2048 * 400 + 400 == 48_340_816  # 48.34 M with the Kinetics classifier, as published


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["resnext101.pth", "resnext-101-kinetics.pth"])
def test_full_size_layouts_load_strictly(net, layout):
    state = _original_layout(net)
    payload = _as_kinetics_checkpoint(state) if layout == "resnext-101-kinetics.pth" else state
    fresh = resnext101()
    load_resnext_state(fresh, payload, where=layout)
    for key, value in fresh.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("layout", ["resnext101.pth", "resnext-101-kinetics.pth"])
def test_saved_checkpoints_round_trip_with_weights_only(tmp_path, layout):
    """Through torch.save / torch.load(weights_only=True); a one-block-per-stage ResNeXt keeps the file small."""
    torch.manual_seed(1)
    small = ResNeXt3D((1, 1, 1, 1)).eval()
    state = _original_layout(small, fresh_values=True)
    path = tmp_path / layout
    torch.save(_as_kinetics_checkpoint(state) if layout == "resnext-101-kinetics.pth" else state, path)
    fresh = ResNeXt3D((1, 1, 1, 1))
    load_resnext_state(fresh, torch.load(path, weights_only=True), where=str(path))
    for key, value in fresh.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, state[key]), key


def test_wrong_layout_fails_naming_the_file(net):
    state = _original_layout(net)
    del state["layer2.0.conv2.weight"]
    with pytest.raises(ValueError, match=r"(?s)ckpt\.pth.*layer2\.0\.conv2\.weight"):
        load_resnext_state(resnext101(), state, where="ckpt.pth")


@pytest.mark.slow
def test_forward_shape_and_pool(net):
    x = torch.randn(1, 3, 16, 112, 112)
    with torch.no_grad():
        y = net(x)
        trunk = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))))
    assert trunk.shape == (1, 2048, 1, 4, 4)  # the original AvgPool3d((1, 4, 4)) covers it exactly
    torch.testing.assert_close(y, torch.nn.functional.avg_pool3d(trunk, (1, 4, 4)).flatten(1))
