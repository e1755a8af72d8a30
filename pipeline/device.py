"""The device plan: where a stage computes and how, decided in one place for extraction, training and embedding.

- **Device** (:func:`select_device`): ``cpu``, ``cuda`` or ``cuda:N`` from the config, unset meaning ``cuda`` when a
  GPU is visible; asking for CUDA where there is none is one plain line (:class:`DeviceError`), not a driver trace.
- **Precision** (:func:`plan_device`): ``precision: auto`` resolved by :mod:`pipeline.hardware` (bf16 where the
  device multiplies in it natively), and the autocast that precision means (:func:`autocast`).
- **TF32** (:func:`apply_tf32`): fp32 stays IEEE fp32 on every device (TF32 off for CUDA matmuls and cuDNN
  convolutions; PyTorch's default turns it on for cuDNN), so an fp32 run's numbers do not depend on whether the GPU
  has tensor cores; the speed on a GPU comes from bf16 autocast where it is native. The settings are applied once
  per process and returned as a record (run.json, extraction meta on CUDA: :meth:`DevicePlan.record`).
- **Transfers** (:func:`to_device`): host batches go through pinned memory and are copied ``non_blocking`` on CUDA;
  on the CPU a NumPy array becomes a tensor without a copy (the bytes a CPU run computes are unchanged).
- **Batch sizing** (:func:`batch_for_memory`, pure): a free-memory figure, bytes per item and headroom -> items per
  batch; :func:`activation_bytes` estimates the bytes per item of a network from its activations' shapes (traced
  on the meta device: no memory, no compute).
- **Several GPUs** (:func:`gpu_worker_plan`, pure): one worker per GPU, each seeing only its GPU through
  ``CUDA_VISIBLE_DEVICES`` and offering one ``GPU`` resource (the Dask cluster's worker specs), the CPU cores split
  between them for decoding.
- **DDP** (:func:`ddp_backend`): NCCL between CUDA processes, gloo between CPU ones.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.hardware import Precision, PrecisionChoice, ResolvedPrecision, resolve_precision


class DeviceError(ValueError):
    """A device that cannot be used here, said in one line (what was asked, what is visible, what to do)."""


def cuda_device_count() -> int:
    """CUDA devices this process sees (0 without a driver, a GPU or a CUDA build of torch)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def select_device(requested: str | torch.device | None, *, cuda_devices: int | None = None) -> torch.device:
    """The device to run on: ``requested`` (``cpu``, ``cuda``, ``cuda:N``) checked against what is visible; unset:
    ``cuda`` when a GPU is visible, else ``cpu``. ``cuda_devices`` replaces the visible count (tests).

    Raises :class:`DeviceError` (one line) for a name torch does not know, CUDA where none is visible, or an index
    past the visible GPUs.
    """
    visible = cuda_device_count() if cuda_devices is None else cuda_devices
    if requested is None or str(requested) == "":
        return torch.device("cuda" if visible else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise DeviceError(f"device {str(requested)!r} is not a device name (cpu, cuda or cuda:N)") from exc
    if device.type != "cuda":
        return device
    if visible == 0:
        mask = os.environ.get("CUDA_VISIBLE_DEVICES")
        why = f"CUDA_VISIBLE_DEVICES={mask!r}" if mask is not None else f"torch built for CUDA {torch.version.cuda}"
        if torch.version.cuda is None:
            why = f"this torch ({torch.__version__}) is built without CUDA"
        raise DeviceError(f"device {device} asked for, but no CUDA device is visible ({why}); use device=cpu")
    if device.index is not None and device.index >= visible:
        raise DeviceError(
            f"device {device} asked for, but {visible} CUDA device(s) are visible (cuda:0..{visible - 1})"
        )
    return device


# -- precision and TF32 ----------------------------------------------------------------------------------------------


def autocast_dtype(precision: Precision) -> torch.dtype | None:
    """The autocast dtype of a resolved precision: bfloat16 for ``bf16``, None (no autocast) for ``fp32``."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16 once resolved, got {precision!r}")
    return torch.bfloat16 if precision == "bf16" else None


def autocast(device: torch.device, precision: Precision) -> AbstractContextManager[Any]:
    """bf16 autocast on ``device`` for ``bf16``, nothing for ``fp32``."""
    dtype = autocast_dtype(precision)
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@dataclass(frozen=True)
class Tf32:
    """The fp32 matmul/convolution settings of a process: ``ieee`` (true fp32) or ``tf32`` (10-bit mantissa
    products on tensor cores), for CUDA matmuls and cuDNN convolutions, and torch's float32 matmul precision."""

    cuda_matmul: str
    cudnn_conv: str
    float32_matmul_precision: str

    def record(self) -> dict[str, str]:
        """For run.json and extraction meta: ``{"cuda_matmul": "ieee", "cudnn_conv": "ieee", ...}``."""
        return {
            "cuda_matmul": self.cuda_matmul,
            "cudnn_conv": self.cudnn_conv,
            "float32_matmul_precision": self.float32_matmul_precision,
        }


# fp32 stays fp32: see the module doc. The one place this choice is made.
TF32_OFF = Tf32(cuda_matmul="ieee", cudnn_conv="ieee", float32_matmul_precision="highest")


def _new_tf32_api() -> bool:
    # torch >= 2.9 has per-backend fp32_precision; mixing it with the legacy allow_tf32 flags raises on reading them.
    return hasattr(torch.backends.cuda.matmul, "fp32_precision")


def current_tf32() -> Tf32:
    """This process's settings, read through whichever API this torch has (never both: mixing them raises)."""
    precision = torch.get_float32_matmul_precision()
    if _new_tf32_api():
        matmul = torch.backends.cuda.matmul.fp32_precision
        conv = torch.backends.cudnn.conv.fp32_precision
        # "none" defers to the parent setting; torch's parents default to tf32 for cuDNN and ieee for matmuls.
        matmul = "tf32" if matmul == "none" and precision != "highest" else ("ieee" if matmul == "none" else matmul)
        conv = "tf32" if conv == "none" else conv
        return Tf32(cuda_matmul=matmul, cudnn_conv=conv, float32_matmul_precision=precision)
    return Tf32(
        cuda_matmul="tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee",
        cudnn_conv="tf32" if torch.backends.cudnn.allow_tf32 else "ieee",
        float32_matmul_precision=precision,
    )


def apply_tf32(device: torch.device, settings: Tf32 = TF32_OFF) -> Tf32:
    """Set ``settings`` for this process when ``device`` is CUDA (they act on CUDA kernels only; a CPU process is
    left as it is) and return the settings in force."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision(settings.float32_matmul_precision)
        if _new_tf32_api():
            torch.backends.cuda.matmul.fp32_precision = settings.cuda_matmul
            torch.backends.cudnn.conv.fp32_precision = settings.cudnn_conv
        else:
            torch.backends.cuda.matmul.allow_tf32 = settings.cuda_matmul == "tf32"
            torch.backends.cudnn.allow_tf32 = settings.cudnn_conv == "tf32"
    return current_tf32()


@dataclass(frozen=True)
class DevicePlan:
    """Where a stage computes and how: the device, the resolved precision, the TF32 settings in force."""

    device: torch.device
    precision: ResolvedPrecision
    tf32: Tf32

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def pin_memory(self) -> bool:
        """Host batches go through pinned memory (CUDA only: it is what makes ``non_blocking`` copies asynchronous)."""
        return self.cuda

    def autocast(self) -> AbstractContextManager[Any]:
        return autocast(self.device, self.precision.precision)

    def record(self) -> dict[str, Any]:
        """What shaped the numbers, for run.json / meta: device (and GPU), precision and why, autocast, TF32."""
        out: dict[str, Any] = {
            "device": str(self.device),
            "precision": self.precision.precision,
            "precision_reason": self.precision.reason,
            "autocast": str(autocast_dtype(self.precision.precision)).removeprefix("torch.") if self.bf16 else None,
            "tf32": self.tf32.record(),
            "pin_memory": self.pin_memory,
        }
        if self.cuda:
            out["gpu"] = torch.cuda.get_device_name(self.device)
        return out

    @property
    def bf16(self) -> bool:
        return self.precision.precision == "bf16"


def plan_device(
    requested: str | torch.device | None, precision: PrecisionChoice = "auto", *, cuda_devices: int | None = None
) -> DevicePlan:
    """The plan for ``requested`` (:func:`select_device`) and ``precision`` (:func:`pipeline.hardware.resolve_precision`),
    with TF32 applied on CUDA (:func:`apply_tf32`)."""
    device = select_device(requested, cuda_devices=cuda_devices)
    return DevicePlan(device=device, precision=resolve_precision(precision, str(device)), tf32=apply_tf32(device))


# -- transfers ---------------------------------------------------------------------------------------------------------


def to_device(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host array on ``device``: on CUDA copied into pinned memory and then ``non_blocking`` (the copy overlaps
    whatever the host does next; the caching host allocator keeps the pinned block until the copy is done); on the
    CPU a NumPy array is wrapped without a copy."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if device.type == "cuda":
        if t.device.type == "cpu" and not t.is_pinned():
            t = t.pin_memory()
        return t.to(device, non_blocking=True)
    return t.to(device)


# -- batch sizing --------------------------------------------------------------------------------------------------------


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def batch_for_memory(
    free_bytes: int,
    item_bytes: int,
    *,
    headroom: float = 0.2,
    fixed_bytes: int = 0,
    cap: int | None = None,
    multiple: int = 1,
) -> int:
    """Items per batch that fit: ``(free_bytes · (1 - headroom) - fixed_bytes) // item_bytes``, at most ``cap``,
    rounded down to a multiple of ``multiple`` when at least one multiple fits.

    ``headroom``: the share of free memory left alone (allocator fragmentation, cuDNN workspaces, other processes);
    ``fixed_bytes``: what the batch needs whatever its size (weights not yet loaded, buffers). Raises
    :class:`DeviceError` when not even one item fits.
    """
    if item_bytes <= 0:
        raise ValueError(f"item_bytes must be positive, got {item_bytes}")
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom must be in [0, 1), got {headroom}")
    usable = free_bytes * (1 - headroom) - fixed_bytes
    n = int(usable // item_bytes) if usable > 0 else 0
    if cap is not None:
        n = min(n, cap)
    if multiple > 1 and n >= multiple:
        n -= n % multiple
    if n < 1:
        raise DeviceError(
            f"not even one item fits: {_mib(item_bytes)} per item, {_mib(max(usable, 0))} usable of "
            f"{_mib(free_bytes)} free ({headroom:.0%} headroom, {_mib(fixed_bytes)} fixed)"
        )
    return n


def activation_bytes(net: nn.Module, item_shape: Sequence[int], dtype: torch.dtype = torch.float32) -> int:
    """Estimated device bytes one item adds to an inference pass of ``net`` on inputs ``[B, *item_shape]``.

    Traced on the meta device (shapes only; ``net`` is not moved or run): the largest input + output of any leaf
    module, doubled for what lives beside it (a residual block's input held for the skip connection, a
    convolution's workspace). Measured against ``torch.cuda.max_memory_allocated`` this is an upper bound for
    ResNet-style networks; ``batch_for_memory``'s headroom covers the rest.
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    biggest = 0

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal biggest
        tensors = [t for t in (*inputs, output) if isinstance(t, torch.Tensor)]
        biggest = max(biggest, sum(t.numel() for t in tensors))

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        # Weights and input in ``dtype`` (a bf16 runner's weights are bf16; meta kernels check that dtypes agree).
        state = {
            k: torch.empty_like(v, device="meta", dtype=dtype if v.is_floating_point() else v.dtype)
            for k, v in net.state_dict(keep_vars=True).items()
        }
        x = torch.empty((1, *item_shape), device="meta", dtype=dtype)
        with torch.no_grad():
            torch.func.functional_call(net, state, (x,))
    finally:
        for h in handles:
            h.remove()
    return 2 * biggest * itemsize


def cuda_free_bytes(device: torch.device) -> int:
    """Bytes free on a CUDA ``device`` now (``cudaMemGetInfo``), plus what torch's cache holds but does not use."""
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


# -- several GPUs --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuWorker:
    """One worker process of a multi-GPU run: it sees one GPU (as ``cuda:0``) through ``CUDA_VISIBLE_DEVICES``."""

    name: str  # "gpu-0", ...
    gpu: str  # the GPU as the parent's CUDA_VISIBLE_DEVICES names it (an index or a UUID)
    nthreads: int  # CPU threads of this worker: decoding and host work beside its GPU
    env: dict[str, str] = field(default_factory=dict)  # {"CUDA_VISIBLE_DEVICES": gpu}
    resources: dict[str, float] = field(default_factory=dict)  # {"GPU": 1}: Dask worker resources
    device: str = "cuda:0"  # the device inside the worker


def visible_gpus(env: Mapping[str, str] | None = None, count: int | None = None) -> list[str]:
    """The GPUs a parent process may hand out: its ``CUDA_VISIBLE_DEVICES`` entries when set (empty: none), else
    ``0 .. count-1`` (``count`` defaults to torch's visible count)."""
    env = os.environ if env is None else env
    mask = env.get("CUDA_VISIBLE_DEVICES")
    if mask is not None:
        return [g.strip() for g in mask.split(",") if g.strip()]
    n = cuda_device_count() if count is None else count
    return [str(i) for i in range(n)]


def gpu_worker_plan(gpus: int | Sequence[str], *, cpus: int | None = None) -> list[GpuWorker]:
    """One worker per GPU: ``gpus`` is a count (GPUs ``0 .. n-1``) or the ids to use (:func:`visible_gpus`).

    Worker i gets ``CUDA_VISIBLE_DEVICES=<gpus[i]>`` (so inside it the GPU is ``cuda:0`` and it cannot touch the
    others), the Dask resource ``{"GPU": 1}`` (a task that asks for one GPU runs on one worker at a time) and an
    equal share of ``cpus`` (default: this machine's) as threads, at least one. No GPUs: an empty plan.
    """
    ids = [str(i) for i in range(gpus)] if isinstance(gpus, int) else [str(g) for g in gpus]
    if not ids:
        return []
    total = cpus if cpus is not None else (os.cpu_count() or 1)
    threads = max(1, math.floor(total / len(ids)))
    return [
        GpuWorker(
            name=f"gpu-{i}",
            gpu=gpu,
            nthreads=threads,
            env={"CUDA_VISIBLE_DEVICES": gpu},
            resources={"GPU": 1.0},
        )
        for i, gpu in enumerate(ids)
    ]


# -- DDP and loaders -----------------------------------------------------------------------------------------------------


def ddp_backend(device: torch.device | str) -> str:
    """The process-group backend for ``device``: ``nccl`` between CUDA processes, ``gloo`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def loader_workers_hint(device: torch.device, num_workers: int, cpus: int | None = None, world: int = 1) -> str | None:
    """A line of advice when a CUDA step is likely to wait on its loader (no worker processes while there are CPU
    cores to spare), else None. Advice only: the worker count is part of the sample order (checkpoints record it),
    so it is never changed behind the config's back."""
    if device.type != "cuda" or num_workers > 0:
        return None
    spare = (cpus if cpus is not None else (os.cpu_count() or 1)) // max(world, 1) - 1
    if spare < 1:
        return None
    return (
        f"num_workers=0 on {device}: batches are read in the training process while the GPU waits; "
        f"num_workers={min(spare, 4)} would read them in parallel (pinned memory is on)"
    )


__all__ = [
    "TF32_OFF",
    "DeviceError",
    "DevicePlan",
    "GpuWorker",
    "Tf32",
    "activation_bytes",
    "apply_tf32",
    "autocast",
    "autocast_dtype",
    "batch_for_memory",
    "cuda_device_count",
    "cuda_free_bytes",
    "current_tf32",
    "ddp_backend",
    "gpu_worker_plan",
    "loader_workers_hint",
    "plan_device",
    "select_device",
    "to_device",
    "visible_gpus",
]
