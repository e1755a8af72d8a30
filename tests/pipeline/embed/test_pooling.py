"""The pooling recipe (pipeline/embed/pooling.py): pooled vectors against direct numpy on the arrays."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.embed.pooling import crop_audio, pool_text, pool_video
from storage.sample import VideoFeatures
from tests.pipeline.train.train_data_helpers import concept_tables, make_video


def _video(audio: bool = True) -> VideoFeatures:
    return make_video("v", [0, 1, 2, 3, 1], concept_tables(4), np.random.default_rng(3), seg=2.0, audio=audio)


@pytest.mark.parametrize(("start", "end"), [(0.0, 2.0), (2.0, 6.0), (3.3, 4.1), (7.9, 10.0), (9.5, 30.0)])
def test_pool_video_equals_direct_numpy(start, end):
    feats = _video()
    got = pool_video(feats, start, end)
    # Direct: rows whose interval [i/r, (i+1)/r) meets [start, end] are i = floor(start*r) .. floor(end*r).
    parts = []
    for rows, rate in ((feats.rgb2d, 1.0), (feats.rgb3d, 1.5)):
        idx = [i for i in range(rows.shape[0]) if i / rate <= end and (i + 1) / rate > start]
        m = rows[idx].astype(np.float64).max(axis=0)
        parts.append(m / np.linalg.norm(m))
    np.testing.assert_allclose(got, np.concatenate(parts), rtol=1e-6, atol=1e-7)
    assert got.shape == (4096,) and got.dtype == np.float32


def test_pool_text_and_audio_equal_direct_numpy():
    feats = _video()
    rows = feats.w2v[1:4]
    np.testing.assert_array_equal(pool_text(rows), np.maximum(np.maximum(rows[0], rows[1]), rows[2]).astype(np.float32))
    # crop: [2.0, 4.5] → columns 200..449 (250 frames) into 300 frames: zero padded
    mel, n = crop_audio(feats, 2.0, 4.5, 300)
    assert n == 250 and mel.shape == (40, 300)
    np.testing.assert_array_equal(mel[:, :250], feats.mel[:, 200:450].astype(np.float32))
    assert not mel[:, 250:].any()
    # crop longer than frames: the first `frames` columns of the span
    mel, n = crop_audio(feats, 1.0, 9.0, 300)
    assert n == 300
    np.testing.assert_array_equal(mel, feats.mel[:, 100:400].astype(np.float32))
    # no audio: zeros, length 0
    mel, n = crop_audio(_video(audio=False), 1.0, 9.0, 300)
    assert n == 0 and not mel.any()
