"""Pixels and samples of the synthetic corpus, and the ffmpeg call that muxes them (used by :mod:`.corpus`).

Everything here is a pure function of its arguments: a :class:`SegmentPlan` fixes where the shape is at every
instant, so rendering is deterministic and a test can recompute the shape's centre from the stored plan.

Axis letters: ``n`` frames, ``h`` rows, ``w`` columns, ``c`` RGB channels, ``s`` audio samples.
"""

from __future__ import annotations

import colorsys
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.extract.ffmpeg import ffmpeg_exe

# Sound design: a pitch per colour (carrier), a rhythm per motion (beeps per second; 0 = steady tone) and a
# timbre per shape (relative amplitudes of the 2nd and 3rd harmonics, all below the carrier's, so the spectral
# peak of a segment is always its colour's pitch).
SHAPE_HARMONICS: dict[str, tuple[float, float]] = {
    "circle": (0.0, 0.0),
    "square": (0.0, 0.35),
    "triangle": (0.35, 0.0),
    "cross": (0.25, 0.25),
}
_FADE_S = 0.02  # fade at segment edges so that cuts do not click (a click is broadband energy)


@dataclass(frozen=True)
class SegmentPlan:
    """What one segment shows and sounds like. Positions are fractions: x of the width, y of the height.

    The shape's centre moves linearly from ``(x0, y0)`` at ``start`` to ``(x1, y1)`` at ``end``; its rotation
    goes linearly from ``angle0`` to ``angle1`` (radians). ``size`` is the shape's extent as a fraction of the
    frame height (circle diameter, square side, triangle circumdiameter, cross arm length).
    """

    start: float
    end: float
    shape: str
    rgb: tuple[float, float, float]  # 0..1
    x0: float
    y0: float
    x1: float
    y1: float
    size: float
    angle0: float
    angle1: float
    pitch_hz: float
    rate_hz: float  # beeps per second; 0 = steady tone
    loudness: float  # peak amplitude of the tone, 0..1 of full scale

    def centre_at(self, t: float) -> tuple[float, float]:
        """The shape's centre at time ``t`` (seconds), as fractions (x of width, y of height)."""
        a = min(max((t - self.start) / (self.end - self.start), 0.0), 1.0)
        return self.x0 + (self.x1 - self.x0) * a, self.y0 + (self.y1 - self.y0) * a

    def angle_at(self, t: float) -> float:
        a = min(max((t - self.start) / (self.end - self.start), 0.0), 1.0)
        return self.angle0 + (self.angle1 - self.angle0) * a


def hsv_rgb(hue_deg: float, saturation: float, value: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, saturation, value)
    return float(r), float(g), float(b)


def _signed_distance(shape: str, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    """Approximate signed distance in pixels (negative inside) of a shape centred at the origin.

    ``u, v`` [h, w] are pixel offsets from the centre in the shape's rotated frame; ``radius`` is half the extent.
    """
    if shape == "circle":
        return np.hypot(u, v) - radius
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - radius
    if shape == "triangle":
        # Equilateral, pointing up (v grows downwards), centroid at the origin: intersection of three half-planes
        # whose inward normals are 120 degrees apart; inradius = circumradius / 2. The circumradius is 1.2 x
        # ``radius`` so that a triangle looks about as large as the other shapes of the same size.
        inradius = 1.2 * radius / 2.0
        d = v - inradius  # bottom edge
        for ang in (math.radians(30.0), math.radians(150.0)):
            d = np.maximum(d, -(u * math.cos(ang) + v * math.sin(ang)) - inradius)
        return d
    if shape == "cross":
        half_width = radius * 0.3
        bar_h = np.maximum(np.abs(u) - radius, np.abs(v) - half_width)
        bar_v = np.maximum(np.abs(u) - half_width, np.abs(v) - radius)
        return np.minimum(bar_h, bar_v)
    raise ValueError(f"unknown shape {shape!r}; known: circle, square, triangle, cross")


def render_frames(segments: list[SegmentPlan], *, width: int, height: int, fps: int, background: float) -> np.ndarray:
    """All frames of one video: uint8 [n, h, w, c], frame ``k`` showing time ``k / fps``.

    The background is a plain grey of level ``background`` (0..1); edges are anti-aliased over one pixel.
    """
    duration = segments[-1].end
    n = round(duration * fps)
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)  # (h, w) pixel centres
    bg = np.full(3, background, dtype=np.float32)
    seg_index = 0
    for k in range(n):
        t = k / fps
        while seg_index + 1 < len(segments) and t >= segments[seg_index].end - 1e-9:
            seg_index += 1
        seg = segments[seg_index]
        cx, cy = seg.centre_at(t)
        angle = seg.angle_at(t)
        dx, dy = xs - cx * width, ys - cy * height
        c, s = math.cos(angle), math.sin(angle)
        u, v = c * dx + s * dy, -s * dx + c * dy  # rotate the pixel grid into the shape's frame
        sd = _signed_distance(seg.shape, u, v, seg.size * height / 2.0)
        cover = np.clip(0.5 - sd, 0.0, 1.0)[..., None]  # (h, w, 1) coverage in 0..1
        image = bg * (1.0 - cover) + np.asarray(seg.rgb, dtype=np.float32) * cover
        frames[k] = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return frames


