"""NetRunner: BatchNorm folding equals the unfolded network; bf16 agrees; compiled batches padded to buckets equal
eager ones; a failed compilation falls back to eager with the same numbers."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from pipeline.extract.backbones import build_2d, build_3d
from pipeline.extract.config import ExtractConfig
from pipeline.extract.runner import NetRunner, _bucket, fold_batchnorm

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def backbones(extract_cache):
    cfg = ExtractConfig()
    return {
        "2d": build_2d(cfg.rgb2d, seed=cfg.seed, cache_dir=str(extract_cache)).net,
        "3d": build_3d(cfg.rgb3d, seed=cfg.seed, cache_dir=str(extract_cache)).net,
    }


def _inputs(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    # Small: on an AVX2-only CPU bf16 convolutions are emulated (a 3D one ~50x slower than fp32)
    shape = (3, 3, 64, 80) if kind == "2d" else (2, 3, 8, 32, 32)
    return torch.randn(shape, generator=g)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return nn.functional.cosine_similarity(a.float(), b.float(), dim=1)


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_folding_removes_batchnorm_and_keeps_the_features(backbones, kind):
    net = backbones[kind]
    folded = fold_batchnorm(net)
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert n_bn > 100  # ResNet-152: 155, ResNeXt-101: 104
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    x = _inputs(kind)
    with torch.inference_mode():
        ref, ours = net(x), folded(x)
    assert ours.shape == ref.shape == (x.shape[0], 2048)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    # The original network is untouched (folding works on a copy).
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()) == n_bn


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_bf16_runner_agrees_with_fp32(backbones, kind):
    fmt = torch.channels_last if kind == "2d" else torch.channels_last_3d
    x = _inputs(kind)
    fp32 = NetRunner(backbones[kind], device=CPU, memory_format=fmt)(x)
    bf16_runner = NetRunner(backbones[kind], device=CPU, precision="bf16", memory_format=fmt)
    assert next(bf16_runner.net.parameters()).dtype == torch.bfloat16  # weights cast once, not per call
    bf16 = bf16_runner(x)
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert (_cos(fp32, bf16) >= 0.99).all()


def test_bucket_sizes():
    assert [_bucket(n, 16) for n in (1, 2, 3, 5, 9, 16)] == [1, 2, 4, 8, 16, 16]
    assert [_bucket(n, 4) for n in (1, 3, 4)] == [1, 4, 4]
    assert _bucket(6, 6) == 6  # a batch size that is not a power of two caps the bucket
    assert _bucket(7, 4) == 7  # never smaller than the batch


def _small_convnet() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so folding has something to fold
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


def test_compiled_runner_pads_to_buckets_and_matches_eager():
    net = _small_convnet()
    eager = NetRunner(net, device=CPU, memory_format=torch.channels_last, max_batch=4)
    compiled = NetRunner(net, device=CPU, memory_format=torch.channels_last, compile=True, max_batch=4)
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    graphs_before = counters["stats"]["unique_graphs"]  # counters are process-wide: count this test's graphs
    seen = []
    for n in (4, 3, 1, 3):  # two graphs to compile (each costs seconds of C++ compiling)
        x = torch.randn(n, 3, 20, 24)
        y = compiled(x)
        seen.append(y.shape[0])
        torch.testing.assert_close(y, eager(x), rtol=1e-4, atol=1e-5)
    assert compiled.compiled, "compilation fell back to eager"
    assert seen == [4, 3, 1, 3]  # padding rows are cut off again
    # Batches 3 and 4 share the bucket of 4: two graphs (1, 4), not three.
    assert counters["stats"]["unique_graphs"] - graphs_before == 2


def test_failed_compilation_falls_back_to_eager(caplog):
    import torch._inductor.config as inductor_config

    net = _small_convnet()
    torch._dynamo.reset()
    runner = NetRunner(net, device=CPU, compile=True, max_batch=2)
    x = torch.randn(2, 3, 12, 12)
    broken = {"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False}  # no cached graph may skip the compiler
    with inductor_config.patch(broken), caplog.at_level(logging.WARNING):
        y = runner(x)
    assert not runner.compiled
    assert "torch.compile failed" in caplog.text
    with torch.inference_mode():
        torch.testing.assert_close(y, net(x), rtol=1e-4, atol=1e-5)
