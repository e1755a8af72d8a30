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

import functools
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.device import activation_bytes, batch_for_memory, cuda_free_bytes, plan_device, to_device
from pipeline.extract.audio import log_mel
from pipeline.extract.backbones import Backbone, build_2d, build_3d, check_weights
from pipeline.extract.config import ExtractConfig
from pipeline.extract.errors import ExtractError
from pipeline.extract.extra import ExtraStreams
from pipeline.extract.ffmpeg import FrameSpec, FrameStreams, VideoInfo, decode_audio, ffmpeg_binary, probe
from pipeline.extract.recipes import IMAGENET_MEAN, IMAGENET_STD, RECIPES_3D
from pipeline.extract.runner import NetRunner
from pipeline.extract.text import WordVectors
from pipeline.hardware import cpu_capabilities, intra_op_threads, torch_threads
from storage.features import STREAMS, StreamArrays
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
    """Extracts videos stream by stream; backbones and word vectors are built on first need.

    :meth:`extract_streams` computes the streams asked for (the engine asks only for those the feature store lacks:
    text alone needs no decoding and no network); :meth:`extract` computes all four and returns the sample. One
    video at a time per extractor (the flows share one per process behind a lock).
    ``cache_dir``: a local folder for calibrated random backbones and converted word vectors (the workspace's
    ``cache_dir()``); None keeps them in this process only. ``device``: overrides ``cfg.device``.
    """

    def __init__(
        self,
        cfg: ExtractConfig,
        device: str | torch.device | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        # The device (checked: CUDA asked for where there is none is one line), the precision resolved for it (the
        # config it records says what was used) and, on CUDA, TF32 off (pipeline.device).
        self.plan = plan_device(device if device is not None else cfg.device, cfg.precision)
        self.device, self.precision = self.plan.device, self.plan.precision
        # The ISA ATen and oneDNN use shapes fp32's last bits (native vs capped at AVX2: 0.01-0.03 % of the values);
        # fixed for the process (the libraries read their caps when they load), so read once and recorded per stream.
        self.cpu = None if self.plan.cuda else cpu_capabilities().describe()
        self.cfg = cfg = cfg.model_copy(update={"precision": self.precision.precision})
        self.ffmpeg = ffmpeg_binary(cfg.ffmpeg)
        self.fingerprint = cfg.fingerprint()
        self.stream_fingerprints = cfg.stream_fingerprints()
        # Named weights that are not here fail now, not at the first video (nothing is built yet).
        check_weights(cfg.rgb2d, download=cfg.download)
        check_weights(cfg.rgb3d)
        if cfg.text.word2vec and not Path(cfg.text.word2vec).expanduser().is_file():
            raise FileNotFoundError(f"{cfg.text.word2vec}: word2vec file not found")
        self.cache_dir = str(cache_dir) if cache_dir is not None else None
        # Chosen once and set around every network pass, so the drivers (the main thread, a flow's worker thread,
        # a thread whose OpenMP count another library changed) all compute the same bytes.
        self.threads = cfg.threads or intra_op_threads()
        self.recipe3d = RECIPES_3D[cfg.rgb3d.arch]
        self._weights: dict[str, str] = {}  # weights id of each backbone, once built
        self._dims: dict[str, int] = {}
        self.extra = ExtraStreams(cfg.streams, cfg.seed)  # CLIP, timm, S3D, VGGish streams (ExtractConfig.streams)
        self._caps: dict[tuple, int] = {}  # CUDA: items per network call that fit, by (stream, input shape)
        self.last_timing: dict[str, float] = {}  # seconds of the last extraction: wall, rgb2d, rgb3d, audio, waits

    @property
    def config(self) -> ExtractConfig:
        """The config (the name the extraction engine's ``Extractor`` protocol uses)."""
        return self.cfg

    # -- what is built on first need -----------------------------------------------------------------------------
    def _runner(self, backbone: Backbone, memory_format: torch.memory_format, max_batch: int) -> NetRunner:
        return NetRunner(
            backbone.net,
            device=self.device,
            precision=self.precision.precision,
            memory_format=memory_format,
            compile=self.cfg.compile,
            max_batch=max_batch,
        )

    @functools.cached_property
    def net2d(self) -> NetRunner:
        """ResNet-152, folded (the unfolded copy is freed)."""
        backbone = build_2d(self.cfg.rgb2d, seed=self.cfg.seed, cache_dir=self.cache_dir, download=self.cfg.download)
        self._weights["rgb2d"] = backbone.weights_id
        self._dims["rgb2d"] = backbone.dim
        self._norm2d = (
            torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1),
            torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1),
        )
        return self._runner(backbone, torch.channels_last, self.cfg.rgb2d.batch_size)

    @functools.cached_property
    def net3d(self) -> NetRunner:
        """The 3D network of ``rgb3d.arch``, folded."""
        backbone = build_3d(self.cfg.rgb3d, seed=self.cfg.seed, cache_dir=self.cache_dir)
        self._weights["rgb3d"] = backbone.weights_id
        self._dims["rgb3d"] = backbone.dim
        r = self.recipe3d
        self._norm3d = (
            torch.tensor(r.mean, device=self.device).view(1, 3, 1, 1, 1),
            torch.tensor(r.std, device=self.device).view(1, 3, 1, 1, 1),
        )
        return self._runner(backbone, torch.channels_last_3d, self.cfg.rgb3d.batch_size)

    @functools.cached_property
    def words(self) -> WordVectors | None:
        """The word vectors (None when the config names none: every caption then gets a zero vector)."""
        cfg = self.cfg.text
        if not cfg.word2vec:
            return None
        words = WordVectors.load(cfg.word2vec, self.cache_dir)
        if words.dim != cfg.dim:
            raise ValueError(f"{cfg.word2vec}: vectors have {words.dim} dimensions, text.dim is {cfg.dim}")
        return words

    @property
    def weights(self) -> dict[str, str]:
        """The weights id of every backbone (building them) and of the word vectors."""
        _ = self.net2d, self.net3d
        return {**self._weights, "text": self.words.weights_id if self.words is not None else "none"}

    # -- networks ------------------------------------------------------------------------------------------------
    def _rows(self, runner: NetRunner, x: torch.Tensor) -> np.ndarray:
        y = F.normalize(self._run(runner, x), dim=1)
        return y.cpu().numpy().astype(np.float16)

    def _run(self, runner: NetRunner, x: torch.Tensor) -> torch.Tensor:
        """``runner(x)``: one call on the CPU; on CUDA in slices no larger than the GPU's free memory holds (sized
        once per input shape from the network's activation shapes, :func:`pipeline.device.batch_for_memory`)."""
        if self.device.type != "cuda":
            return runner(x)
        key = (id(runner), tuple(x.shape[1:]))
        if key not in self._caps:
            item = activation_bytes(runner.net, x.shape[1:], runner.dtype)
            self._caps[key] = batch_for_memory(cuda_free_bytes(self.device), item)
        cap = self._caps[key]
        return torch.cat([runner(x[i : i + cap]) for i in range(0, len(x), cap)])

    def features_2d(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames [n, H, W, 3] → float16 [n, 2048], L2-normalised rows (RGB / 255, ImageNet mean and std)."""
        runner = self.net2d
        if len(frames) == 0:
            return np.zeros((0, self._dims["rgb2d"]), np.float16)
        mean, std = self._norm2d
        x = to_device(frames, self.device).permute(0, 3, 1, 2)  # (n, c, h, w) NHWC; pinned + non_blocking on CUDA
        x = (x.float() / 255.0 - mean) / std
        return self._rows(runner, x)

    def features_3d(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames [n, S, S, 3] → float16 [ceil(n / L), 2048]; L-frame windows, the last padded with pixel 0."""
        runner = self.net3d
        r = self.recipe3d
        n = len(frames)
        if n == 0:
            return np.zeros((0, self._dims["rgb3d"]), np.float16)
        pad = (-n) % r.frames
        x = to_device(frames, self.device)
        if pad:
            x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
        x = x.view(-1, r.frames, *x.shape[1:]).permute(0, 4, 1, 2, 3)  # (b, c, t, h, w)
        mean, std = self._norm3d
        x = (x.float() * r.scale - mean) / std
        return self._rows(runner, x)

    def text_features(self, captions: Captions) -> tuple[np.ndarray, int]:
        """float16 [N, dim] caption vectors and the number of captions with no in-vocabulary token."""
        if self.words is None:
            return np.zeros((len(captions), self.cfg.text.dim), np.float16), len(captions)
        rows, oov = self.words.encode_many(list(captions.text))
        return rows.astype(np.float16), oov

    # -- one video ------------------------------------------------------------------------------------------------
    def extract_streams(
        self, video_path: str | os.PathLike[str], captions: Captions | None, streams: Collection[str] = STREAMS
    ) -> dict[str, StreamArrays]:
        """The ``streams`` of one video (any of ``rgb2d``, ``rgb3d``, ``audio``, ``text``), each with what made it.

        Only what is asked is decoded and run: ``text`` alone reads no video. Raises :class:`ExtractError` naming
        the file on bad input.
        """
        cfg = self.cfg
        want = set(streams)
        unknown = want - set(STREAMS) - set(cfg.streams)
        if unknown:
            raise ValueError(f"unknown streams {sorted(unknown)}; streams are {STREAMS}")
        captions = captions if captions is not None else Captions()
        t_start = time.perf_counter()
        out: dict[str, StreamArrays] = {}
        timing = {"rgb2d": 0.0, "rgb3d": 0.0, "audio": 0.0, "wait2d": 0.0, "wait3d": 0.0}
        timing.update(dict.fromkeys(cfg.streams, 0.0))
        if want & {"rgb2d", "rgb3d", "audio", *cfg.streams}:
            path = str(video_path)
            info = probe(path)
            duration = info.duration_s if cfg.max_seconds is None else min(info.duration_s, cfg.max_seconds)
            probed = {
                "duration_s": duration,
                "fps": info.fps,
                "width": info.width,
                "height": info.height,
                "has_audio_stream": info.has_audio,
            }
            audio = None
            if "audio" in want and info.has_audio and cfg.audio.enabled:
                audio = _AudioJob(path, info, cfg, self.ffmpeg.path)
            try:
                with torch_threads(self.threads):
                    rows = self._frames(path, info, want & {"rgb2d", "rgb3d", *self.extra.frame_names}, timing)
                mel = audio.result() if audio is not None else np.zeros((cfg.audio.n_mels, 0), np.float32)
            finally:
                if audio is not None:
                    audio._thread.join()
                    timing["audio"] = audio.seconds
            visual = {
                "precision": self.precision.precision,
                "threads": self.threads,
                "ffmpeg": self.ffmpeg.version,
                "probe": probed,
            }
            if self.plan.cuda:  # TF32 shapes fp32 numbers on CUDA only
                visual.update(device=str(self.device), tf32=self.plan.tf32.record())
            else:
                visual["cpu"] = self.cpu
            for name, arr in rows.items():
                meta = {**visual, "weights": self._weights[name], "rows": len(arr)}
                if name == "rgb3d":
                    meta["arch"] = cfg.rgb3d.arch
                elif name in cfg.streams:  # an extra stream's rate and window, for pooling spans of it
                    meta.update(self.extra.describe(name))
                out[name] = StreamArrays(arr, meta)
            out.update(self.extra.audio_streams(self, path, info, want, visual))
            if "audio" in want:
                out["audio"] = StreamArrays(
                    mel.astype(np.float16), {"ffmpeg": self.ffmpeg.version, "probe": probed, "columns": mel.shape[1]}
                )
        if "text" in want:
            w2v, oov = self.text_features(captions)
            weights = self.words.weights_id if self.words is not None else "none"
            out["text"] = StreamArrays(w2v, {"weights": weights, "n_captions": len(captions), "n_captions_oov": oov})
        self.last_timing = {"wall": time.perf_counter() - t_start, **timing}
        return {name: out[name] for name in (*STREAMS, *sorted(cfg.streams)) if name in out}

    def _frames(self, path: str, info: VideoInfo, want: set[str], timing: dict[str, float]) -> dict[str, np.ndarray]:
        """Decode the wanted frame streams once (one ffmpeg) and run each chunk through its network as it comes."""
        if not want:
            return {}
        cfg, r = self.cfg, self.recipe3d
        specs = {
            "rgb2d": FrameSpec(fps=cfg.rgb2d.fps, size=cfg.rgb2d.size, chunk_frames=cfg.rgb2d.batch_size),
            "rgb3d": FrameSpec(fps=r.fps, size=r.size, crop=True, chunk_frames=r.frames * cfg.rgb3d.batch_size),
        }
        specs = {name: spec for name, spec in specs.items() if name in want}
        nets = {"rgb2d": self.features_2d, "rgb3d": self.features_3d}
        for name in specs:  # build before decoding starts, so ffmpeg never waits on a network being built
            _ = self.net2d if name == "rgb2d" else self.net3d
        specs.update(self.extra.begin(self, want, nets))
        rows: dict[str, list[np.ndarray]] = {name: [] for name in specs}
        frames = streams = None
        common = {"timeout_s": cfg.timeout_s, "max_seconds": cfg.max_seconds, "info": info, "exe": self.ffmpeg.path}
        try:
            # One ffmpeg decodes the video once for every frame stream; a thread per stream feeds one queue, and
            # each chunk goes to its network as soon as it is decoded.
            frames = FrameStreams(path, specs, **common)
            streams = _Merged({name: functools.partial(frames.iter, name) for name in specs}, 2 * cfg.queue_chunks)
            for name, chunk in streams:
                t0 = time.perf_counter()
                rows[name].append(nets[name](chunk))
                timing[name] += time.perf_counter() - t0
        finally:
            if streams is not None:
                streams.close()
                timing["wait2d"] = streams.wait_s.get("rgb2d", 0.0)
                timing["wait3d"] = streams.wait_s.get("rgb3d", 0.0)
            if frames is not None:
                frames.close()
        self.extra.finish(self, rows)  # clip streams' last windows
        return {
            name: np.concatenate(parts) if parts else np.zeros((0, self._dims[name]), np.float16)
            for name, parts in rows.items()
        }

    def extract(self, video_path: str | os.PathLike[str], captions: Captions | None, video_id: str) -> VideoFeatures:
        """All four streams of one video as one sample (the notebook path; the engine goes through the store)."""
        captions = captions if captions is not None else Captions()
        streams = self.extract_streams(video_path, captions, STREAMS)
        return VideoFeatures.from_streams(
            video_id=video_id,
            captions=captions,
            arrays={name: entry.array for name, entry in streams.items()},
            metas={name: entry.meta for name, entry in streams.items()},
            identity={
                "source": str(video_path),
                "extract_fingerprint": self.fingerprint,
                "stream_fingerprints": self.stream_fingerprints,
            },
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
