"""Log-mel spectrogram of the HowTo100M / AVLnet recipe, computed in chunks over a memory-mapped waveform.

Recipe (pipeline/extract/README.md): mono 16 kHz; subtract the mean (DC); pre-emphasis 0.97 (``y[0]`` kept); STFT with
n_fft = win = 400 (25 ms), hop 160 (10 ms), a symmetric Hamming window from ``scipy.signal.windows``, centred
frames with reflect padding (librosa's ``center=True`` with the padding the reference's librosa used); power
spectrum; 40 mel bands from 20 Hz to 8 kHz (librosa's Slaney mel filters); ``power_to_db(ref=max)`` (top 80 dB).
Output ``[40, 1 + n_samples // 160]`` float32 (100 frames per second).

Chunking gives exactly the frames of one whole-signal STFT: frame t covers samples
``[t * hop - n_fft / 2, t * hop + n_fft / 2)`` of the reflect-padded signal, and each chunk is built from those
indices, so memory stays bounded by the chunk plus the (small) mel output.
"""

from __future__ import annotations

import librosa
import numpy as np
import scipy.signal.windows

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 40
FMIN = 20.0
PREEMPHASIS = 0.97


def mel_filters(
    sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = FMIN
) -> np.ndarray:
    """Mel filter bank ``[n_mels, 1 + n_fft // 2]``."""
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin)


def _padded_indices(start: int, stop: int, n: int, pad: int) -> np.ndarray:
    """Indices into y of positions [start, stop) of ``np.pad(y, pad, mode='reflect')``."""
    idx = np.arange(start, stop, dtype=np.int64) - pad
    idx = np.abs(idx)  # reflect at the start: -k → k
    over = idx > n - 1
    idx[over] = 2 * (n - 1) - idx[over]  # reflect at the end
    return idx


def log_mel(
    wave: np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_mels: int = N_MELS,
    fmin: float = FMIN,
    chunk_frames: int = 6000,
) -> np.ndarray:
    """Log-mel spectrogram ``[n_mels, 1 + len(wave) // 160]`` float32 of a mono waveform (array or np.memmap).

    An empty waveform gives ``[n_mels, 0]``.
    """
    n = int(wave.shape[0])
    if n == 0:
        return np.zeros((n_mels, 0), dtype=np.float32)
    if n < N_FFT // 2 + 1:
        # Reflect padding needs more samples than half a window; zero-extend very short clips.
        wave = np.concatenate([np.asarray(wave, dtype=np.float64), np.zeros(N_FFT // 2 + 1 - n)])
        n_frames = 1 + n // HOP
        n = wave.shape[0]
    else:
        n_frames = 1 + n // HOP
    # Mean in chunks (float64) so that a memory-mapped waveform is never loaded whole.
    step = 1 << 20
    mean = sum(float(np.sum(wave[i : i + step], dtype=np.float64)) for i in range(0, n, step)) / n
    window = scipy.signal.windows.hamming(N_FFT)  # symmetric, as scipy.signal.hamming(400) was
    basis = mel_filters(sample_rate, N_FFT, n_mels, fmin)
    pad = N_FFT // 2
    out = np.empty((n_mels, n_frames), dtype=np.float32)
    for f0 in range(0, n_frames, chunk_frames):
        f1 = min(n_frames, f0 + chunk_frames)
        lo, hi = f0 * HOP, (f1 - 1) * HOP + N_FFT  # padded-signal span of frames f0..f1-1
        idx = _padded_indices(lo, hi, n, pad)
        y = np.asarray(wave[idx], dtype=np.float64) - mean
        prev = np.asarray(wave[np.maximum(idx - 1, 0)], dtype=np.float64) - mean
        # Pre-emphasis on the unpadded signal: z[i] = y[i] - 0.97 y[i-1], z[0] = y[0]; padding reflects z.
        z = np.where(idx == 0, y, y - PREEMPHASIS * prev)
        spec = librosa.stft(z, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, window=window, center=False)
        out[:, f0:f1] = (basis @ (np.abs(spec) ** 2)).astype(np.float32)
    return librosa.power_to_db(out, ref=np.max).astype(np.float32)
