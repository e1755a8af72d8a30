"""What this machine runs fast: the device to use and the precision ``auto`` resolves to.

bfloat16 is fast only where the hardware multiplies in it: CUDA GPUs of compute capability 8.0 and later, and CPUs
with AVX-512 BF16 or AMX whose kernels are allowed to use them. Elsewhere oneDNN and ATen emulate bf16 and it is
much slower than fp32 (measured on a 2-core AMD EPYC: one ``Conv3d(64, 64, 3)`` on ``[4, 64, 8, 28, 28]`` takes
0.018 s in fp32 and 1.48 s in bf16 with oneDNN capped at AVX2, 0.049 s capped at AVX-512 without BF16, and
0.010 s with AVX-512 BF16). So ``precision: auto`` is bf16 exactly where it is native and fp32 elsewhere.

"Native" is what the libraries will use, not only what the silicon has: ``ONEDNN_MAX_CPU_ISA`` (or
``DNNL_MAX_CPU_ISA``) below ``AVX512_CORE_BF16`` and ``ATEN_CPU_CAPABILITY`` below ``avx512`` switch the fast kernels
off (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` makes an AMX machine behave like an AVX2-only one), and
the resolver honours them. The rule reads flags, never timings, so the same machine and environment always resolve
the same way (the resolved precision is fingerprinted).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

log = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16"]
PrecisionChoice = Literal["auto", "fp32", "bf16"]

# oneDNN's ISA names in increasing order (its dnnl_cpu_isa_t); the first that can do bf16 dot products natively.
_ONEDNN_ISAS = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
    "AVX512_CORE_BF16",
    "AVX10_1_512",
    "AVX512_CORE_FP16",
    "AVX10_1_512_AMX",
    "AVX512_CORE_AMX",
    "AVX10_1_512_AMX_FP16",
    "AVX512_CORE_AMX_FP16",
    "AVX10_2_512",
    "AVX10_2_512_AMX_2",
)
_FIRST_BF16_ISA = _ONEDNN_ISAS.index("AVX512_CORE_BF16")


@dataclass(frozen=True)
class CpuCapabilities:
    """The CPU features that decide whether bf16 is native, as torch, oneDNN and the environment report them."""

    aten: str  # torch.backends.cpu.get_cpu_capability(): "AVX2", "AVX512", "DEFAULT", ... (honours ATEN_CPU_CAPABILITY)
    avx512_bf16: bool  # the silicon has AVX-512 BF16 (cpuinfo; ignores the environment)
    amx: bool  # the silicon has AMX tiles
    onednn_bf16: bool  # oneDNN can run bf16 at all (False when capped at AVX2)
    onednn_max_isa: str | None  # ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA as set, upper case; None: no cap

    @classmethod
    def detect(cls) -> CpuCapabilities:
        """Read this process's capabilities (cheap; torch is imported)."""
        import torch  # noqa: PLC0415  deferred: torch

        cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
        return cls(
            aten=str(torch.backends.cpu.get_cpu_capability()),
            avx512_bf16=bool(torch.cpu._is_avx512_bf16_supported()),
            amx=bool(torch.cpu._is_amx_tile_supported()),
            onednn_bf16=bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()),
            onednn_max_isa=cap.strip().upper() if cap and cap.strip() else None,
        )

    @property
    def onednn_allows_bf16(self) -> bool:
        """False when ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below its first native-bf16 ISA."""
        if self.onednn_max_isa is None or self.onednn_max_isa in ("ALL", "DEFAULT"):
            return True
        if self.onednn_max_isa not in _ONEDNN_ISAS:
            return False  # an ISA name we do not know: do not bet 50x on it
        return _ONEDNN_ISAS.index(self.onednn_max_isa) >= _FIRST_BF16_ISA

    @property
    def native_bf16(self) -> bool:
        """bf16 runs on real bf16 instructions in both oneDNN (convolutions, matmuls) and ATen (everything else)."""
        return (
            (self.avx512_bf16 or self.amx)
            and self.onednn_bf16
            and self.onednn_allows_bf16
            and self.aten.upper().startswith("AVX512")
        )

    def describe(self) -> str:
        """One line for logs and reports: ``ATen AVX512, AVX-512 BF16, no AMX, oneDNN uncapped``."""
        isa = f"oneDNN capped at {self.onednn_max_isa}" if self.onednn_max_isa else "oneDNN uncapped"
        return (
            f"ATen {self.aten}, {'AVX-512 BF16' if self.avx512_bf16 else 'no AVX-512 BF16'}, "
            f"{'AMX' if self.amx else 'no AMX'}, {isa}"
        )


@lru_cache(maxsize=1)
def cpu_capabilities() -> CpuCapabilities:
    """This process's :class:`CpuCapabilities` (read once: the environment variables act at library load)."""
    return CpuCapabilities.detect()


