"""A cheap real extractor for exercising the engine: decodes the video with ffmpeg, no neural network.

Features have the sample shapes of DESIGN section 3 but are NOT the paper's features (do not train on them):
``rgb2d`` rows are 8x8 RGB thumbnails at 1 fps, zero-padded to 2048 and L2-normalised; ``rgb3d`` rows (1.5 per
second) repeat the nearest thumbnail; ``mel`` is a 40-band log power spectrogram (16 kHz mono, 25 ms window, 10 ms
hop, equal-width bands); ``w2v`` rows are the element-wise max of per-token vectors drawn from a token-seeded RNG.
It exists so that tests and ``mmcaps bench ingest`` can measure the engine with real decoding in milliseconds.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from model.fingerprint import FingerprintedConfig, runtime_field
from pipeline.extract.ffmpeg import ffmpeg_exe
from storage.sample import Captions, VideoFeatures

_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
FEATURE_DIM = 2048
N_MELS = 40
SAMPLE_RATE = 16000
HOP = 160  # 10 ms at 16 kHz
WINDOW = 400  # 25 ms at 16 kHz


class ProbeConfig(FingerprintedConfig):
    """Settings of :class:`ProbeExtractor`."""

    thumb: int = 8  # thumbnail side in pixels (rgb2d rows hold thumb*thumb*3 values)
    timeout_s: float = runtime_field(60.0)
    delay_s: float = runtime_field(0.0)  # sleep per video (tests slow extraction down to interrupt it)
    log_path: str | None = runtime_field(None)  # append "<video_id>\n" after each finished extraction


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

    def extract(self, video_path: str, captions: Captions | None, video_id: str) -> VideoFeatures:
        cfg = self.config
        path = str(Path(video_path).absolute())
        if cfg.delay_s:
            time.sleep(cfg.delay_s)
        duration, has_audio = self._probe(path)
        side = cfg.thumb
        decode = [self.exe, "-v", "error", "-nostdin", "-i", f"file:{path}"]
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
        caps = captions if captions is not None else Captions()
        w2v = np.zeros((len(caps), 300), np.float32)  # (n, 300)
        for i, text in enumerate(caps.text):
            tokens = re.findall(r"[a-z0-9']+", text.lower())
            if tokens:
                w2v[i] = np.max(np.stack([_token_vector(t) for t in tokens]), axis=0)
        meta: dict[str, Any] = {
            "video_id": video_id,
            "duration_s": duration,
            "fps": 1.0,
            "has_audio": bool(mel.shape[1] > 0),
            "weights": {"rgb2d": "probe-thumbnail", "rgb3d": "probe-thumbnail", "text": "probe-hash"},
            "extract_fingerprint": cfg.fingerprint(),
            "n_captions": len(caps),
            "n_captions_oov": 0,
        }
        feats = VideoFeatures(
            video_id=video_id,
            rgb2d=rgb2d.astype(np.float16),
            rgb3d=rgb3d.astype(np.float16),
            mel=mel.astype(np.float16),
            w2v=w2v.astype(np.float16),
            captions=caps,
            meta=meta,
        )
        if cfg.log_path:
            with open(cfg.log_path, "a", encoding="utf-8") as fh:
                fh.write(video_id + "\n")
        return feats
