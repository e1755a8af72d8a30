"""The device plan on a CPU: device and dtype selection, the TF32 record, transfers, batch sizing from a memory
figure, the worker-per-GPU plan and the DDP backend. The CUDA branches that need no GPU (a visible count, flags,
the plan's arithmetic) run here; the rest runs in ``mmcaps bench gpu``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.device import (
    TF32_OFF,
    DeviceError,
    GpuWorker,
    activation_bytes,
    apply_tf32,
    autocast,
    autocast_dtype,
    batch_for_memory,
    current_tf32,
    ddp_backend,
    gpu_worker_plan,
    loader_workers_hint,
    plan_device,
    select_device,
    to_device,
    visible_gpus,
)

MIB, GIB = 2**20, 2**30


@pytest.mark.parametrize(
    ("requested", "visible", "expected"),
    [(None, 0, "cpu"), ("", 0, "cpu"), (None, 2, "cuda"), ("cpu", 2, "cpu"), ("cuda", 1, "cuda"),
     ("cuda:1", 2, "cuda:1"), ("meta", 0, "meta")],
)  # fmt: skip
def test_select_device(requested, visible, expected):
    assert select_device(requested, cuda_devices=visible) == torch.device(expected)


@pytest.mark.parametrize(
    ("requested", "visible", "message"),
    [("cuda", 0, "device cuda asked for, but no CUDA device is visible"),
     ("cuda:0", 0, "use device=cpu"),
     ("cuda:2", 2, "device cuda:2 asked for, but 2 CUDA device(s) are visible (cuda:0..1)"),
     ("gpu", 1, "'gpu' is not a device name (cpu, cuda or cuda:N)")],
)  # fmt: skip
def test_unusable_devices_are_one_line(requested, visible, message):
    with pytest.raises(DeviceError) as info:
        select_device(requested, cuda_devices=visible)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
def test_cuda_without_a_gpu_is_refused_by_the_real_count():
    with pytest.raises(DeviceError, match="no CUDA device is visible"):
        plan_device("cuda", "fp32")


def test_autocast_follows_the_precision():
    assert autocast_dtype("bf16") is torch.bfloat16 and autocast_dtype("fp32") is None
    with pytest.raises(ValueError, match="once resolved"):
        autocast_dtype("auto")  # type: ignore[arg-type]
    a, b = torch.randn(4, 8), torch.randn(8, 2)
    cpu = torch.device("cpu")
    with autocast(cpu, "bf16"):
        assert (a @ b).dtype is torch.bfloat16
    with autocast(cpu, "fp32"):
        assert torch.equal(a @ b, a @ b) and (a @ b).dtype is torch.float32


def test_cpu_plan_records_what_shaped_the_numbers_and_leaves_tf32_alone():
    before = current_tf32()
    plan = plan_device("cpu", "bf16")
    assert plan.tf32 == before == current_tf32()  # CUDA-only flags: a CPU process is left as it is
    record = plan.record()
    assert record["device"] == "cpu" and record["precision"] == "bf16" and record["autocast"] == "bfloat16"
    assert record["tf32"] == before.record() and record["pin_memory"] is False and "gpu" not in record
    fp32 = plan_device("cpu", "fp32")
    assert fp32.record()["autocast"] is None and not fp32.pin_memory


def test_tf32_is_set_off_on_cuda_and_read_back():
    """In a fresh process (the flags are process-wide): PyTorch's default has cuDNN on TF32; the plan sets every
    fp32 path to IEEE and the record says what is in force, also after another setting was applied."""
    code = (
        "import torch; from pipeline.device import apply_tf32, current_tf32, Tf32, TF32_OFF\n"
        "print(current_tf32().cudnn_conv)\n"
        "print(apply_tf32(torch.device('cuda')) == TF32_OFF)\n"
        "print(apply_tf32(torch.device('cuda'), Tf32('tf32', 'tf32', 'high')) == Tf32('tf32', 'tf32', 'high'))\n"
        "print(apply_tf32(torch.device('cuda')) == current_tf32() == TF32_OFF)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["tf32", "True", "True", "True"]
    assert TF32_OFF.record() == {"cuda_matmul": "ieee", "cudnn_conv": "ieee", "float32_matmul_precision": "highest"}
    assert apply_tf32(torch.device("cpu")) == current_tf32()


def test_to_device_on_cpu_wraps_without_a_copy():
    frames = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    t = to_device(frames, torch.device("cpu"))
    assert t.data_ptr() == frames.__array_interface__["data"][0] and torch.equal(t, torch.from_numpy(frames))
    strided = frames[:, ::2]  # not contiguous: made so, values kept
    assert torch.equal(to_device(strided, torch.device("cpu")), torch.from_numpy(np.ascontiguousarray(strided)))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({}, 81),  # 10 GiB x 0.8 = 8192 MiB over 100 MiB
     ({"multiple": 8}, 80),
     ({"cap": 16}, 16),
     ({"fixed_bytes": 4 * GIB}, 40),  # (8192 - 4096) MiB
     ({"headroom": 0.0}, 102),
     ({"headroom": 0.5, "multiple": 64}, 51)],  # 51 < 64: no multiple fits, the 51 that do are kept
)  # fmt: skip
def test_batch_for_memory(kwargs, expected):
    assert batch_for_memory(10 * GIB, 100 * MIB, **kwargs) == expected


def test_batch_for_memory_refuses_what_cannot_fit():
    with pytest.raises(DeviceError, match=r"not even one item fits: 100\.0 MiB per item, 80\.0 MiB usable"):
        batch_for_memory(100 * MIB, 100 * MIB)
    with pytest.raises(DeviceError, match="not even one item fits"):
        batch_for_memory(GIB, MIB, fixed_bytes=2 * GIB)
    with pytest.raises(ValueError, match="headroom"):
        batch_for_memory(GIB, MIB, headroom=1.0)
    with pytest.raises(ValueError, match="item_bytes"):
        batch_for_memory(GIB, 0)


def test_activation_bytes_from_shapes_only():
    """conv 3->8 on 16x16 (in 768 + out 2048 values), ReLU (2048 + 2048 = the largest), pool, linear: twice the
    largest leaf's input + output, in the dtype's bytes; the network is neither moved nor run."""
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    )
    weight = net[0].weight.detach().clone()
    assert activation_bytes(net, (3, 16, 16)) == 2 * 4096 * 4
    assert activation_bytes(net, (3, 16, 16), torch.bfloat16) == 2 * 4096 * 2
    bf16_net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).to(torch.bfloat16)  # a bf16 runner's weights
    assert activation_bytes(bf16_net, (3, 16, 16), torch.bfloat16) == 2 * 4096 * 2
    assert activation_bytes(net, (3, 32, 32)) == 4 * activation_bytes(net, (3, 16, 16))
    assert net[0].weight.device.type == "cpu" and torch.equal(net[0].weight, weight)
    assert not net[0]._forward_hooks  # its hooks are removed
    per_item = activation_bytes(net, (3, 64, 64))
    assert batch_for_memory(64 * MIB, per_item, headroom=0.25) == 48 * MIB // per_item


def test_one_worker_per_gpu():
    plan = gpu_worker_plan(4, cpus=16)
    assert [w.name for w in plan] == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    assert [w.env for w in plan] == [{"CUDA_VISIBLE_DEVICES": str(i)} for i in range(4)]
    assert all(w.resources == {"GPU": 1.0} and w.nthreads == 4 and w.device == "cuda:0" for w in plan)
    assert [w.nthreads for w in gpu_worker_plan(4, cpus=3)] == [1] * 4  # at least one thread each
    assert gpu_worker_plan(0) == [] and gpu_worker_plan([]) == []


def test_worker_plan_hands_out_the_parents_visible_gpus():
    ids = visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 3,"})
    assert ids == ["2", "3"]
    assert gpu_worker_plan(ids, cpus=8) == [
        GpuWorker("gpu-0", "2", 4, {"CUDA_VISIBLE_DEVICES": "2"}, {"GPU": 1.0}),
        GpuWorker("gpu-1", "3", 4, {"CUDA_VISIBLE_DEVICES": "3"}, {"GPU": 1.0}),
    ]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, count=4) == []  # an empty mask hides every GPU
    assert visible_gpus({}, count=2) == ["0", "1"]
    assert [w.gpu for w in gpu_worker_plan(visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-ab12"}))] == ["GPU-ab12"]


def test_ddp_backend_and_loader_advice():
    assert ddp_backend("cuda") == ddp_backend(torch.device("cuda", 1)) == "nccl"
    assert ddp_backend("cpu") == "gloo"
    cuda = torch.device("cuda", 0)
    assert loader_workers_hint(torch.device("cpu"), 0, cpus=16) is None
    assert loader_workers_hint(cuda, 2, cpus=16) is None
    assert loader_workers_hint(cuda, 0, cpus=2, world=2) is None  # no core to spare
    hint = loader_workers_hint(cuda, 0, cpus=16, world=2)
    assert hint is not None and "num_workers=4" in hint and "\n" not in hint
