"""CapsuleConfig and the presets (model/config.py, model/presets/*.yaml)."""

from __future__ import annotations

import pytest

from model import CapsuleConfig, available_presets, build_model, load_preset


def test_shipped_presets_load_and_validate() -> None:
    assert {"demo", "paper", "paper-c64-d16"} <= set(available_presets())
    for name in available_presets():
        raw = load_preset(name)
        assert set(raw) >= {"model", "train"} and isinstance(raw["train"], dict)
        CapsuleConfig.model_validate(raw["model"])
    c64 = CapsuleConfig.from_preset("paper-c64-d16")
    assert (c64.num_capsules, c64.d1, c64.d2) == (64, 16, 16)


def test_unknown_preset_lists_the_available_ones() -> None:
    with pytest.raises(KeyError, match=r"unknown preset 'papr'.*demo.*paper"):
        load_preset("papr")


def test_preset_from_a_path_and_bad_files(tmp_path) -> None:
    good = tmp_path / "mine.yaml"
    good.write_text("model:\n  num_capsules: 8\n  d1: 8\n  d2: 8\n  heads: 2\n")
    assert CapsuleConfig.from_preset(good).num_capsules == 8
    assert load_preset(str(good))["train"] == {}
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*'model:'"):
        load_preset(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  num_capsule: 8\n")
    with pytest.raises(ValueError, match=r"typo\.yaml"):
        CapsuleConfig.from_preset(typo)


def test_fingerprint_follows_architecture_fields() -> None:
    demo = CapsuleConfig.from_preset("demo")
    assert demo.fingerprint() == CapsuleConfig.from_preset("demo").fingerprint()
    assert demo.with_updates({"routing": "dynamic"}).fingerprint() != demo.fingerprint()
    assert demo.with_updates({"audio_widths": [32, 64, 128, 512]}).fingerprint() != demo.fingerprint()


def test_demo_preset_is_small() -> None:
    net = build_model(CapsuleConfig.from_preset("demo"))
    n = sum(p.numel() for p in net.parameters())
    assert n < 10_000_000, n
