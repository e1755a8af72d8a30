"""Probing and decoding with ffmpeg, as the HowTo100M reference extractor does it.

Frames: ``fps`` filter, then ``scale`` to (short side S, long side ``int(long * S / short)``) with ffmpeg's default
scaler, then optionally a centre ``crop`` at ``int((w - S) / 2), int((h - S) / 2)``; raw RGB24 out of a pipe, read
in chunks of ``chunk_frames`` frames, so memory does not grow with the video's length.

Audio: mono, 16 kHz, float32, written by ffmpeg to a temporary raw file that the caller memory-maps.

Safety: commands are argument lists (no shell); inputs are passed as ``file:<absolute path>`` so a name that
begins with ``-``, holds ``:``, spaces or non-ASCII characters is never read as an option or a protocol. Each
process gets a stall timeout (the longest it may go without producing output while we wait on it) and is killed
on any error or when the consumer stops early; stderr is captured into the error message.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import ffmpeg as ffmpeg_python
import numpy as np

from pipeline.extract.errors import ExtractError

DEFAULT_TIMEOUT_S = 120.0


PINNED = "pinned"  # the imageio-ffmpeg wheel's static build: the same binary, hence the same decoding, on every host
SYSTEM = "system"  # the ffmpeg on PATH


@dataclass(frozen=True)
class FfmpegBinary:
    """An ffmpeg executable and its build's version (``n9.0.2-17-g2a571b6068-20260930``, as ``-version`` says)."""

    path: str
    version: str