def resolve_device(device: str | None) -> str:
    """``device`` as given, else ``cuda`` when a GPU is visible, else ``cpu``."""
    if device:
        return device
    import torch  # noqa: PLC0415  deferred: torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class ResolvedPrecision:
    """The precision a run uses and why, for the start-of-run line and ``meta.json``."""

    precision: Precision
    requested: PrecisionChoice
    device: str
    reason: str
    native_bf16: bool

    def line(self) -> str:
        """``precision bf16 (auto on cpu: ATen AVX512, AVX-512 BF16, no AMX, oneDNN uncapped)``."""
        return f"precision {self.precision} ({self.requested} on {self.device}: {self.reason})"


def _cuda_native_bf16(device: str) -> tuple[bool, str]:
    import torch  # noqa: PLC0415  deferred: torch

    if not torch.cuda.is_available():
        return False, "no CUDA device visible"
    index = torch.device(device).index
    major, minor = torch.cuda.get_device_capability(index)
    name = torch.cuda.get_device_name(index)
    native = major >= 8  # Ampere and later multiply in bf16; older GPUs emulate it
    return native, f"{name}, compute capability {major}.{minor}"


def resolve_precision(
    requested: PrecisionChoice, device: str | None = None, caps: CpuCapabilities | None = None
) -> ResolvedPrecision:
    """The precision to run in: ``auto`` → bf16 where it is native on ``device``, fp32 elsewhere.

    An explicit choice is kept; ``bf16`` where it is only emulated warns once per process, naming the slowdown.
    ``caps`` replaces the detected CPU capabilities (tests).
    """
    dev = resolve_device(device)
    if dev.startswith("cuda"):
        native, why = _cuda_native_bf16(dev)
    elif dev == "cpu":
        cpu = caps or cpu_capabilities()
        native, why = cpu.native_bf16, cpu.describe()
    else:  # mps and others: bf16 support varies by OS version; fp32 is the safe default
        native, why = False, f"bf16 not known to be native on {dev}"
    if requested == "auto":
        chosen: Precision = "bf16" if native else "fp32"
    elif requested in ("fp32", "bf16"):
        chosen = requested
    else:
        raise ValueError(f"precision must be auto, fp32 or bf16, got {requested!r}")
    if chosen == "bf16" and not native:
        _warn_emulated(dev, why)
    return ResolvedPrecision(precision=chosen, requested=requested, device=dev, reason=why, native_bf16=native)


_WARNED: set[str] = set()


def _warn_emulated(device: str, why: str) -> None:
    if device in _WARNED:
        return
    _WARNED.add(device)
    log.warning(
        "precision bf16 on %s (%s): bf16 is emulated here, typically 2-80x slower than fp32 "
        "(a Conv3d measured 81x slower with oneDNN at AVX2); use precision=auto or fp32",
        device,
        why,
    )


class ResolvesPrecision:
    """For configs with a ``precision`` (auto | fp32 | bf16) and a ``device`` field (mix in before the base).

    The fingerprint holds the resolved precision, so ``auto`` and the value it resolves to name the same results
    on a host, and a run on another kind of host that resolves differently gets its own fingerprint.
    """

    precision: PrecisionChoice
    device: str | None

    def resolve_precision(self) -> ResolvedPrecision:
        """The precision this config runs in on this host, and why."""
        return resolve_precision(self.precision, self.device)

    def resolved(self):  # -> Self
        """This config with ``precision`` made concrete for this host (what a run records and hands to workers)."""
        if self.precision != "auto":
            return self
        return self.model_copy(update={"precision": self.resolve_precision().precision})  # type: ignore[attr-defined]

    def fingerprint_payload(self) -> dict:
        out = super().fingerprint_payload()  # type: ignore[misc]
        out["precision"] = self.resolve_precision().precision if self.precision == "auto" else self.precision
        return out


__all__ = [
    "CpuCapabilities",
    "Precision",
    "PrecisionChoice",
    "ResolvedPrecision",
    "ResolvesPrecision",
    "cpu_capabilities",
    "resolve_device",
    "resolve_precision",
]


def intra_op_threads() -> int:
    """torch's configured intra-op thread count, as a fresh thread sees it.

    The calling thread's own count can differ: a library that calls ``omp_set_num_threads`` (faiss does) changes it
    for that thread alone, through the OpenMP runtime torch shares."""

    import torch  # noqa: PLC0415  deferred: torch

    seen: list[int] = []
    probe = threading.Thread(target=lambda: seen.append(torch.get_num_threads()), name="mmcaps-threads")
    probe.start()
    probe.join()
    return seen[0]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads in this thread, then restore torch's configured count.

    Network outputs depend on it in the last bits (oneDNN splits reductions by thread count), so whatever computes
    features sets it instead of inheriting the calling thread's state."""
    import torch  # noqa: PLC0415  deferred: torch

    before = intra_op_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
