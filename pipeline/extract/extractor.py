"""One video (and its captions) → :class:`storage.sample.VideoFeatures`.

One ffmpeg process decodes the video once into both frame streams (its ``split`` filter: 2D frames at 1 fps,
short side 224; 3D frames at 24 fps, 112 centre crop), another decodes the audio (16 kHz mono into a
memory-mapped temporary file). The two frame streams are read by threads into one bounded queue, and each chunk
goes to its network as soon as it is decoded, so decoding overlaps compute, neither network waits for the other
stream's decoder, and memory is bounded by ``2 * queue_chunks`` chunks whatever the video's length; the log-mel
spectrogram is computed in another thread meanwhile. Networks run on CUDA when present, with BatchNorm folded
into the convolutions, channels-last, in fp32 or bfloat16 (``precision``: ``auto`` is bf16 only where the device
has it natively, :mod:`pipeline.hardware`), and optionally compiled: see :mod:`pipeline.extract.runner`. Decoding
uses the ffmpeg the config names (the pinned imageio-ffmpeg build by default); its version is recorded.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.extract.audio import log_mel
from pipeline.extract.backbones import build_2d, build_3d
from pipeline.extract.config import ExtractConfig
from pipeline.extract.errors import ExtractError
from pipeline.extract.ffmpeg import FrameSpec, FrameStreams, VideoInfo, decode_audio, ffmpeg_binary, probe
from pipeline.extract.recipes import IMAGENET_MEAN, IMAGENET_STD, RECIPES_3D
from pipeline.extract.runner import NetRunner
from pipeline.extract.text import WordVectors
from pipeline.hardware import resolve_device, resolve_precision
from storage.sample import Captions, VideoFeatures

_END = object()


class _Merged:
    """Runs one chunk generator per stream in its own thread, all feeding one bounded queue.

    Iterating yields ``(stream, chunk)`` in the order chunks are decoded, so the consumer always works on whatever
    is ready (the 3D stream's first chunk is ready long before the 2D stream has decoded 16 seconds of video) and
    neither decoder ever waits for the other. Each stream's chunks arrive in its own order. At most ``maxsize``
    chunks wait in the queue (plus one being decoded per stream), whatever the video's length. A generator's error
    is re-raised in the consumer.
    """

    def __init__(self, makers: dict[str, Callable[[], Iterator[np.ndarray]]], maxsize: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self.wait_s = dict.fromkeys(makers, 0.0)  # consumer time spent waiting, charged to the stream that arrived
        self._threads = [
            threading.Thread(target=self._run, args=(name, make), daemon=True) for name, make in makers.items()
        ]
        for t in self._threads:
            t.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, name: str, make: Callable[[], Iterator[np.ndarray]]) -> None:
        gen = None
        try:
            gen = make()
            for chunk in gen:
                if not self._put((name, chunk)):
                    break
            self._put((name, _END))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put((name, exc))
        finally:
            if gen is not None and hasattr(gen, "close"):
                gen.close()  # kills ffmpeg when the consumer stopped early

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        running = len(self._threads)
        while running:
            t0 = time.perf_counter()
            name, item = self._queue.get()
            self.wait_s[name] += time.perf_counter() - t0
            if item is _END:
                running -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            yield name, item

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


class _AudioJob:
    """Decodes audio and computes the log-mel spectrogram in a thread; ``result()`` → float32 [n_mels, Ta]."""

    def __init__(self, path: str, info: VideoInfo, cfg: ExtractConfig, exe: str) -> None:
        self._out: np.ndarray | None = None
        self._error: BaseException | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, args=(path, info, cfg, exe), daemon=True)
        self._thread.start()

    def _run(self, path: str, info: VideoInfo, cfg: ExtractConfig, exe: str) -> None:
        t0 = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix="mmcaps-audio-") as tmp:
                raw = Path(tmp) / "audio.f32"
                timeout = cfg.timeout_s + info.duration_s / 10  # decoding has no streamed output to watch
                n = decode_audio(
                    path,
                    raw,
                    sample_rate=cfg.audio.sample_rate,
                    timeout_s=timeout,
                    max_seconds=cfg.max_seconds,
                    exe=exe,
                )
                wave = np.memmap(raw, dtype="<f4", mode="r", shape=(n,)) if n else np.zeros(0, np.float32)
                self._out = log_mel(
                    wave, sample_rate=cfg.audio.sample_rate, n_mels=cfg.audio.n_mels, fmin=cfg.audio.fmin
                )
                del wave
        except BaseException as exc:
            self._error = exc
        self.seconds = time.perf_counter() - t0

    def result(self) -> np.ndarray:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._out is not None
        return self._out


class Extractor:
    """Loads (or calibrates) the backbones once; :meth:`extract` then turns videos into :class:`VideoFeatures`.

    ``cache_dir``: a local folder for calibrated random backbones and converted word vectors (the workspace's
    ``cache_dir()``); None keeps them in this process only. ``device``: overrides ``cfg.device``.
    """

    def __init__(
        self,
        cfg: ExtractConfig,
        device: str | torch.device | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.device = torch.device(resolve_device(str(device) if device is not None else cfg.device))
        # Precision resolved for the device this extractor runs on; the config it records says what was used.
        self.precision = resolve_precision(cfg.precision, str(self.device))
        self.cfg = cfg = cfg.model_copy(update={"precision": self.precision.precision})
        self.ffmpeg = ffmpeg_binary(cfg.ffmpeg)
        self.fingerprint = cfg.fingerprint()
        cache = str(cache_dir) if cache_dir is not None else None
        self.rgb2d = build_2d(cfg.rgb2d, seed=cfg.seed, cache_dir=cache, download=cfg.download)
        self.rgb3d = build_3d(cfg.rgb3d, seed=cfg.seed, cache_dir=cache)
        self.recipe3d = RECIPES_3D[cfg.rgb3d.arch]
        common = {"device": self.device, "precision": self.precision.precision, "compile": cfg.compile}
        self.net2d = NetRunner(
            self.rgb2d.net, memory_format=torch.channels_last, max_batch=cfg.rgb2d.batch_size, **common
        )
        self.net3d = NetRunner(
            self.rgb3d.net, memory_format=torch.channels_last_3d, max_batch=cfg.rgb3d.batch_size, **common
        )
        # The backbones now hold the runners' folded networks, so the unfolded copies are freed.
        self.rgb2d = dataclasses.replace(self.rgb2d, net=self.net2d.net)
        self.rgb3d = dataclasses.replace(self.rgb3d, net=self.net3d.net)
        self.words = WordVectors.load(cfg.text.word2vec, cache) if cfg.text.word2vec else None
        if self.words is not None and self.words.dim != cfg.text.dim:
            raise ValueError(
                f"{cfg.text.word2vec}: vectors have {self.words.dim} dimensions, text.dim is {cfg.text.dim}"
            )
        self._mean2d = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std2d = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        r = self.recipe3d
        self._mean3d = torch.tensor(r.mean, device=self.device).view(1, 3, 1, 1, 1)
        self._std3d = torch.tensor(r.std, device=self.device).view(1, 3, 1, 1, 1)
        self.last_timing: dict[str, float] = {}  # seconds of the last extract(): wall, rgb2d, rgb3d, audio, waits

    @property
    def config(self) -> ExtractConfig:
        """The config (the name the extraction engine's ``Extractor`` protocol uses)."""
        return self.cfg

    @property
    def weights(self) -> dict[str, str]:
        return {
            "rgb2d": self.rgb2d.weights_id,
            "rgb3d": self.rgb3d.weights_id,
            "text": self.words.weights_id if self.words is not None else "none",
        }

    # -- networks ------------------------------------------------------------------------------------------------
    @staticmethod
    def _rows(runner: NetRunner, x: torch.Tensor) -> np.ndarray:
        y = F.normalize(runner(x), dim=1)
        return y.cpu().numpy().astype(np.float16)

    def features_2d(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames [n, H, W, 3] → float16 [n, 2048], L2-normalised rows (RGB / 255, ImageNet mean and std)."""
        if len(frames) == 0:
            return np.zeros((0, self.rgb2d.dim), np.float16)
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2)  # (n, c, h, w) NHWC
        x = (x.float() / 255.0 - self._mean2d) / self._std2d
        return self._rows(self.net2d, x)

    def features_3d(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames [n, S, S, 3] → float16 [ceil(n / L), 2048]; L-frame windows, the last padded with pixel 0."""
        r = self.recipe3d
        n = len(frames)
        if n == 0:
            return np.zeros((0, self.rgb3d.dim), np.float16)
        pad = (-n) % r.frames
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        if pad:
            x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
        x = x.view(-1, r.frames, *x.shape[1:]).permute(0, 4, 1, 2, 3)  # (b, c, t, h, w)
        x = (x.float() * r.scale - self._mean3d) / self._std3d
        return self._rows(self.net3d, x)

    def text_features(self, captions: Captions) -> tuple[np.ndarray, int]:
        """float16 [N, dim] caption vectors and the number of captions with no in-vocabulary token."""
        if self.words is None:
            return np.zeros((len(captions), self.cfg.text.dim), np.float16), len(captions)
        rows, oov = self.words.encode_many(list(captions.text))
        return rows.astype(np.float16), oov

    # -- one video ------------------------------------------------------------------------------------------------
    def extract(self, video_path: str | os.PathLike[str], captions: Captions | None, video_id: str) -> VideoFeatures:
        """All features of one video. Raises :class:`ExtractError` naming the file on bad input."""
        cfg = self.cfg
        path = str(video_path)
        t_start = time.perf_counter()
        info = probe(path)
        audio = _AudioJob(path, info, cfg, self.ffmpeg.path) if (info.has_audio and cfg.audio.enabled) else None
        r = self.recipe3d
        common = {"timeout_s": cfg.timeout_s, "max_seconds": cfg.max_seconds, "info": info, "exe": self.ffmpeg.path}
        specs = {
            "rgb2d": FrameSpec(fps=cfg.rgb2d.fps, size=cfg.rgb2d.size, chunk_frames=cfg.rgb2d.batch_size),
            "rgb3d": FrameSpec(fps=r.fps, size=r.size, crop=True, chunk_frames=r.frames * cfg.rgb3d.batch_size),
        }
        features = {"rgb2d": self.features_2d, "rgb3d": self.features_3d}
        rows: dict[str, list[np.ndarray]] = {"rgb2d": [], "rgb3d": []}
        timing = {"rgb2d": 0.0, "rgb3d": 0.0}
        frames = streams = None
        try:
            # One ffmpeg decodes the video once for both frame streams; a thread per stream feeds one queue, and
            # each chunk goes to its network as soon as it is decoded.
            frames = FrameStreams(path, specs, **common)
            streams = _Merged({name: functools.partial(frames.iter, name) for name in specs}, 2 * cfg.queue_chunks)
            for name, chunk in streams:
                t0 = time.perf_counter()
                rows[name].append(features[name](chunk))
                timing[name] += time.perf_counter() - t0
            mel = audio.result() if audio is not None else np.zeros((cfg.audio.n_mels, 0), np.float32)
        finally:
            if streams is not None:
                streams.close()
            if frames is not None:
                frames.close()
            if audio is not None:
                audio._thread.join()
        captions = captions if captions is not None else Captions()
        w2v, oov = self.text_features(captions)
        rgb2d = np.concatenate(rows["rgb2d"]) if rows["rgb2d"] else np.zeros((0, self.rgb2d.dim), np.float16)
        rgb3d = np.concatenate(rows["rgb3d"]) if rows["rgb3d"] else np.zeros((0, self.rgb3d.dim), np.float16)
        wall = time.perf_counter() - t_start
        self.last_timing = {
            "wall": wall,
            **timing,
            "audio": audio.seconds if audio is not None else 0.0,
            "wait2d": streams.wait_s["rgb2d"],
            "wait3d": streams.wait_s["rgb3d"],
        }
        duration = info.duration_s if cfg.max_seconds is None else min(info.duration_s, cfg.max_seconds)
        meta = {
            "video_id": video_id,
            "duration_s": duration,
            "fps": info.fps,
            "width": info.width,
            "height": info.height,
            "has_audio": bool(mel.shape[1] > 0),
            "weights": self.weights,
            "extract_fingerprint": self.fingerprint,
            "n_captions": len(captions),
            "n_captions_oov": int(oov),
            "dims": {"rgb2d": self.rgb2d.dim, "rgb3d": self.rgb3d.dim, "w2v": int(w2v.shape[1])},
            "rgb3d_arch": cfg.rgb3d.arch,
            "precision": self.precision.precision,
            "ffmpeg": self.ffmpeg.version,
        }
        return VideoFeatures(
            video_id=video_id,
            rgb2d=rgb2d,
            rgb3d=rgb3d,
            mel=mel.astype(np.float16),
            w2v=w2v,
            captions=captions,
            meta=meta,
        )


def extract_video(
    video_path: str | os.PathLike[str],
    captions: Captions | None,
    cfg: ExtractConfig,
    *,
    video_id: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
) -> VideoFeatures:
    """Convenience: build an :class:`Extractor` and extract one video (``video_id`` defaults to the file stem)."""
    ex = Extractor(cfg, device=device, cache_dir=cache_dir)
    return ex.extract(video_path, captions, video_id or Path(video_path).stem)


__all__ = ["ExtractError", "Extractor", "extract_video"]
