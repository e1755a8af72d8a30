"""The config base: fingerprints are stable across processes and sensitive to every result-changing field."""

import subprocess
import sys
import textwrap

import pytest
from pydantic import ValidationError

from model.fingerprint import FingerprintedConfig, runtime_field


class Inner(FingerprintedConfig):
    size: int = 224
    weights: str = "random"


class Outer(FingerprintedConfig):
    fps: float = 1.0
    name: str = "resnet152"
    inner: Inner = Inner()
    tags: list[str] = ["a", "b"]
    batch_size: int = runtime_field(32)  # speed only


SOURCE = textwrap.dedent(
    """
    from model.fingerprint import FingerprintedConfig, runtime_field
    class Inner(FingerprintedConfig):
        size: int = 224
        weights: str = "random"
    class Outer(FingerprintedConfig):
        fps: float = 1.0
        name: str = "resnet152"
        inner: Inner = Inner()
        tags: list[str] = ["a", "b"]
        batch_size: int = runtime_field(32)
    print(Outer().fingerprint())
    """
)


def test_fingerprint_is_stable_across_processes():
    here = Outer().fingerprint()
    for seed in ("0", "12345"):  # a different hash seed must not matter
        out = subprocess.run(
            [sys.executable, "-c", SOURCE], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": seed}
        )
        assert out.stdout.strip() == here


def test_fingerprint_is_short_hex():
    fp = Outer().fingerprint()
    assert len(fp) == 12
    int(fp, 16)


@pytest.mark.parametrize(
    "updates",
    [{"fps": 2.0}, {"name": "resnet50"}, {"inner.size": 112}, {"inner.weights": "IMAGENET1K_V1"}, {"tags": ["a"]}],
)
def test_fingerprint_changes_with_each_result_field(updates):
    base = Outer()
    assert base.with_updates(updates).fingerprint() != base.fingerprint()


def test_runtime_fields_do_not_change_fingerprint():
    assert Outer(batch_size=1).fingerprint() == Outer(batch_size=512).fingerprint()


def test_int_and_float_spellings_agree():
    assert Outer(fps=1).fingerprint() == Outer(fps=1.0).fingerprint()


def test_class_name_is_part_of_the_hash():
    class Other(Inner):
        pass

    assert Other().fingerprint() != Inner().fingerprint()


def test_validation_rejects_unknown_and_bad_fields():
    with pytest.raises(ValidationError):
        Outer(unknown=1)
    with pytest.raises(ValidationError):
        Outer(fps="fast")
    with pytest.raises(KeyError, match="no field"):
        Outer().with_updates({"inner.nope": 1})


def test_yaml_round_trip(tmp_path):
    cfg = Outer(fps=2.5, inner=Inner(size=112), batch_size=7)
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    back = Outer.from_yaml(path)
    assert back == cfg
    assert back.fingerprint() == cfg.fingerprint()


def test_updates_and_files_report_bad_values_in_one_plain_line(tmp_path):
    with pytest.raises(ValueError) as exc:
        Outer().with_updates({"fps": "fast"})
    assert str(exc.value).startswith("fps: input should be a valid number") and str(exc.value).endswith("(got 'fast')")
    assert "pydantic.dev" not in str(exc.value) and "\n" not in str(exc.value)
    path = tmp_path / "c.yaml"
    path.write_text("fps: fast\nunknown: 1\n")
    with pytest.raises(
        ValueError, match=r"^fps: input should be a valid number.*\(got 'fast'\); unknown: extra inputs"
    ):
        Outer.from_yaml(path)
