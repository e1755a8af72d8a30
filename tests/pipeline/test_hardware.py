"""The precision resolver: bf16 exactly where the CPU (as oneDNN, ATen and the environment report it) has it
natively; the resolved value, not the word ``auto``, is what configs fingerprint and extraction records."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

import pipeline.hardware as hardware
from pipeline.extract import ExtractConfig
from pipeline.hardware import (
    CpuCapabilities,
    CpuCore,
    Gemm,
    cpu_clock_ghz,
    cpu_core,
    fma_peak_gflops,
    peak_sweep,
    resolve_precision,
    time_gemm,
)
from pipeline.train import TrainConfig


def caps(**kw) -> CpuCapabilities:
    base = {"aten": "AVX512", "avx512_bf16": True, "amx": False, "onednn_bf16": True, "onednn_max_isa": None}
    return CpuCapabilities(**{**base, **kw})


CASES = [
    # (capabilities, native): the silicon, oneDNN's own check, an ISA cap, ATen's capability
    (caps(), True),  # AVX-512 BF16 (Zen 4, Cooper Lake)
    (caps(avx512_bf16=False, amx=True), True),  # AMX (Sapphire Rapids)
    (caps(avx512_bf16=False), False),  # AVX-512 without BF16 (Skylake-X): oneDNN emulates bf16
    (caps(aten="AVX2", avx512_bf16=False, onednn_bf16=False), False),  # AVX2-only EPYC
    (caps(onednn_bf16=False), False),
    (caps(onednn_max_isa="AVX2"), False),  # ONEDNN_MAX_CPU_ISA=AVX2 on an AVX-512 BF16 machine
    (caps(onednn_max_isa="AVX512_CORE"), False),
    (caps(onednn_max_isa="AVX512_CORE_VNNI"), False),
    (caps(onednn_max_isa="AVX512_CORE_BF16"), True),
    (caps(amx=True, onednn_max_isa="AVX512_CORE_AMX"), True),
    (caps(onednn_max_isa="ALL"), True),
    (caps(onednn_max_isa="SOMETHING_NEW"), False),
    (caps(aten="AVX2"), False),  # ATEN_CPU_CAPABILITY=avx2: ATen's own bf16 kernels are emulated
    (caps(aten="DEFAULT"), False),
]


@pytest.mark.parametrize(("capabilities", "native"), CASES)
def test_auto_is_bf16_only_where_native(capabilities, native):
    assert capabilities.native_bf16 is native
    got = resolve_precision("auto", "cpu", capabilities)
    assert got.precision == ("bf16" if native else "fp32")
    assert got.native_bf16 is native and got.requested == "auto" and got.device == "cpu"
    assert capabilities.describe() in got.line()


@pytest.mark.parametrize(("capabilities", "native"), CASES)
def test_explicit_choices_are_kept_and_emulated_bf16_warns_once(capabilities, native, caplog, monkeypatch):
    monkeypatch.setattr(hardware, "_WARNED", set())
    assert resolve_precision("fp32", "cpu", capabilities).precision == "fp32"
    with caplog.at_level(logging.WARNING, logger="pipeline.hardware"):
        assert resolve_precision("bf16", "cpu", capabilities).precision == "bf16"
        assert resolve_precision("bf16", "cpu", capabilities).precision == "bf16"
    warnings = [r for r in caplog.records if "emulated" in r.getMessage()]
    assert len(warnings) == (0 if native else 1)
    if warnings:
        assert "slower than fp32" in warnings[0].getMessage()


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="auto, fp32 or bf16"):
        resolve_precision("fp16", "cpu", caps())  # type: ignore[arg-type]


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("config", [ExtractConfig, TrainConfig])
def test_fingerprint_holds_the_resolved_precision(config, native, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_capabilities", lambda: caps(avx512_bf16=native, onednn_bf16=native))
    auto = config(device="cpu")
    resolved = "bf16" if native else "fp32"
    assert auto.resolve_precision().precision == resolved
    assert auto.resolved().precision == resolved
    assert auto.fingerprint() == config(device="cpu", precision=resolved).fingerprint()
    other = "fp32" if native else "bf16"
    assert auto.fingerprint() != config(device="cpu", precision=other).fingerprint()


def test_environment_caps_take_effect_in_a_fresh_process():
    """ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 make any CPU resolve auto to fp32 (how AVX2-only machines
    are imitated on AMX ones)."""
    code = "from pipeline.hardware import resolve_precision as r; print(r('auto', 'cpu').line())"
    env = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.startswith("precision fp32 (auto on cpu: ATen AVX2") and "oneDNN capped at AVX2" in out


# -- the compute limit ------------------------------------------------------------------------------------------------

ZEN4 = CpuCore("AuthenticAMD", 25, 17, "AVX512", amx=False, native_bf16=True)


@pytest.mark.parametrize(
    ("core", "per_cycle", "bf16"),
    [(ZEN4, 32, 2),  # AVX-512 on two 256-bit FMA units
     (CpuCore("AuthenticAMD", 26, 2, "AVX512", native_bf16=True), 64, 2),  # Zen 5: 512-bit units
     (CpuCore("GenuineIntel", 6, 143, "AVX512", amx=True, native_bf16=True), 64, 16),  # Sapphire Rapids, AMX
     (CpuCore("GenuineIntel", 6, 85, "AVX512"), 64, 1),  # Skylake-X: bf16 emulated
     (CpuCore("GenuineIntel", 6, 158, "AVX2"), 32, 1),
     (CpuCore("AuthenticAMD", 23, 1, "AVX2"), 16, 1),  # Zen 1: 128-bit halves
     (CpuCore("AuthenticAMD", 23, 49, "AVX2"), 32, 1),  # Zen 2
     (CpuCore("ARM", 0, 0, "DEFAULT"), None, 1)],
)  # fmt: skip
def test_fma_units_lanes_and_bf16_by_isa(core, per_cycle, bf16):
    assert core.fp32_flops_per_cycle() == per_cycle and core.bf16_factor() == bf16
    peak = fma_peak_gflops(core, 2, 3.7)
    assert peak == (None if per_cycle is None else pytest.approx(2 * per_cycle * 3.7))
    if peak is not None:
        assert fma_peak_gflops(core, 2, 3.7, "bf16") == pytest.approx(peak * bf16)
    assert fma_peak_gflops(core, 2, None) is None


def test_clock_and_this_core_are_read():
    ghz, source = cpu_clock_ghz()
    assert (ghz is None) == (source == "no clock found") and (ghz is None or 0.2 < ghz < 10)
    assert cpu_core().aten == hardware.cpu_capabilities().aten


def test_peak_sweep_is_a_limit_for_every_gemm_it_measured():
    """Tiny shapes: the best is at least every row (one-thread rows scaled by the threads), the limit at least the
    best and the FMA peak, and no row's fraction of the limit exceeds 1."""
    gemms = (Gemm(64, 64, 64), Gemm(96, 32, 64), Gemm(49, 32, 32, "conv1x1"))
    sweep = peak_sweep("fp32", gemms)
    threads = hardware.intra_op_threads()
    assert len(sweep.rows) == len(gemms) * (2 if threads > 1 else 1)
    for row in sweep.rows:
        assert row["gflops"] > 0 and row["gflops_all_threads"] == row["gflops"] * (
            threads if row["threads"] == 1 else 1
        )
        assert sweep.best_gflops >= row["gflops_all_threads"] and sweep.fraction(row["gflops_all_threads"]) <= 1
    assert (
        sweep.limit_gflops == max(sweep.best_gflops, sweep.fma_gflops or 0) and sweep.fraction(sweep.best_gflops) <= 1
    )
    record = sweep.record()
    assert record["limit_gflops"] == sweep.limit_gflops and record["rows"] == sweep.rows
    if sweep.fma_gflops is not None:
        assert "GHz" in sweep.fma_note and "implies" in sweep.fma_note
    with pytest.raises(ValueError, match="unknown GEMM library"):
        time_gemm(Gemm(8, 8, 8, "einsum"))


def test_a_spent_budget_stops_the_sweep_after_one_gemm():
    sweep = peak_sweep("fp32", (Gemm(32, 32, 32), Gemm(48, 48, 48)), single_thread=False, budget_s=0.0)
    assert [r["gemm"] for r in sweep.rows] == ["mm 32x32x32"]
