"""VGGish: log-mel patches and embeddings equal ``torchvggish``'s (its ``waveform_to_examples`` and its ``VGG`` with
the same state dict), hand-computed small cases, and the stream through the extractor."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.extract import ExtractConfig, Extractor
from pipeline.extract.vggish import VGGish, log_mel_examples, mel_matrix


def _wave(seconds: float) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    noise = np.random.default_rng(0).standard_normal(len(t))
    return 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t) + 0.02 * noise


def test_patch_counts_and_mel_bands_by_hand():
    # 96 frames need 400 + 95 * 160 = 15 600 samples; the next patch needs 96 more frames (15 360 samples)
    assert log_mel_examples(np.zeros(15599)).shape == (0, 96, 64)
    assert log_mel_examples(np.zeros(15600)).shape == (1, 96, 64)
    assert log_mel_examples(np.zeros(15600 + 15359)).shape == (1, 96, 64)
    assert log_mel_examples(np.zeros(15600 + 15360)).shape == (2, 96, 64)
    np.testing.assert_allclose(log_mel_examples(np.zeros(15600)), np.log(0.01), rtol=1e-6)  # silence: log(0 + 0.01)
    w = mel_matrix()
    assert w.shape == (257, 64) and (w[0] == 0).all() and (w >= 0).all()
    freqs = np.linspace(0, 8000, 257)
    assert freqs[w[:, 0] > 0].min() > 125 and freqs[w[:, -1] > 0].max() < 7500  # bands inside 125-7500 Hz
    assert (w.max(axis=0) > 0.5).all() and (w <= 1).all()  # every band gets bins; triangles peak at most 1
    # a 1 kHz tone puts its energy in the band whose centre is nearest 1 kHz on the HTK mel scale
    t = np.arange(16000) / 16000
    band = log_mel_examples(np.sin(2 * np.pi * 1000 * t))[0].mean(axis=0).argmax()
    edges = np.linspace(1127 * np.log(1 + 125 / 700), 1127 * np.log(1 + 7500 / 700), 66)
    assert band == np.abs(700 * (np.exp(edges[1:-1] / 1127) - 1) - 1000).argmin()


def test_equal_to_torchvggish():
    import torchvggish.torchvggish as tv  # a dev extra (with resampy): missing, this fails, never skips
    from torchvggish import vggish_input

    wave = _wave(2.5)
    ref = vggish_input.waveform_to_examples(wave, 16000, return_tensor=False)
    ours = log_mel_examples(wave)
    assert ours.shape == ref.shape == (2, 96, 64)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    torch.manual_seed(0)
    lib = tv._vgg(postprocess=False).eval()  # torchvggish's network, no download
    net = VGGish().eval()
    net.load_state_dict(lib.state_dict(), strict=True)  # the same layout: features.N / embeddings.N
    x = torch.from_numpy(ours)[:, None]
    with torch.no_grad():
        torch.testing.assert_close(net(x), lib(x), rtol=0, atol=1e-6)


def test_stream_through_the_extractor(videos, tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "vggish.pth"
    torch.save(VGGish().state_dict(), path)
    ex = Extractor(
        ExtractConfig(
            precision="fp32", max_seconds=2.0, streams={"vggish": {"weights": str(path), "backbone": "vggish"}}
        )
    )
    out = ex.extract_streams(videos["odd"], None, ["vggish"])["vggish"]
    assert out.array.shape == (2, 128) and out.meta["rows"] == 2  # 2 s of audio: 198 frames, two 96-frame patches
    assert out.meta["weights"].startswith("file:vggish.pth:sha256:") and len(out.meta["weights"]) == 64 + 23
    silent = ex.extract_streams(videos["tall"], None, ["vggish"])["vggish"]  # no audio stream: no rows
    assert silent.array.shape == (0, 128)
