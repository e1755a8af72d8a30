"""Video thumbnails for report figures: one frame grabbed with the ffmpeg binary at a clip's midpoint."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np

from pipeline.extract.ffmpeg import ffmpeg_exe


def grab_frame(path: str | Path | None, t: float, width: int = 160, timeout_s: float = 30.0) -> np.ndarray | None:
    """RGB frame uint8 [H, width, 3] at ``t`` seconds, or None when the file or ffmpeg is unavailable/fails."""
    if path is None or not Path(path).is_file():
        return None
    exe = ffmpeg_exe()
    cmd = [
        exe, "-v", "error", "-ss", f"{max(0.0, t):.3f}", "-i", str(path), "-frames:v", "1",
        "-vf", f"scale={width}:-2", "-f", "image2pipe", "-vcodec", "png", "pipe:1",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 or not proc.stdout:
        return None
    import matplotlib.image  # noqa: PLC0415  deferred: matplotlib

    try:
        img = matplotlib.image.imread(io.BytesIO(proc.stdout), format="png")
    except Exception:  # a truncated PNG from a damaged video
        return None
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    return img[..., :3]


def clip_midpoint(start: float, end: float | None, duration: float | None = None) -> float:
    """The time shown for a clip: its midpoint (whole-video clips: the middle of the video, else 1 s in)."""
    if end is None:
        end = duration
    if end is None:
        return start + 1.0
    return (start + end) / 2.0
