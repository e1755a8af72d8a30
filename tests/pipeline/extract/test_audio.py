"""The log-mel recipe against a direct numpy/scipy implementation, and on decoded audio."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal.windows

from pipeline.extract.audio import log_mel, mel_filters
from pipeline.extract.ffmpeg import decode_audio


def naive_log_mel(y: np.ndarray, sr: int = 16000) -> np.ndarray:
    """DC removal, pre-emphasis, centred reflect-padded frames of 400 every 160, Hamming, |rfft|², mel, dB re max."""
    y = y.astype(np.float64) - y.mean()
    y = np.append(y[0], y[1:] - 0.97 * y[:-1])
    padded = np.pad(y, 200, mode="reflect")
    n_frames = 1 + len(y) // 160
    frames = np.stack([padded[t * 160 : t * 160 + 400] for t in range(n_frames)])
    power = np.abs(np.fft.rfft(frames * scipy.signal.windows.hamming(400), axis=1)) ** 2  # (t, f)
    mel = mel_filters(sr, 400, 40, 20.0) @ power.T  # (m, t)
    db = 10 * np.log10(np.maximum(mel, 1e-10)) - 10 * np.log10(mel.max())
    return np.maximum(db, db.max() - 80.0)


def _band_of(freq_hz: float) -> int:
    """Index of the mel filter with the largest response at ``freq_hz``."""
    bins = np.fft.rfftfreq(400, 1 / 16000)
    return int(np.argmax(mel_filters()[:, np.argmin(np.abs(bins - freq_hz))]))


@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0])
def test_tone_matches_direct_implementation_and_peaks_at_its_band(freq):
    t = np.arange(int(16000 * 1.37)) / 16000
    rng = np.random.default_rng(0)
    y = (0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size) + 0.2).astype(np.float32)
    ours = log_mel(y, chunk_frames=50)  # several chunks, so chunk boundaries are exercised
    ref = naive_log_mel(y)
    assert ours.shape == ref.shape == (40, 1 + len(y) // 160)
    np.testing.assert_allclose(ours, ref, atol=1e-3)
    assert ours.max() == pytest.approx(0.0)
    assert int(np.argmax(ours.mean(axis=1))) == _band_of(freq)


def test_empty_waveform_gives_no_frames():
    assert log_mel(np.zeros(0, np.float32)).shape == (40, 0)


def test_decoded_sine_is_16k_mono_and_peaks_at_tone(videos, tmp_path):
    raw = tmp_path / "a.f32"
    n = decode_audio(videos["odd"], raw)
    assert n == pytest.approx(16000 * 3.2, abs=2048)  # AAC priming/padding trims a few hundred samples
    wave = np.memmap(raw, dtype="<f4", mode="r", shape=(n,))
    mel = log_mel(wave)
    assert mel.shape == (40, 1 + n // 160)
    assert int(np.argmax(mel.mean(axis=1))) == _band_of(440.0)