@lru_cache(maxsize=16)
def _version(path: str, size: int, mtime_ns: int) -> str:
    try:
        proc = subprocess.run([path, "-hide_banner", "-version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExtractError(f"{path}: cannot run ffmpeg ({exc})") from exc
    first = proc.stdout.decode("utf-8", "replace").splitlines()[:1]
    if proc.returncode != 0 or not first or not first[0].startswith("ffmpeg version "):
        raise ExtractError(f"{path}: not an ffmpeg executable (`{path} -version` printed {first[:1] or 'nothing'})")
    return first[0][len("ffmpeg version ") :].split(" Copyright")[0].strip()


def ffmpeg_binary(choice: str = PINNED) -> FfmpegBinary:
    """The ffmpeg that ``choice`` names: ``pinned`` (imageio-ffmpeg's build), ``system`` (PATH) or a file path.

    The one place mmcaps finds ffmpeg. Builds differ in what they decode (Debian's ffmpeg gives audio a few
    samples longer than the pinned build), so features are made with the pinned one unless a config asks for
    another, and the version enters the extract fingerprint.
    """
    if choice == PINNED:
        import imageio_ffmpeg  # noqa: PLC0415  deferred: imageio_ffmpeg

        path = imageio_ffmpeg.get_ffmpeg_exe()
    elif choice == SYSTEM:
        found = shutil.which("ffmpeg")
        if not found:
            raise ExtractError("ffmpeg: system asks for the ffmpeg on PATH, and there is none")
        path = found
    else:
        p = Path(choice).expanduser()
        if not p.is_file() or not os.access(p, os.X_OK):
            raise ExtractError(f"ffmpeg: {choice}: no such executable")
        path = str(p.absolute())
    st = os.stat(path)
    return FfmpegBinary(path=path, version=_version(path, st.st_size, st.st_mtime_ns))


def ffmpeg_exe(choice: str = PINNED) -> str:
    """The path of the ffmpeg that ``choice`` names (see :func:`ffmpeg_binary`)."""
    return ffmpeg_binary(choice).path


@dataclass(frozen=True)
class VideoInfo:
    """What a probe found. ``duration_s`` is the container duration (the video stream's if the container has none)."""

    path: str
    duration_s: float
    width: int
    height: int
    fps: float
    has_audio: bool
    audio_channels: int
    audio_sample_rate: int


def _check_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser().absolute()
    if not p.is_file():
        raise ExtractError(f"{path}: no such file")
    if p.stat().st_size == 0:
        raise ExtractError(f"{path}: file is empty (0 bytes)")
    return p


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Streams, duration and frame rate of a video file (PyAV reads the container header; no ffprobe needed)."""
    import av  # noqa: PLC0415  deferred: av, only for the PyAV decoder

    p = _check_file(path)
    try:
        with av.open(str(p)) as container:
            video = next((s for s in container.streams if s.type == "video"), None)
            audio = next((s for s in container.streams if s.type == "audio"), None)
            if video is None:
                raise ExtractError(f"{path}: no video stream")
            duration = None
            if container.duration is not None:
                duration = container.duration / 1_000_000
            elif video.duration is not None and video.time_base is not None:
                duration = float(video.duration * video.time_base)
            rate = video.average_rate or video.guessed_rate or video.base_rate
            info = VideoInfo(
                path=str(p),
                duration_s=float(duration) if duration is not None else float("nan"),
                width=int(video.codec_context.width),
                height=int(video.codec_context.height),
                fps=float(rate) if rate else float("nan"),
                has_audio=audio is not None,
                audio_channels=int(audio.codec_context.channels) if audio is not None else 0,
                audio_sample_rate=int(audio.codec_context.sample_rate or 0) if audio is not None else 0,
            )
    except ExtractError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise ExtractError(f"{path}: cannot read as a video ({exc})") from exc
    if not math.isfinite(info.duration_s) or info.duration_s <= 0:
        raise ExtractError(f"{path}: unknown or zero duration")
    if info.width <= 0 or info.height <= 0:
        raise ExtractError(f"{path}: video stream has no frame size")
    return info


def output_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(out_width, out_height) with the short side ``size`` and the long side ``int(long * size / short)``."""
    if height >= width:
        return size, int(height * size / width)
    return int(width * size / height), size


def frame_shape(info: VideoInfo, size: int, crop: bool) -> tuple[int, int]:
    """(height, width) of the frames :func:`iter_frames` yields."""
    if crop:
        return size, size
    w, h = output_size(info.width, info.height, size)
    return h, w


def expected_frames(duration_s: float, fps: float) -> int:
    """Frames ffmpeg's ``fps`` filter emits for a stream of this duration: round-half-up(duration × fps).

    The filter (default ``round=near``, ``eof_action=round``) puts output frame k at time k / fps and keeps it when
    it rounds into the stream, so a 5.31 s video gives 5 frames at 1 fps and 127 at 24 fps.
    """
    return math.floor(duration_s * fps + 0.5)


def _input_arg(path: Path) -> str:
    # "file:" stops ffmpeg from reading "a:b.mp4" as protocol "a"; the absolute path never begins with "-".
    return "file:" + str(path)


def _input_kwargs(max_seconds: float | None) -> dict:
    return {"t": f"{max_seconds:.6f}"} if max_seconds is not None else {}


class _Process:
    """An ffmpeg subprocess with stderr in a temporary file and a stall watchdog around blocking reads.

    Output comes on pipes whose write ends the child inherits under the same numbers (``pass_fds``). The watchdog
    kills ffmpeg when a reader has been waiting ``timeout_s`` with no output on any pipe.
    """

    def __init__(self, args: list[str], *, where: str, timeout_s: float, pass_fds: tuple[int, ...] = ()) -> None:
        self.where = where
        self.timeout_s = timeout_s
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the process; closed in close()
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            pass_fds=pass_fds,
        )
        self._waiting_since: float | None = None
        self._waiting = 0  # readers blocked in read_from
        self._lock = threading.Lock()
        self.timed_out = False
        self._done = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        while not self._done.wait(0.2):
            since = self._waiting_since
            if since is not None and time.monotonic() - since > self.timeout_s:
                self.timed_out = True
                self.proc.kill()
                return

    def read_from(self, pipe, n: int) -> bytearray:
        """Up to ``n`` bytes from one of the process's output pipes (fewer only at the end)."""
        with self._lock:
            self._waiting += 1
            if self._waiting_since is None:
                self._waiting_since = time.monotonic()
        buf = bytearray(n)  # writable, so numpy views of it can become tensors without a copy
        view = memoryview(buf)
        got = 0
        try:
            while got < n:
                k = pipe.readinto(view[got:])
                if not k:
                    break
                got += k
                self._waiting_since = time.monotonic()  # progress on any pipe restarts the stall clock
        finally:
            with self._lock:
                self._waiting -= 1
                self._waiting_since = time.monotonic() if self._waiting else None
        return buf if got == n else buf[:got]

    def stderr_tail(self, limit: int = 1500) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", errors="replace").strip()
        return text[-limit:]

    def finish(self) -> None:
        """Wait for exit; raise ExtractError with ffmpeg's stderr on a non-zero status or a timeout."""
        self._waiting_since = time.monotonic()
        try:
            self.proc.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self.timed_out = True
        self._waiting_since = None
        self.close()
        if self.timed_out:
            raise ExtractError(f"{self.where}: ffmpeg made no progress for {self.timeout_s:.0f} s (timeout)")
        if self.proc.returncode != 0:
            raise ExtractError(f"{self.where}: ffmpeg failed (exit {self.proc.returncode}): {self.stderr_tail()}")

    def close(self) -> None:
        self._done.set()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __del__(self) -> None:  # a generator dropped without close() must not leave ffmpeg running
        try:
            self.close()
            self._stderr.close()
        except Exception:
            pass


@dataclass(frozen=True)
class FrameSpec:
    """One frame output of :class:`FrameStreams`: frames at ``fps``, short side ``size``, optional centre crop."""

    fps: float
    size: int
    crop: bool = False
    chunk_frames: int = 32


class FrameStreams:
    """Decode a video once into several frame streams: one ffmpeg process, its ``split`` filter feeding one branch
    per :class:`FrameSpec` (each branch the reference recipe of :func:`iter_frames`, so the frames are the same),
    each branch written to its own pipe.

    ``iter(name)`` yields that stream's uint8 chunks ``[n, H, W, 3]`` exactly as :func:`iter_frames` would. Read
    every stream, each from its own thread: ffmpeg writes the branches in step, so a stream nobody reads stalls
    the others. Errors (ffmpeg failing, a stall past ``timeout_s``, a truncated file) are raised by the iterators
    and name the file. ``close()`` kills ffmpeg; a stream closed early does the same.

    Decoding once instead of once per stream saves about a third of the decoding CPU time (measured on a 640×360,
    30 fps H.264 video: 0.70 core-seconds for both streams instead of 1.27).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        specs: dict[str, FrameSpec],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_seconds: float | None = None,
        info: VideoInfo | None = None,
        exe: str | None = None,
    ) -> None:
        self.where = str(path)
        p = _check_file(path)
        self.info = info or probe(p)
        self.specs = dict(specs)
        self.max_seconds = max_seconds
        pipes = {name: os.pipe() for name in self.specs}
        try:
            source = ffmpeg_python.input(_input_arg(p), **_input_kwargs(max_seconds)).video
            branches = source.split() if len(self.specs) > 1 else None
            outputs = []
            for i, (name, spec) in enumerate(self.specs.items()):
                width, height = output_size(self.info.width, self.info.height, spec.size)
                stream = (branches[i] if branches is not None else source).filter("fps", fps=spec.fps)
                stream = stream.filter("scale", width, height)
                if spec.crop:
                    stream = stream.crop(
                        int((width - spec.size) / 2), int((height - spec.size) / 2), spec.size, spec.size
                    )
                outputs.append(stream.output(f"pipe:{pipes[name][1]}", format="rawvideo", pix_fmt="rgb24"))
            args = (
                ffmpeg_python.merge_outputs(*outputs)
                .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
                .compile(cmd=exe or ffmpeg_exe())
            )
            self._proc = _Process(
                args, where=self.where, timeout_s=timeout_s, pass_fds=tuple(w for _, w in pipes.values())
            )
        except BaseException:
            for r, _ in pipes.values():
                os.close(r)
            raise
        finally:
            for _, w in pipes.values():
                os.close(w)  # the child holds its copies; ours would keep the readers from seeing EOF
        self._pipes = {name: os.fdopen(r, "rb", buffering=0) for name, (r, _) in pipes.items()}
        self._lock = threading.Lock()
        self._finished = False
        self._error: ExtractError | None = None

    def _finish(self) -> None:
        """Wait for ffmpeg to exit (once, whichever stream ends first) and raise its failure in every stream."""
        with self._lock:
            if not self._finished:
                self._finished = True
                try:
                    self._proc.finish()
                except ExtractError as exc:
                    self._error = exc
        if self._error is not None:
            raise self._error

    def iter(self, name: str) -> Iterator[np.ndarray]:
        """The chunks of stream ``name``; see the class docstring."""
        spec = self.specs[name]
        h, w = frame_shape(self.info, spec.size, spec.crop)
        frame_bytes = h * w * 3
        pipe = self._pipes[name]
        total = 0
        complete = False
        try:
            while True:
                data = self._proc.read_from(pipe, frame_bytes * spec.chunk_frames)
                n = len(data) // frame_bytes
                if n:
                    total += n
                    yield np.frombuffer(data, dtype=np.uint8, count=n * frame_bytes).reshape(n, h, w, 3)
                if len(data) < frame_bytes * spec.chunk_frames:
                    break
            self._finish()
            complete = True
        finally:
            pipe.close()
            if not complete:
                self.close()  # an error or an early stop: the other streams end too
        duration = self.info.duration_s if self.max_seconds is None else min(self.info.duration_s, self.max_seconds)
        expected = expected_frames(duration, spec.fps)
        if total < 0.9 * expected - 1:
            raise ExtractError(
                f"{self.where}: decoded {total} frames at {spec.fps} fps but the header promises about {expected} "
                f"({duration:.2f} s): the file is truncated or corrupt. "
                f"ffmpeg said: {self._proc.stderr_tail(500) or '-'}"
            )

    def close(self) -> None:
        """Kill ffmpeg if it still runs (idempotent)."""
        self._proc.close()

    def __enter__(self) -> FrameStreams:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_frames(
    path: str | os.PathLike[str],
    *,
    fps: float,
    size: int,
    crop: bool = False,
    chunk_frames: int = 32,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_seconds: float | None = None,
    info: VideoInfo | None = None,
    exe: str | None = None,
) -> Iterator[np.ndarray]:
    """Decode frames at ``fps`` scaled to short side ``size`` (optionally centre-cropped to size × size).

    Yields uint8 arrays ``[n, H, W, 3]`` (RGB, n ≤ ``chunk_frames``; only the last chunk may be shorter). Raises
    :class:`ExtractError` naming the file when ffmpeg fails, times out, or returns far fewer frames than the
    container's duration promises (a truncated file). The one-stream case of :class:`FrameStreams`.
    """
    spec = FrameSpec(fps=fps, size=size, crop=crop, chunk_frames=chunk_frames)
    streams = FrameStreams(path, {"frames": spec}, timeout_s=timeout_s, max_seconds=max_seconds, info=info, exe=exe)
    try:
        yield from streams.iter("frames")
    finally:
        streams.close()


def decode_audio(
    path: str | os.PathLike[str],
    out_file: str | os.PathLike[str],
    *,
    sample_rate: int = 16000,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_seconds: float | None = None,
    exe: str | None = None,
) -> int:
    """Write the first audio stream as mono float32 little-endian at ``sample_rate`` to ``out_file``.

    Returns the number of samples. ffmpeg's default down-mix makes mono from any layout (5.1 included). The
    caller memory-maps the file, so a long video's audio never has to sit in RAM.
    """
    p = _check_file(path)
    stream = ffmpeg_python.input(_input_arg(p), **_input_kwargs(max_seconds))
    out = stream.output(
        "file:" + str(Path(out_file).absolute()), format="f32le", acodec="pcm_f32le", ac=1, ar=sample_rate, vn=None
    )
    args = out.global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-y").compile(cmd=exe or ffmpeg_exe())
    proc = _Process(args, where=str(path), timeout_s=timeout_s)
    try:
        # No stdout here: the watchdog covers the whole run, scaled to the stream's length being decoded.
        proc.finish()
    finally:
        proc.close()
    return os.path.getsize(out_file) // 4
