"""The precision resolver: bf16 exactly where the CPU (as oneDNN, ATen and the environment report it) has it
natively; the resolved value, not the word ``auto``, is what configs fingerprint and extraction records."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

import pipeline.hardware as hardware
from pipeline.extract import ExtractConfig
from pipeline.hardware import CpuCapabilities, resolve_precision
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
