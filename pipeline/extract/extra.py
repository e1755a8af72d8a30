"""The extra streams of an :class:`~pipeline.extract.extractor.Extractor` (``ExtractConfig.streams``): CLIP, timm,
S3D, VGGish (:mod:`pipeline.extract.registry`).

Frame and clip streams are decoded by the extractor's one ffmpeg beside ``rgb2d``/``rgb3d`` (a :class:`FrameSpec`
each: the model's fps, short side at its resize size, centre-cropped by ffmpeg when the crop equals it); their
chunks go through the stream's network as they arrive. A clip stream cuts its frames into windows across chunks
(:class:`~pipeline.extract.frame_models.Windows`). An audio stream decodes the audio itself (16 kHz mono) and runs
on its log-mel patches. Networks are built on first need, before any frame is decoded, through the extractor's
:class:`~pipeline.extract.runner.NetRunner` (device, precision, BatchNorm folding, compile); rows are
L2-normalised and stored as float16 like the paper's visual streams.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pipeline.extract.ffmpeg import FrameSpec, VideoInfo, decode_audio
from pipeline.extract.frame_models import (
    Windows,
    build_stream,
    check_weights_file,
    clip_input,
    normalise_frames,
)
from pipeline.extract.registry import StreamConfig
from pipeline.extract.runner import NetRunner
from pipeline.extract.stream_weights import StreamModel
from pipeline.extract.vggish import HOP, PATCH, SAMPLE_RATE, log_mel_examples
from storage.features import StreamArrays


class Extractor(Protocol):
    """What these streams use of :class:`pipeline.extract.extractor.Extractor` (named here, not imported: that
    module imports this one)."""

    device: torch.device
    cfg: Any
    ffmpeg: Any
    _weights: dict[str, str]
    _dims: dict[str, int]

    def _runner(self, backbone: Any, memory_format: torch.memory_format, max_batch: int) -> NetRunner: ...

    def _rows(self, runner: NetRunner, x: torch.Tensor) -> np.ndarray: ...


_FORMATS = {"frame": torch.channels_last, "clip": torch.channels_last_3d, "audio": torch.contiguous_format}


class ExtraStreams:
    """The extra streams of one extractor: their networks (built once) and per-video window state."""

    def __init__(self, streams: dict[str, StreamConfig], seed: int) -> None:
        self.cfgs = dict(streams)
        self.seed = seed
        self._built: dict[str, tuple[StreamModel, NetRunner]] = {}
        self._windows: dict[str, Windows] = {}
        for cfg in self.cfgs.values():  # a wrong weights file fails here, before any video is decoded
            check_weights_file(cfg)

    @property
    def frame_names(self) -> set[str]:
        """The streams decoded from frames (frame and clip models)."""
        return {n for n, c in self.cfgs.items() if c.spec.kind != "audio"}

    @property
    def audio_names(self) -> set[str]:
        return {n for n, c in self.cfgs.items() if c.spec.kind == "audio"}

    def describe(self, name: str) -> dict[str, Any]:
        """What stream ``name``'s rows stand for in time (its entry's meta, hence the dataset sample's
        ``meta.json``): backbone, ``fps``, ``window`` and ``stride`` in frames, ``rate`` (rows per second: what
        pooling a time span reads, :mod:`pipeline.embed.pooling`) and ``window_s`` (seconds one row covers)."""
        cfg = self.cfgs[name]
        if cfg.spec.kind == "audio":  # VGGish: a row per 96-frame log-mel patch (10 ms hop), patches every 96 frames
            fps, window, stride = SAMPLE_RATE / HOP, PATCH, PATCH
        else:
            fps, window, stride = cfg.resolved()
        return {"backbone": cfg.backbone, "model": cfg.model, "kind": cfg.spec.kind, "fps": float(fps),
                "window": int(window), "stride": int(stride), "rate": fps / stride, "window_s": window / fps}  # fmt: skip

    def model(self, ex: Extractor, name: str) -> tuple[StreamModel, NetRunner]:
        """Stream ``name``'s network and runner, built on first call (weights loaded strictly, or refused)."""
        if name not in self._built:
            cfg = self.cfgs[name]
            model = build_stream(cfg, seed=self.seed)
            runner = ex._runner(model, _FORMATS[model.kind], cfg.batch_size)  # type: ignore[arg-type]
            ex._weights[name], ex._dims[name] = model.weights_id, model.dim
            self._built[name] = (model, runner)
        return self._built[name]

    # -- frame and clip streams ----------------------------------------------------------------------------------
    def begin(self, ex: Extractor, want: set[str], nets: dict[str, Callable]) -> dict[str, FrameSpec]:
        """Build the wanted frame streams' networks, put their chunk → rows functions in ``nets``; their specs."""
        specs = {}
        for name in sorted(want & self.frame_names):
            cfg = self.cfgs[name]
            model, _ = self.model(ex, name)
            fps, window, stride = cfg.resolved()
            crop = model.resize == model.crop  # ffmpeg's centre crop already gives the model's input
            if model.kind == "frame":
                specs[name] = FrameSpec(fps=fps, size=model.resize, crop=crop, chunk_frames=cfg.batch_size)
                nets[name] = functools.partial(self.frame_rows, ex, name)
            else:
                self._windows[name] = Windows(window, stride)
                specs[name] = FrameSpec(fps=fps, size=model.resize, crop=crop, chunk_frames=stride * cfg.batch_size)
                nets[name] = functools.partial(self._clip_chunk, ex, name)
        return specs

    def frame_rows(self, ex: Extractor, name: str, frames: np.ndarray) -> np.ndarray:
        """uint8 frames ``[n, H, W, 3]`` (short side at the model's resize) → float16 ``[n, dim]``."""
        model, runner = self.model(ex, name)
        if len(frames) == 0:
            return np.zeros((0, model.dim), np.float16)
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(ex.device)
        return ex._rows(runner, normalise_frames(x, model))

    def window_rows(self, ex: Extractor, name: str, windows: np.ndarray) -> np.ndarray:
        """uint8 windows ``[k, T, H, W, 3]`` → float16 ``[k, dim]``."""
        model, runner = self.model(ex, name)
        if len(windows) == 0:
            return np.zeros((0, model.dim), np.float16)
        x = torch.from_numpy(np.ascontiguousarray(windows)).to(ex.device)
        return ex._rows(runner, clip_input(x, model))

    def _clip_chunk(self, ex: Extractor, name: str, frames: np.ndarray) -> np.ndarray:
        return self.window_rows(ex, name, self._windows[name].push(frames))

    def finish(self, ex: Extractor, rows: dict[str, list[np.ndarray]]) -> None:
        """Append each clip stream's last windows (those running past the end) to ``rows``; reset for the next video."""
        windows, self._windows = self._windows, {}
        for name, cutter in windows.items():
            tail = cutter.finish()
            if len(tail):
                rows[name].append(self.window_rows(ex, name, tail))

    # -- audio streams -------------------------------------------------------------------------------------------
    def audio_streams(
        self, ex: Extractor, path: str, info: VideoInfo, want: set[str], visual: dict[str, Any]
    ) -> dict[str, StreamArrays]:
        """The wanted audio streams of one video (no audio stream: zero rows)."""
        names = sorted(want & self.audio_names)
        if not names:
            return {}
        cfg = ex.cfg
        examples = np.zeros((0, 96, 64), np.float32)
        if info.has_audio:
            with tempfile.TemporaryDirectory(prefix="mmcaps-vggish-") as tmp:
                raw = Path(tmp) / "audio.f32"
                n = decode_audio(
                    path,
                    raw,
                    sample_rate=SAMPLE_RATE,
                    timeout_s=cfg.timeout_s + info.duration_s / 10,
                    max_seconds=cfg.max_seconds,
                    exe=ex.ffmpeg.path,
                )
                wave = np.fromfile(raw, dtype="<f4", count=n) if n else np.zeros(0, np.float32)
                examples = log_mel_examples(wave)
        out = {}
        for name in names:
            model, runner = self.model(ex, name)
            parts = [np.zeros((0, model.dim), np.float16)]
            for i in range(0, len(examples), self.cfgs[name].batch_size):
                x = torch.from_numpy(examples[i : i + self.cfgs[name].batch_size][:, None]).to(ex.device)
                parts.append(ex._rows(runner, x))
            arr = np.concatenate(parts)
            out[name] = StreamArrays(
                arr, {**visual, "weights": model.weights_id, "rows": len(arr), **self.describe(name)}
            )
        return out
