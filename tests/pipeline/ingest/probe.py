"""A test double of the extractor: real ffmpeg decoding, no neural network (the engine's tests run in milliseconds).

Features have the sample shapes of storage/README.md "Shard sample" but are NOT the paper's features (do not train on them):
``rgb2d`` rows are 8x8 RGB thumbnails at 1 fps, zero-padded to 2048 and L2-normalised; ``rgb3d`` rows (1.5 per
second) repeat the nearest thumbnail; ``mel`` is a 40-band log power spectrogram (16 kHz mono, 25 ms window, 10 ms
hop, equal-width bands); ``w2v`` rows are the element-wise max of per-token vectors drawn from a token-seeded RNG.
It follows the engine's extractor protocol (``extract_streams``) and ``ExtractConfig``'s stream fingerprints.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from model.fingerprint import FingerprintedConfig, content_fingerprint, runtime_field
from pipeline.extract.ffmpeg import ffmpeg_exe
from storage.features import STREAMS, StreamArrays
from storage.sample import Captions, VideoFeatures

_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
FEATURE_DIM = 2048
N_MELS = 40
SAMPLE_RATE = 16000
HOP = 160  # 10 ms at 16 kHz
WINDOW = 400  # 25 ms at 16 kHz


class ProbeConfig(FingerprintedConfig):
    """Settings of :class:`ProbeExtractor`; its streams' fingerprints follow ``ExtractConfig``'s contract."""

    thumb: int = 8  # thumbnail side in pixels (rgb2d rows hold thumb*thumb*3 values)
    timeout_s: float = runtime_field(60.0)
    delay_s: float = runtime_field(0.0)  # sleep per decoded video (tests slow extraction down to interrupt it)
    log_path: str | None = runtime_field(None)  # append "<file stem>\t<streams>" after each extraction

    def stream_fingerprints(self) -> dict[str, str]:
        # The thumbnail size shapes the visual streams only; text and audio do not depend on any setting here.
        parts = {"rgb2d": {"thumb": self.thumb}, "rgb3d": {"thumb": self.thumb}, "audio": {}, "text": {}}
        return {name: content_fingerprint(f"probe:{name}", payload) for name, payload in parts.items()}

    def fingerprint_payload(self) -> dict[str, Any]:
        return {"streams": self.stream_fingerprints()}


def _run(args: list[str], *, where: str, timeout_s: float) -> bytes:
    try:
        proc = subprocess.run(args, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ValueError(f"{where}: ffmpeg timed out after {timeout_s:.0f} s") from exc
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["(no message)"]
        raise ValueError(f"{where}: ffmpeg cannot decode it ({tail[0]})")
    return proc.stdout


def _token_vector(token: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(token.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(300).astype(np.float32)


def _l2(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-8)


class ProbeExtractor:
    """``extract(video_path, captions, video_id) -> VideoFeatures`` by plain decoding (see module doc)."""

    def __init__(self, config: ProbeConfig | None = None) -> None:
        self.config = config or ProbeConfig()
        self.exe = ffmpeg_exe()

    def _probe(self, path: str) -> tuple[float, bool]:
        """(duration in seconds, has an audio stream); raises ValueError when there is no video stream."""
        proc = subprocess.run(
            [self.exe, "-hide_banner", "-nostdin", "-i", f"file:{path}"],
            capture_output=True,
            timeout=self.config.timeout_s,
            check=False,
        )
        info = proc.stderr.decode("utf-8", "replace")
        if " Video:" not in info:
            last = info.strip().splitlines()[-1:] or ["(no message)"]
            raise ValueError(f"{path}: no video stream ({last[0]})")
        match = _DURATION.search(info)
        duration = 0.0
        if match:
            h, m, s = match.groups()
            duration = int(h) * 3600 + int(m) * 60 + float(s)
        return duration, " Audio:" in info

    def extract_streams(
        self, video_path: str, captions: Captions | None, streams: Collection[str]
    ) -> dict[str, StreamArrays]:
        cfg = self.config
        want = set(streams)
        path = str(Path(video_path).absolute())
        caps = captions if captions is not None else Captions()
        out: dict[str, StreamArrays] = {}
        if want & {"rgb2d", "rgb3d", "audio"}:
            if cfg.delay_s:
                time.sleep(cfg.delay_s)
            duration, has_audio = self._probe(path)
            probe = {"duration_s": duration, "fps": 1.0}
            side = cfg.thumb
            decode = [self.exe, "-v", "error", "-nostdin", "-i", f"file:{path}"]
            if want & {"rgb2d", "rgb3d"}:
                thumbs_args = ["-vf", f"fps=1,scale={side}:{side}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
                raw = _run([*decode, *thumbs_args], where=path, timeout_s=cfg.timeout_s)
                frame_bytes = side * side * 3
                n_frames = len(raw) // frame_bytes
                if n_frames == 0:
                    raise ValueError(f"{path}: no decodable video frames")
                thumbs = np.frombuffer(raw[: n_frames * frame_bytes], np.uint8).reshape(n_frames, frame_bytes) / 255.0
                rgb2d = np.zeros((n_frames, FEATURE_DIM), np.float32)  # (t2, 2048)
                rgb2d[:, :frame_bytes] = thumbs + 1e-3  # never an all-zero row, so every row normalises
                rgb2d = _l2(rgb2d)
                n3d = max(1, int(duration * 1.5))
                rgb3d = rgb2d[np.minimum((np.arange(n3d) / 1.5).astype(int), n_frames - 1)]  # (t3, 2048)
                meta = {"weights": "probe-thumbnail", "probe": probe}
                out["rgb2d"] = StreamArrays(rgb2d.astype(np.float16), meta)
                out["rgb3d"] = StreamArrays(rgb3d.astype(np.float16), meta)
            if "audio" in want:
                mel = np.zeros((N_MELS, 0), np.float32)
                if has_audio:
                    audio_args = ["-map", "0:a:0", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "-"]
                    pcm = _run([*decode, *audio_args], where=path, timeout_s=cfg.timeout_s)
                    audio = np.frombuffer(pcm, np.int16).astype(np.float32) / 32768.0
                    n = max(0, (len(audio) - WINDOW) // HOP + 1)
                    if n:
                        frames = np.lib.stride_tricks.sliding_window_view(audio, WINDOW)[::HOP][:n]  # (ta, 400)
                        power = np.abs(np.fft.rfft(frames * np.hanning(WINDOW), axis=1)) ** 2  # (ta, 201)
                        bands = np.array_split(np.arange(power.shape[1]), N_MELS)
                        mel = np.log(np.stack([power[:, b].sum(axis=1) for b in bands]) + 1e-6)  # (40, ta)
                out["audio"] = StreamArrays(mel.astype(np.float16), {"probe": probe, "columns": int(mel.shape[1])})
        if "text" in want:
            w2v = np.zeros((len(caps), 300), np.float32)  # (n, 300)
            for i, text in enumerate(caps.text):
                tokens = re.findall(r"[a-z0-9']+", text.lower())
                if tokens:
                    w2v[i] = np.max(np.stack([_token_vector(t) for t in tokens]), axis=0)
            out["text"] = StreamArrays(w2v.astype(np.float16), {"weights": "probe-hash", "n_captions_oov": 0})
        if cfg.log_path:
            with open(cfg.log_path, "a", encoding="utf-8") as fh:
                fh.write(f"{Path(video_path).stem}\t{','.join(s for s in STREAMS if s in want)}\n")
        return out

    def extract(self, video_path: str, captions: Captions | None, video_id: str) -> VideoFeatures:
        """All streams as one sample (the direct path the tests compare datasets against)."""
        caps = captions if captions is not None else Captions()
        streams = self.extract_streams(video_path, caps, STREAMS)
        return VideoFeatures.from_streams(
            video_id=video_id,
            captions=caps,
            arrays={s: e.array for s, e in streams.items()},
            metas={s: e.meta for s, e in streams.items()},
            identity={"source": str(video_path), "extract_fingerprint": self.config.fingerprint()},
        )
