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
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

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
    "CPU_SWEEP",
    "CUDA_SWEEP",
    "CpuCapabilities",
    "CpuCore",
    "Gemm",
    "PeakSweep",
    "Precision",
    "PrecisionChoice",
    "ResolvedPrecision",
    "ResolvesPrecision",
    "cpu_capabilities",
    "cpu_clock_ghz",
    "cpu_core",
    "fma_peak_gflops",
    "peak_sweep",
    "resolve_device",
    "resolve_precision",
    "time_gemm",
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


# -- the compute limit: the ISA's FMA peak and a GEMM sweep ------------------------------------------------------------
#
# "% of the limit" means something only if the limit is one: a single 2048^3 matmul under-measures a machine (one
# shape, one library, one moment of a shared machine), and a network measured at another moment then shows 172 % of
# it. The limit used here is the larger of the ISA's FMA peak at the clock read and the best GEMM of a sweep over
# shapes, libraries and thread settings; each is reported, and nothing a GEMM measured can exceed it.


@dataclass(frozen=True)
class CpuCore:
    """What one core multiplies per cycle, from the vendor, the CPU family and the vector ISA ATen uses."""

    vendor: str  # "AuthenticAMD", "GenuineIntel", ...
    family: int
    model: int
    aten: str  # ATen's capability: AVX512, AVX2, DEFAULT, ...
    amx: bool = False
    native_bf16: bool = False

    def fp32_flops_per_cycle(self) -> int | None:
        """FMA units x fp32 lanes x 2, or None where the ISA is not one this table knows (then no FMA peak).

        AVX-512: Intel's server cores have two 512-bit FMA units; AMD Zen 4 (family 25) runs 512-bit FMAs on two
        256-bit units (the same 32 FLOP/cycle as AVX2), Zen 5 (family 26) on two 512-bit units. AVX2: two 256-bit FMA
        units (Haswell and later, Zen 2 and later); Zen 1 (family 23, model < 0x30) splits them into 128-bit halves.
        A one-FMA-unit Xeon is counted at two: its fraction reads low, never above 100 %.
        """
        amd = self.vendor == "AuthenticAMD"
        isa = self.aten.upper()
        if isa.startswith("AVX512"):
            lanes = 8 if amd and self.family <= 25 else 16
        elif isa.startswith("AVX2"):
            lanes = 4 if amd and self.family == 23 and self.model < 0x30 else 8
        else:
            return None
        return 2 * lanes * 2

    def bf16_factor(self) -> int:
        """bf16 FLOPs per fp32 FLOP of the same unit: AMX tiles 16x (1024 vs 64 per cycle on Sapphire Rapids),
        AVX-512 BF16 dot products 2x (two products per fp32 lane), 1 where bf16 is emulated."""
        if not self.native_bf16:
            return 1
        return 16 if self.amx else 2


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo, and ``max_mhz``: the highest ``cpu MHz`` of any processor."""
    out: dict[str, str] = {}
    mhz: list[float] = []
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "cpu MHz":
                mhz.append(float(value))
            out.setdefault(key, value)
    if mhz:
        out["max_mhz"] = str(max(mhz))
    return out


def cpu_clock_ghz() -> tuple[float | None, str]:
    """(GHz, where it was read): cpufreq's highest ``cpuinfo_max_freq`` (the boost clock, bare metal), else the
    highest ``cpu MHz`` in /proc/cpuinfo (under a hypervisor: the nominal clock, often below the running one)."""
    freqs = []
    for path in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/cpuinfo_max_freq"):
        with contextlib.suppress(OSError, ValueError):
            freqs.append(int(path.read_text().strip()))
    if freqs:
        return max(freqs) / 1e6, "cpufreq cpuinfo_max_freq"
    info = _cpuinfo()
    if "max_mhz" in info:
        return float(info["max_mhz"]) / 1e3, "/proc/cpuinfo cpu MHz"
    return None, "no clock found"


def cpu_core() -> CpuCore:
    """This machine's :class:`CpuCore` (the ISA as this process's ATen and oneDNN will use it)."""
    info, caps = _cpuinfo(), cpu_capabilities()
    return CpuCore(
        vendor=info.get("vendor_id", ""),
        family=int(info.get("cpu family", "0") or 0),
        model=int(info.get("model", "0") or 0),
        aten=caps.aten,
        amx=caps.amx,
        native_bf16=caps.native_bf16,
    )


def fma_peak_gflops(core: CpuCore, cores: int, ghz: float | None, precision: Precision = "fp32") -> float | None:
    """cores x FMA units x lanes x 2 x GHz (x the bf16 factor), or None when the ISA or the clock is unknown."""
    per_cycle = core.fp32_flops_per_cycle()
    if per_cycle is None or ghz is None:
        return None
    return cores * per_cycle * ghz * (core.bf16_factor() if precision == "bf16" else 1)


@dataclass(frozen=True)
class Gemm:
    """One GEMM of a sweep: ``m x k @ k x n`` through ``library`` (``mm``: torch.mm, BLAS on the CPU, cuBLAS on CUDA;
    ``conv1x1``: a 1x1 channels-last convolution, oneDNN's GEMM on the CPU) with ``threads`` intra-op threads."""

    m: int
    n: int
    k: int
    library: str = "mm"
    threads: int = 0  # 0: this process's count

    def label(self) -> str:
        return f"{self.library} {self.m}x{self.n}x{self.k}" + (f" {self.threads} thread(s)" if self.threads else "")


def _gemm_call(g: Gemm, dtype: Any, device: Any) -> Callable[[], Any]:
    import torch  # noqa: PLC0415  deferred: torch

    if g.library == "mm":
        a = torch.randn(g.m, g.k, device=device).to(dtype)
        b = torch.randn(g.k, g.n, device=device).to(dtype)
        return lambda: torch.mm(a, b)
    if g.library != "conv1x1":
        raise ValueError(f"unknown GEMM library {g.library!r} (mm or conv1x1)")
    side = max(1, math.isqrt(g.m))  # m = batch x H x W: one image of side x side, m rounded to a square
    conv = torch.nn.Conv2d(g.k, g.n, 1, bias=False).to(device=device, dtype=dtype, memory_format=torch.channels_last)
    x = torch.randn(1, g.k, side, side, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    return lambda: conv(x)


def time_gemm(g: Gemm, precision: Precision = "fp32", device: str = "cpu", repeats: int = 3) -> float:
    """Best-of-``repeats`` GFLOP/s of ``g`` (after one untimed call: kernel selection, page faults)."""
    import torch  # noqa: PLC0415  deferred: torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    flops = 2 * g.m * g.n * g.k
    if g.library == "conv1x1":
        flops = 2 * math.isqrt(g.m) ** 2 * g.n * g.k
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch_threads(g.threads or intra_op_threads()), torch.inference_mode():
        call = _gemm_call(g, dtype, device)
        call()
        best = math.inf
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            call()
            sync()
            best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


CPU_SWEEP = (Gemm(2048, 2048, 2048), Gemm(1024, 1024, 1024), Gemm(4096, 512, 1024), Gemm(3136, 256, 256, "conv1x1"),
             Gemm(784, 1024, 1024, "conv1x1"))  # fmt: skip
CUDA_SWEEP = (Gemm(8192, 8192, 8192), Gemm(4096, 4096, 4096), Gemm(16384, 4096, 4096), Gemm(3136, 1024, 1024))


@dataclass
class PeakSweep:
    """A GEMM sweep's rows and the limit they give with the ISA's FMA peak (``fma_gflops``; None: unknown)."""

    precision: str
    rows: list[dict[str, Any]]
    fma_gflops: float | None = None
    fma_note: str = ""

    @property
    def best_gflops(self) -> float:
        """The best GFLOP/s of any row (a one-thread row counts times the threads it stands for)."""
        return max(r["gflops_all_threads"] for r in self.rows)

    @property
    def limit_gflops(self) -> float:
        """The larger of the FMA peak and the sweep's best: what no measured GEMM can exceed."""
        return max(self.best_gflops, self.fma_gflops or 0.0)

    def fraction(self, gflops: float) -> float:
        """``gflops`` as a share of :attr:`limit_gflops`."""
        return gflops / self.limit_gflops

    def record(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "rows": self.rows,
            "best_gflops": self.best_gflops,
            "fma_gflops": self.fma_gflops,
            "fma_note": self.fma_note,
            "limit_gflops": self.limit_gflops,
        }


def peak_sweep(
    precision: Precision = "fp32",
    gemms: Sequence[Gemm] = CPU_SWEEP,
    device: str = "cpu",
    *,
    single_thread: bool = True,
    budget_s: float = math.inf,
) -> PeakSweep:
    """GFLOP/s of every GEMM in ``gemms`` with this process's threads and (``single_thread``, CPU) with one thread
    scaled by the thread count (what every core does when the others are not disturbed: on a shared machine the
    all-thread run is the first to suffer); stops starting GEMMs once ``budget_s`` is spent. On the CPU the ISA's
    FMA peak at the clock read is computed beside it."""
    start, threads = time.perf_counter(), intra_op_threads()
    cpu = device == "cpu"
    settings = [0, 1] if cpu and single_thread and threads > 1 else [0]
    rows = []
    for g in gemms:
        for t in settings:
            if rows and time.perf_counter() - start > budget_s:
                break
            gemm = Gemm(g.m, g.n, g.k, g.library, t)
            gflops = time_gemm(gemm, precision, device)
            scale = threads if t == 1 else 1
            rows.append(
                {"gemm": gemm.label(), "threads": t or threads, "gflops": gflops, "gflops_all_threads": gflops * scale}
            )
    sweep = PeakSweep(precision=precision, rows=rows)
    if cpu:
        core, (ghz, source) = cpu_core(), cpu_clock_ghz()
        sweep.fma_gflops = fma_peak_gflops(core, threads, ghz, precision)
        per_cycle = core.fp32_flops_per_cycle()
        if sweep.fma_gflops is None:
            sweep.fma_note = f"no FMA peak: {'clock unknown' if ghz is None else f'ISA {core.aten} not in the table'}"
        else:
            implied = sweep.best_gflops / (threads * per_cycle * (core.bf16_factor() if precision == "bf16" else 1))
            sweep.fma_note = (
                f"{threads} core(s) x {per_cycle} FLOP/cycle ({core.aten}"
                + (f", bf16 x{core.bf16_factor()}" if precision == "bf16" else "")
                + f") x {ghz:.2f} GHz ({source}); the best GEMM implies {implied:.2f} GHz"
            )
    return sweep