def render_audio(
    segments: list[SegmentPlan], *, sample_rate: int, noise_level: float, rng: np.random.Generator
) -> np.ndarray:
    """Mono samples of one video: int16 [s], ``s = duration * sample_rate``.

    Each segment is its colour's pitch (with its shape's harmonics), amplitude-modulated at its motion's rate by
    a smoothed square wave (beeps), faded in and out at the edges; white noise of ``noise_level`` underneath.
    """
    duration = segments[-1].end
    total = round(duration * sample_rate)
    out = rng.normal(0.0, noise_level, size=total).astype(np.float64)
    fade = max(1, int(_FADE_S * sample_rate))
    for seg in segments:
        a, b = round(seg.start * sample_rate), round(seg.end * sample_rate)
        t = np.arange(b - a) / sample_rate
        h2, h3 = SHAPE_HARMONICS[seg.shape]
        phase = 2.0 * np.pi * seg.pitch_hz * t
        tone = np.sin(phase) + h2 * np.sin(2.0 * phase) + h3 * np.sin(3.0 * phase)
        tone /= 1.0 + h2 + h3
        if seg.rate_hz > 0:
            envelope = 0.5 + 0.5 * np.tanh(6.0 * np.sin(2.0 * np.pi * seg.rate_hz * t))
        else:
            envelope = np.ones_like(t)
        ramp = np.ones_like(t)
        k = min(fade, len(t) // 2)
        ramp[:k] = np.linspace(0.0, 1.0, k, endpoint=False)
        ramp[len(t) - k :] = np.linspace(1.0, 0.0, k, endpoint=False)
        out[a:b] += seg.loudness * tone * envelope * ramp
    return np.clip(np.rint(out * 32767.0), -32768, 32767).astype(np.int16)


def encode_mp4(
    path: Path, frames: np.ndarray, samples: np.ndarray, *, fps: int, sample_rate: int, crf: int, timeout_s: float = 120
) -> None:
    """Write ``frames`` uint8 [n, h, w, 3] and ``samples`` int16 [s] as H.264 (yuv420p) + AAC mono in an mp4.

    Frames go through stdin, samples through a temporary raw PCM file (ffmpeg cannot read two pipes from one
    stdin). The file appears under its final name only when complete. Container metadata is bit-exact (no
    encoder string, no creation time), and x264 is deterministic, so the same inputs give the same bytes.
    """
    _n, height, width, _ = frames.shape
    path = Path(path)
    tmp_video = path.with_name(f".{path.name}.tmp")
    with tempfile.NamedTemporaryFile(suffix=".pcm", dir=path.parent, delete=False) as pcm:
        pcm.write(samples.astype("<i2").tobytes())
        pcm_path = pcm.name
    cmd = [
        ffmpeg_exe(),  # the pinned build: the same corpus bytes on every host
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0",
        "-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", pcm_path,
        "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p", "-g", str(2 * fps),
        "-threads", "1",
        "-c:a", "aac", "-b:a", "48k", "-ar", str(sample_rate), "-ac", "1",
        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
        "-movflags", "+faststart", "-f", "mp4", str(tmp_video),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True, timeout=timeout_s, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{path}: ffmpeg failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace').strip()}"
            )
        os.replace(tmp_video, path)
    finally:
        Path(pcm_path).unlink(missing_ok=True)
        tmp_video.unlink(missing_ok=True)
